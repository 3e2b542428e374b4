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
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct LandingLayer {
    pub files: PartitionStore,
}

impl LandingLayer {
    pub fn open(config: &Config) -> Result<Self> {
        Ok(Self {
            files: PartitionStore::local(&config.speed_root()?)?,
        })
    }

    pub async fn list_day(&self, table: &str, day: NaiveDate) -> Result<Vec<ObjectMeta>> {
        self.files.list_day(table, day).await
    }

    /// Appends one micro-batch file; `seq` orders arrivals within the day.
    pub async fn append(
        &self,
        entity: Entity,
        day: NaiveDate,
        seq: u64,
        batch: RecordBatch,
    ) -> Result<()> {
        let prefix = PartitionStore::day_prefix(entity.name(), day);
        let tmp = prefix.clone().join(format!(".tmp-{seq:012}.parquet"));
        self.files
            .write_parquet(&tmp, entity.schema(), [batch])
            .await?;
        self.files
            .rename(&tmp, &prefix.clone().join(format!("{seq:012}.parquet")))
            .await
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
