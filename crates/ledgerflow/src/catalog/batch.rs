//! The batch layer: one partition per (table, day), committed by a marker
//! file written after every data file is in place. An uncommitted partition
//! is invisible: readers use the speed layer for that day instead.

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
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
            sorted_by: None,
            last_sorted: None,
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
    /// The index of the column the rows come in ascending order of.
    sorted_by: Option<usize>,
    /// Its value in the last row written.
    last_sorted: Option<i64>,
}

impl PartitionWriter {
    /// Declares that the rows come in ascending order of `column` (a time
    /// column: the caller sorted them, or generates them in time order).
    /// The files record it, so the query engine reads them as sorted; a row
    /// out of order fails the write, so no file claims an order it lacks.
    pub fn sorted_by(mut self, column: &str) -> Result<Self> {
        let index = self
            .schema
            .index_of(column)
            .map_err(|e| Error::data(self.files.describe(&self.prefix), e))?;
        self.sorted_by = Some(index);
        Ok(self)
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_order(batch)?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.current.is_none() {
                let path = self
                    .prefix
                    .clone()
                    .join(format!("part-{:05}.parquet", self.written.len()));
                let writer =
                    self.files
                        .parquet_writer(&path, self.schema.clone(), self.sorted_by)?;
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

    /// Fails on the first row of `batch` that breaks the declared order.
    fn check_order(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(index) = self.sorted_by else {
            return Ok(());
        };
        let column = self.schema.field(index).name();
        let describe = || self.files.describe(&self.prefix);
        let values =
            cast(batch.column(index), &DataType::Int64).map_err(|e| Error::data(describe(), e))?;
        match first_out_of_order(values.as_primitive(), &mut self.last_sorted) {
            None => Ok(()),
            Some(row) => Err(Error::data(
                describe(),
                format!(
                    "row {} of the partition is out of `{column}` order (null, or earlier than the row before); nothing was committed",
                    self.rows + row as u64
                ),
            )),
        }
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

/// The first of `values` that breaks ascending order after `last`, the
/// value before them (a null breaks it); `last` moves along the values in
/// order. The one order rule of the time-sorted writes and the speed-day
/// copy.
pub(in crate::catalog) fn first_out_of_order(
    values: &arrow::array::Int64Array,
    last: &mut Option<i64>,
) -> Option<usize> {
    for (row, value) in values.iter().enumerate() {
        match (value, *last) {
            (None, _) => return Some(row),
            (Some(value), Some(before)) if value < before => return Some(row),
            (value, _) => *last = value,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use parquet::file::metadata::SortingColumn;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    fn layer(dir: &std::path::Path) -> BatchLayer {
        BatchLayer {
            files: PartitionStore::local(dir).unwrap(),
            marker: "_SUCCESS".into(),
            rows_per_file: 3,
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "block_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("n", DataType::Int64, false),
        ]))
    }

    fn rows(times: &[Option<i64>]) -> RecordBatch {
        let n: Vec<i64> = (0..times.len() as i64).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC")),
                Arc::new(Int64Array::from(n)),
            ],
        )
        .unwrap()
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 10, 1).unwrap()
    }

    async fn sorted_writer(batch: &BatchLayer) -> PartitionWriter {
        batch
            .begin_partition("transactions", day(), schema())
            .await
            .unwrap()
            .sorted_by("block_timestamp")
            .unwrap()
    }

    /// The `sorting_columns` of each row group of a written file.
    fn claims(dir: &std::path::Path, meta: &ObjectMeta) -> Vec<Option<Vec<SortingColumn>>> {
        let path = dir.join(meta.location.as_ref());
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.sorting_columns().cloned())
            .collect()
    }

    #[tokio::test]
    async fn a_sorted_partition_records_its_order_in_every_row_group_of_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let batch = layer(dir.path());
        let mut writer = sorted_writer(&batch).await;
        // Equal times (transactions of one block) are in order.
        writer
            .write(&rows(&[Some(1), Some(2), Some(2), Some(5)]))
            .await
            .unwrap();
        writer.write(&rows(&[Some(5), Some(9)])).await.unwrap();
        assert_eq!(writer.commit().await.unwrap(), 6);
        let files = batch.list_day("transactions", day()).await.unwrap();
        assert_eq!(files.len(), 2, "3 rows per file");
        for meta in files {
            let groups = claims(dir.path(), &meta);
            assert!(!groups.is_empty());
            for sorting in groups {
                let sorting = sorting.expect("the order is recorded");
                assert_eq!(sorting.len(), 1);
                assert_eq!(sorting[0].column_idx, 0);
                assert!(!sorting[0].descending);
            }
        }

        // Without the claim, nothing is recorded.
        let mut writer = batch
            .begin_partition("blocks", day(), schema())
            .await
            .unwrap();
        writer.write(&rows(&[Some(3), Some(1)])).await.unwrap();
        writer.commit().await.unwrap();
        let meta = &batch.list_day("blocks", day()).await.unwrap()[0];
        assert_eq!(claims(dir.path(), meta), [None]);
    }

    #[tokio::test]
    async fn a_row_out_of_the_claimed_order_fails_the_write_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let batch = layer(dir.path());
        for (second, bad_row) in [(vec![Some(4), Some(3)], 4), (vec![Some(7), None], 4)] {
            let mut writer = sorted_writer(&batch).await;
            writer
                .write(&rows(&[Some(1), Some(2), Some(4)]))
                .await
                .unwrap();
            let err = writer.write(&rows(&second)).await.unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "row {bad_row} of the partition is out of `block_timestamp` order"
                )),
                "{err}"
            );
            assert!(err.contains("transactions"), "names the partition: {err}");
            drop(writer);
            assert!(!batch.is_committed("transactions", day()).await.unwrap());
        }
        let no_such = batch
            .begin_partition("transactions", day(), schema())
            .await
            .unwrap()
            .sorted_by("timestamp");
        assert!(no_such.is_err());
    }
}
