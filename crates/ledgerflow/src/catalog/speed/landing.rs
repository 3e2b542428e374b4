//! The embedded speed layer: a landing directory of micro-batch Parquet
//! files, `<root>/<table>/date=YYYY-MM-DD/<seq>.parquet`, named so that
//! name order is arrival order.

use arrow::array::RecordBatch;
use chrono::NaiveDate;
use object_store::path::Path;
use object_store::ObjectMeta;

use crate::catalog::reorg::Header;
use crate::catalog::schema::Entity;
use crate::catalog::store::PartitionStore;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::location::Location;

#[derive(Debug, Clone)]
pub struct LandingLayer {
    pub files: PartitionStore,
}

impl LandingLayer {
    pub fn open(config: &Config, location: Location) -> Result<Self> {
        Ok(Self {
            files: PartitionStore::open(&location, &config.batch.s3)?,
        })
    }

    pub async fn list_day(&self, table: &str, day: NaiveDate) -> Result<Vec<ObjectMeta>> {
        self.files.list_day(table, day).await
    }

    /// A micro-batch file's name: its arrival number, zero-padded so that
    /// names sort by arrival.
    fn file_name(seq: u64) -> String {
        format!("{seq:012}.parquet")
    }

    /// The arrival number after the newest of `files` (0 for none): what
    /// the next [`append`](Self::append) takes.
    pub fn next_seq(files: &[ObjectMeta]) -> u64 {
        files
            .iter()
            .filter_map(|f| {
                f.location
                    .filename()?
                    .strip_suffix(".parquet")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .map_or(0, |s| s + 1)
    }

    /// Appends one micro-batch file; `seq` orders arrivals within the day.
    pub async fn append(
        &self,
        entity: Entity,
        day: NaiveDate,
        seq: u64,
        batch: RecordBatch,
    ) -> Result<()> {
        let path = PartitionStore::day_prefix(entity.name(), day).join(Self::file_name(seq));
        if self
            .files
            .create_parquet(&path, entity.schema(), [batch])
            .await?
        {
            Ok(())
        } else {
            Err(Error::data(
                self.files.describe(&path),
                "already exists: another writer appended this sequence number; a landing file is written once",
            ))
        }
    }

    /// Block identities of a day in arrival order, for the reorg rule.
    pub async fn headers(&self, files: &[ObjectMeta]) -> Result<Vec<Header>> {
        super::read_headers(&self.files, files).await
    }

    pub fn describe_day(&self, table: &str, day: NaiveDate) -> String {
        self.files.describe_day(table, day)
    }

    pub fn day_path(table: &str, day: NaiveDate) -> Path {
        PartitionStore::day_prefix(table, day)
    }
}
