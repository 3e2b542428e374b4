//! The batch layer: one partition per (table, day), committed by a marker
//! file written after every data file is in place. An uncommitted partition
//! is invisible: readers use the speed layer for that day instead.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::ObjectMeta;
use parquet::arrow::AsyncArrowWriter;

use super::schema::Entity;
use super::store::PartitionStore;
use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct BatchLayer {
    pub files: PartitionStore,
    pub marker: String,
    pub rows_per_file: usize,
}

impl BatchLayer {
    pub fn open(config: &Config) -> Result<Self> {
        Ok(Self {
            files: PartitionStore::open(&config.batch_location()?, &config.batch.s3)?,
            marker: config.batch.marker.clone(),
            rows_per_file: config.batch.rows_per_file,
        })
    }

    fn marker_path(&self, table: &str, day: NaiveDate) -> Path {
        PartitionStore::day_prefix(table, day)
            .clone()
            .join(self.marker.as_str())
    }

    pub async fn is_committed(&self, table: &str, day: NaiveDate) -> Result<bool> {
        self.files.exists(&self.marker_path(table, day)).await
    }

    /// A day is committed when every ledger table's partition is: a day is
    /// read from one layer as a whole, never half from each.
    pub async fn day_committed(&self, day: NaiveDate) -> Result<bool> {
        Ok(self.markers(day).await?.is_some())
    }

    /// The day's markers (one per ledger table), or `None` if any is
    /// missing. Their sizes, times and etags identify one committed
    /// version (S3 times have whole seconds only).
    pub async fn markers(&self, day: NaiveDate) -> Result<Option<Vec<MarkerId>>> {
        let mut out = Vec::new();
        for entity in Entity::ALL {
            match self
                .files
                .head(&self.marker_path(entity.name(), day))
                .await?
            {
                Some(m) => out.push((m.size, m.last_modified.timestamp_micros(), m.e_tag)),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Removes a partition's marker: readers stop seeing it until
    /// [`mark_committed`](Self::mark_committed). For writers that change a
    /// committed partition in several steps (ingest's merge).
    pub async fn uncommit(&self, table: &str, day: NaiveDate) -> Result<()> {
        self.files.delete(&self.marker_path(table, day)).await
    }

    /// Writes the marker; the last step of every partition write.
    pub async fn mark_committed(&self, table: &str, day: NaiveDate) -> Result<()> {
        self.files
            .put(&self.marker_path(table, day), Vec::new())
            .await
    }

    pub async fn list_day(&self, table: &str, day: NaiveDate) -> Result<Vec<ObjectMeta>> {
        self.files.list_day(table, day).await
    }

    /// Checks a committed partition holds exactly the data files its
    /// marker lists (markers written by [`PartitionWriter::commit`]; an
    /// empty marker, as other writers leave, lists nothing to check): a
    /// file lost or added after the commit would change the day's numbers
    /// silently.
    pub async fn check_files(
        &self,
        table: &str,
        day: NaiveDate,
        files: &[ObjectMeta],
    ) -> Result<()> {
        let path = self.marker_path(table, day);
        let Some(bytes) = self.files.get(&path).await? else {
            return Ok(());
        };
        if bytes.is_empty() {
            return Ok(());
        }
        let marker: MarkerFiles = serde_json::from_slice(&bytes)
            .map_err(|e| Error::data(self.files.describe(&path), e))?;
        let mut have: Vec<String> = files
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_owned))
            .collect();
        have.sort();
        let mut want = marker.files;
        want.sort();
        if have != want {
            let missing: Vec<&String> = want.iter().filter(|f| !have.contains(f)).collect();
            let extra: Vec<&String> = have.iter().filter(|f| !want.contains(f)).collect();
            return Err(Error::data(
                self.files.describe_day(table, day),
                format!(
                    "the committed partition does not hold the files its marker lists (missing: {missing:?}, not listed: {extra:?}); rewrite the day (compact or generate) rather than read it"
                ),
            ));
        }
        Ok(())
    }

    /// Starts (re)writing a partition: the marker goes first, so readers
    /// fall back to the speed layer until [`PartitionWriter::commit`], then
    /// the old data files, so the new ones can take their names (S3 has no
    /// rename: each file is uploaded once under its final name, and a file
    /// is visible only once its upload completed).
    pub async fn begin_partition(
        &self,
        table: &str,
        day: NaiveDate,
        schema: SchemaRef,
    ) -> Result<PartitionWriter> {
        self.files.delete(&self.marker_path(table, day)).await?;
        let prefix = PartitionStore::day_prefix(table, day);
        for old in self.files.list_day_prefix(&prefix).await? {
            self.files.delete(&old.location).await?;
        }
        Ok(PartitionWriter {
            files: self.files.clone(),
            prefix: PartitionStore::day_prefix(table, day),
            marker: self.marker_path(table, day),
            schema,
            rows_per_file: self.rows_per_file,
            current: None,
            rows_in_current: 0,
            written: Vec::new(),
            rows: 0,
        })
    }
}

/// One marker's size, modification time (µs) and etag.
pub type MarkerId = (u64, i64, Option<String>);

/// What a marker written by [`PartitionWriter`] says of its partition.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct MarkerFiles {
    files: Vec<String>,
    rows: u64,
    /// Unique per commit, so a rewrite of the same rows within the same
    /// second still gives the marker another etag.
    #[serde(default)]
    commit: String,
}

/// Writes a partition's files, then commits them with the marker.
pub struct PartitionWriter {
    files: PartitionStore,
    prefix: Path,
    marker: Path,
    schema: SchemaRef,
    rows_per_file: usize,
    current: Option<(Path, AsyncArrowWriter<BufWriter>)>,
    rows_in_current: usize,
    written: Vec<Path>,
    rows: u64,
}

impl PartitionWriter {
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.current.is_none() {
                let path = self
                    .prefix
                    .clone()
                    .join(format!("part-{:05}.parquet", self.written.len()));
                let writer = self.files.parquet_writer(&path, self.schema.clone())?;
                self.current = Some((path, writer));
                self.rows_in_current = 0;
            }
            let take = (self.rows_per_file - self.rows_in_current).min(batch.num_rows() - offset);
            let (path, writer) = self.current.as_mut().expect("opened above");
            writer
                .write(&batch.slice(offset, take))
                .await
                .map_err(|e| Error::data(self.files.describe(path), e))?;
            offset += take;
            self.rows_in_current += take;
            self.rows += take as u64;
            if self.rows_in_current >= self.rows_per_file {
                self.finish_file().await?;
            }
        }
        Ok(())
    }

    async fn finish_file(&mut self) -> Result<()> {
        if let Some((path, writer)) = self.current.take() {
            writer
                .close()
                .await
                .map_err(|e| Error::data(self.files.describe(&path), e))?;
            self.written.push(path);
            // Crash tests: a kill between two uploads of one partition.
            crate::failpoint::hit("after_part", self.prefix.as_ref()).await;
        }
        Ok(())
    }

    /// Removes any data file this writer did not write (left by a writer
    /// that died), then writes the marker listing the partition's files.
    /// Returns the rows written.
    pub async fn commit(mut self) -> Result<u64> {
        self.finish_file().await?;
        for meta in self.files.list_day_prefix(&self.prefix).await? {
            if !self.written.contains(&meta.location) {
                self.files.delete(&meta.location).await?;
            }
        }
        crate::failpoint::hit("before_marker", self.prefix.as_ref()).await;
        let listed = MarkerFiles {
            files: self
                .written
                .iter()
                .filter_map(|p| p.filename().map(str::to_owned))
                .collect(),
            rows: self.rows,
            commit: format!(
                "{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ),
        };
        let marker = serde_json::to_vec(&listed).expect("markers serialize");
        self.files.put(&self.marker, marker).await?;
        Ok(self.rows)
    }
}
