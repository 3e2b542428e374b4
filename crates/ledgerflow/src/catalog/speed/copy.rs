//! A landing day's micro-batches copied into local Parquet for one run:
//! each file read whole in one request (streamed if over 8 MiB) and
//! decoded here, its rows of
//! orphaned or not-yet-landed blocks dropped, the columns the models read
//! written uncompressed, a file per part of the day. DataFusion's scan of
//! the same 1,462 files (a head, a footer read and a ranged read per
//! column chunk, then a hash semi-join on 66-character hashes) took about
//! twice as long; a day's consecutive rows share a block, so the canonical
//! test here runs once per block, not per row.
//!
//! The copy also tells whether it came out in time order (the arrival
//! order of a day without late blocks): only then is the order declared to
//! the engine, which aggregates by minute over it as a stream, as over a
//! compacted day. A false claim would give wrong results, so it is never
//! assumed, only observed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast_with_options, filter_record_batch, CastOptions};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use futures::StreamExt;
use object_store::ObjectMeta;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::catalog::batch::first_out_of_order;
use crate::catalog::store::PartitionStore;
use crate::error::{Error, Result};

/// Files fetched ahead of the one being decoded, per part.
const FETCH_AHEAD: usize = 4;
/// A micro-batch up to this size is read whole in one request; a larger
/// one is streamed a row group at a time, so a landing writer of large
/// files cannot make the copy hold [`FETCH_AHEAD`] of them per part (it
/// then holds one row group's columns).
pub const READ_WHOLE_BELOW: u64 = 8 << 20;
/// Rows per row group of a copied file.
const ROW_GROUP_ROWS: usize = 32 * 1024;

/// One table of a landing day to copy.
pub struct TableCopy {
    /// The day's micro-batch files, in arrival order.
    pub files: Vec<ObjectMeta>,
    /// The columns to copy, with the types the engine reads.
    pub schema: SchemaRef,
    /// The column naming each row's block; a row is kept if its value is
    /// one of `canonical`.
    pub hash_column: &'static str,
    /// The table's time column (one of `schema`'s): checked for order.
    pub time_column: &'static str,
    pub canonical: Arc<HashSet<String>>,
    /// [`READ_WHOLE_BELOW`] but in tests.
    pub read_whole_below: u64,
}

impl TableCopy {
    /// The file columns a part reads: the copied ones and the block's.
    fn read_columns(&self) -> Vec<&str> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .chain([self.hash_column])
            .collect()
    }
}

/// What [`copy_table`] wrote.
#[derive(Debug)]
pub struct Copied {
    pub rows: u64,
    /// Every row in ascending order of the time column, none null, across
    /// the parts in their name order.
    pub time_ordered: bool,
}

/// Copies `table` into `dir` (created), as `parts` files named so their
/// name order is the day's arrival order; `parts` at once, each a
/// contiguous run of the files.
pub async fn copy_table(
    store: &PartitionStore,
    table: TableCopy,
    dir: &Path,
    parts: usize,
) -> Result<Copied> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let table = Arc::new(table);
    let mut running = tokio::task::JoinSet::new();
    for (n, range) in split_by_size(&table.files, parts.max(1))
        .into_iter()
        .enumerate()
    {
        let (store, table) = (store.clone(), table.clone());
        let path = dir.join(format!("part-{n:05}.parquet"));
        running.spawn(async move { (n, copy_part(&store, &table, range, &path).await) });
    }
    let mut done = Vec::new();
    while let Some(joined) = running.join_next().await {
        let part = joined
            .map_err(|e| Error::data(format!("copying into {}", dir.display()), e))
            .and_then(|(n, part)| Ok((n, part?)));
        match part {
            Ok(part) => done.push(part),
            Err(e) => {
                // The other parts stopped and gone before the caller
                // removes their directory.
                running.shutdown().await;
                return Err(e);
            }
        }
    }
    done.sort_by_key(|(n, _)| *n);
    let parts: Vec<Part> = done.into_iter().map(|(_, p)| p).collect();
    Ok(Copied {
        rows: parts.iter().map(|p| p.rows).sum(),
        time_ordered: in_time_order(&parts),
    })
}

/// Whether `parts`, in order, hold their rows in time order: each in
/// order, each starting at or after the one before ended (empty ones
/// skipped).
fn in_time_order(parts: &[Part]) -> bool {
    let mut last: Option<i64> = None;
    for part in parts.iter().filter(|p| p.rows > 0) {
        let (Some(first), Some(end), true) = (part.first, part.last, part.ordered) else {
            return false;
        };
        if last.is_some_and(|l| l > first) {
            return false;
        }
        last = Some(end);
    }
    true
}

/// One part's outcome.
struct Part {
    rows: u64,
    /// Every time seen so far at or after the one before, none null.
    ordered: bool,
    /// First and last time of the part (while it is in order).
    first: Option<i64>,
    last: Option<i64>,
}

/// Contiguous ranges of `files` of about equal bytes, at most `parts`.
fn split_by_size(files: &[ObjectMeta], parts: usize) -> Vec<std::ops::Range<usize>> {
    let total: u64 = files.iter().map(|f| f.size).sum();
    let share = total.div_ceil(parts as u64).max(1);
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, f) in files.iter().enumerate() {
        bytes += f.size;
        if bytes >= share && ranges.len() + 1 < parts {
            ranges.push(start..i + 1);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < files.len() {
        ranges.push(start..files.len());
    }
    ranges
}

async fn copy_part(
    store: &PartitionStore,
    table: &TableCopy,
    range: std::ops::Range<usize>,
    path: &Path,
) -> Result<Part> {
    let io = |e| Error::io(path, e);
    let written = |e: parquet::errors::ParquetError| Error::data(path.display().to_string(), e);
    let file = std::fs::File::create(path).map_err(io)?;
    // Read two or three times within the run, then deleted: no
    // compression, dictionaries or statistics to pay for.
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::io::BufWriter::new(file),
        table.schema.clone(),
        Some(props),
    )
    .map_err(written)?;
    let mut part = Part::default();
    let files = &table.files[range];
    let fetches: Vec<_> = files
        .iter()
        .map(|meta| fetch(store, meta, table.read_whole_below))
        .collect();
    let mut fetched = futures::stream::iter(fetches).buffered(FETCH_AHEAD);
    let mut metas = files.iter();
    while let Some(whole) = fetched.next().await {
        let meta = metas.next().expect("one fetch per file");
        let mut file_row = 0u64;
        let mut put = |batch: RecordBatch| -> Result<()> {
            let first_row = file_row;
            file_row += batch.num_rows() as u64;
            let batch = keep_canonical(&batch, table, first_row)
                .and_then(|b| conform(&b, &table.schema))
                .map_err(|e| Error::data(store.describe(&meta.location), e))?;
            if batch.num_rows() > 0 {
                part.observe(batch.column_by_name(table.time_column).expect("copied"));
                part.rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(written)?;
            }
            Ok(())
        };
        match whole? {
            Some(bytes) => {
                for batch in decode(store, meta, bytes, table)? {
                    put(batch.map_err(|e| store.parquet_error(meta, e.into()))?)?;
                }
            }
            None => {
                let mut stream = store
                    .read_columns_stream(meta, &table.read_columns())
                    .await?;
                while let Some(batch) = stream.next().await {
                    put(batch.map_err(|e| store.parquet_error(meta, e))?)?;
                }
            }
        }
    }
    writer.close().map_err(written)?;
    Ok(part)
}

/// The whole file if it is small enough to read in one request.
async fn fetch(
    store: &PartitionStore,
    meta: &ObjectMeta,
    whole_below: u64,
) -> Result<Option<bytes::Bytes>> {
    if meta.size > whole_below {
        return Ok(None);
    }
    // Gone since the listing (landing retention, say): a store error, as
    // a streamed read of it would be, which a retry lists afresh.
    let bytes = store
        .get(&meta.location)
        .await?
        .ok_or_else(|| Error::ObjectStore {
            location: store.describe(&meta.location),
            cause: object_store::Error::NotFound {
                path: meta.location.to_string(),
                source: "listed for the day, then gone before it was read".into(),
            },
        })?;
    Ok(Some(bytes))
}

/// The file's batches, one at a time: the columns to copy and the block
/// column.
fn decode(
    store: &PartitionStore,
    meta: &ObjectMeta,
    bytes: bytes::Bytes,
    table: &TableCopy,
) -> Result<ParquetRecordBatchReader> {
    let failed = |e| store.parquet_error(meta, e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(failed)?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), table.read_columns());
    builder.with_projection(mask).build().map_err(failed)
}

/// `batch` without the rows whose block is not canonical. A row without
/// a block is bad input (the engine refuses a null in the non-null
/// column), named by its row in the file: `first_row` is the batch's.
fn keep_canonical(
    batch: &RecordBatch,
    table: &TableCopy,
    first_row: u64,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let column = batch.column_by_name(table.hash_column).ok_or_else(|| {
        arrow::error::ArrowError::SchemaError(format!("no column {}", table.hash_column))
    })?;
    let column = cast_strictly(column, &DataType::Utf8)?;
    let hashes = column.as_string::<i32>();
    let mut keep = Vec::with_capacity(hashes.len());
    let mut last: Option<(&str, bool)> = None;
    for (i, hash) in hashes.iter().enumerate() {
        keep.push(match (hash, last) {
            (None, _) => {
                return Err(arrow::error::ArrowError::InvalidArgumentError(format!(
                    "row {}: column {} is null (every row names its block)",
                    first_row + i as u64 + 1,
                    table.hash_column
                )))
            }
            (Some(h), Some((seen, kept))) if seen == h => kept,
            (Some(h), _) => {
                let kept = table.canonical.contains(h);
                last = Some((h, kept));
                kept
            }
        });
    }
    if keep.iter().all(|&k| k) {
        return Ok(batch.clone());
    }
    filter_record_batch(batch, &BooleanArray::from(keep))
}

/// `batch`'s columns of `schema`, in its order and cast to its types (a
/// file may hold a narrower type the engine would cast on read).
fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let column = batch.column_by_name(field.name()).ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!("no column {}", field.name()))
            })?;
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                cast_strictly(column, field.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// A cast that fails on a value the type cannot hold, as the engine's
/// does, instead of making it null.
fn cast_strictly(
    column: &dyn Array,
    to: &DataType,
) -> std::result::Result<arrow::array::ArrayRef, arrow::error::ArrowError> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(column, to, &options)
}

impl Default for Part {
    fn default() -> Self {
        Self {
            rows: 0,
            ordered: true,
            first: None,
            last: None,
        }
    }
}

impl Part {
    /// Follows the time column: still in order (none null, none earlier
    /// than the one before) and where the part starts and ends.
    fn observe(&mut self, times: &dyn Array) {
        if !self.ordered {
            return;
        }
        let Ok(values) = cast_strictly(times, &DataType::Int64) else {
            self.ordered = false;
            return;
        };
        let values = values.as_primitive::<Int64Type>();
        if self.first.is_none() {
            self.first = values.iter().next().flatten();
        }
        if first_out_of_order(values, &mut self.last).is_some() {
            self.ordered = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimestampMicrosecondType;

    fn meta(size: u64) -> ObjectMeta {
        ObjectMeta {
            location: object_store::path::Path::from("f"),
            last_modified: chrono::Utc::now(),
            size,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn parts_are_contiguous_runs_of_about_equal_bytes() {
        let files: Vec<_> = [10, 10, 10, 10, 30, 10, 10, 10]
            .into_iter()
            .map(meta)
            .collect();
        assert_eq!(split_by_size(&files, 2), vec![0..5, 5..8]);
        assert_eq!(split_by_size(&files, 1), vec![0..8]);
        assert_eq!(split_by_size(&files[..1], 4), vec![0..1]);
        assert!(split_by_size(&[], 2).is_empty());
        let ranges = split_by_size(&files, 3);
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, 8);
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn time_order_is_observed_across_batches() {
        use arrow::array::TimestampMicrosecondArray;
        let mut order = Part::default();
        order.observe(&TimestampMicrosecondArray::from(vec![1, 2, 2]));
        order.observe(&TimestampMicrosecondArray::from(vec![3, 5]));
        assert!(order.ordered);
        assert_eq!((order.first, order.last), (Some(1), Some(5)));
        order.observe(&TimestampMicrosecondArray::from(vec![4]));
        assert!(!order.ordered, "4 after 5");
        let mut nulls = Part::default();
        nulls.observe(&TimestampMicrosecondArray::from(vec![Some(1), None]));
        assert!(!nulls.ordered);
    }

    /// Micro-batch files of transactions as a file may hold them: a
    /// nullable block hash column, a narrower integer type, orphans; file 3
    /// has a row without its block.
    async fn landed(store: &PartitionStore, order: &[usize]) -> Vec<ObjectMeta> {
        use arrow::array::{Int32Array, StringArray, TimestampMicrosecondArray};
        use arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("block_hash", DataType::Utf8, true),
            Field::new(
                "block_timestamp",
                crate::catalog::schema::timestamp_type(),
                false,
            ),
            Field::new("gas_price", DataType::Int32, false),
            Field::new("hash", DataType::Utf8, false),
        ]));
        // (block, time, gas) per file, in time order file after file.
        let files: [&[(Option<&str>, i64, i32)]; 4] = [
            &[
                (Some("c1"), 10, 1),
                (Some("o1"), 11, 2),
                (Some("c1"), 12, 3),
            ],
            &[
                (Some("o1"), 20, 4),
                (Some("c2"), 21, 5),
                (Some("c2"), 22, 6),
            ],
            &[
                (Some("o2"), 30, 7),
                (Some("o2"), 31, 8),
                (Some("c3"), 32, 9),
            ],
            &[(Some("c3"), 33, 10), (None, 34, 11)],
        ];
        for (seq, &n) in order.iter().enumerate() {
            let rows = files[n];
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                    )),
                    Arc::new(
                        TimestampMicrosecondArray::from(
                            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                    Arc::new(Int32Array::from(
                        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                    )),
                    Arc::new(StringArray::from(
                        rows.iter().map(|r| format!("t{}", r.2)).collect::<Vec<_>>(),
                    )),
                ],
            )
            .unwrap();
            let path = object_store::path::Path::from(format!("transactions/{seq:03}.parquet"));
            assert!(store
                .create_parquet(&path, schema.clone(), [batch])
                .await
                .unwrap());
        }
        store
            .list_files(&object_store::path::Path::from("transactions"))
            .await
            .unwrap()
    }

    /// A copy of the transactions' time and gas price, keeping the rows of
    /// the `canonical` blocks.
    fn gas_copy(files: Vec<ObjectMeta>, canonical: &[&str], read_whole_below: u64) -> TableCopy {
        let schema = crate::catalog::schema::Entity::Transactions.schema();
        TableCopy {
            files,
            schema: Arc::new(schema.project(&[3, 9]).unwrap()),
            hash_column: "block_hash",
            time_column: "block_timestamp",
            canonical: Arc::new(canonical.iter().map(|h| h.to_string()).collect()),
            read_whole_below,
        }
    }

    /// The copy's rows, part after part: (time, gas price).
    fn read_back(dir: &Path) -> Vec<(i64, i64)> {
        let mut parts: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        parts.sort();
        let mut rows = Vec::new();
        for part in parts {
            let file = std::fs::File::open(part).unwrap();
            for batch in ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
            {
                let batch = batch.unwrap();
                assert_eq!(batch.num_columns(), 2, "only the columns asked for");
                let times = batch.column(0).as_primitive::<TimestampMicrosecondType>();
                let gas = batch
                    .column(1)
                    .as_primitive::<arrow::datatypes::Int64Type>();
                rows.extend(
                    times
                        .values()
                        .iter()
                        .copied()
                        .zip(gas.values().iter().copied()),
                );
            }
        }
        rows
    }

    #[tokio::test]
    async fn a_copy_keeps_canonical_rows_cast_and_says_whether_they_are_in_time_order() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PartitionStore::local(&tmp.path().join("landing")).unwrap();
        // Whole files, and streamed as if they were large.
        let copy = |files, read_whole_below| gas_copy(files, &["c1", "c2", "c3"], read_whole_below);
        let files = landed(&store, &[0, 1, 2]).await;
        for (parts, whole) in [(1, READ_WHOLE_BELOW), (2, READ_WHOLE_BELOW), (3, 0), (2, 0)] {
            let dir = tmp.path().join(format!("in-order-{parts}-{whole}"));
            let done = copy_table(&store, copy(files.clone(), whole), &dir, parts)
                .await
                .unwrap();
            assert_eq!(done.rows, 5);
            assert!(done.time_ordered, "{parts} parts");
            assert_eq!(
                read_back(&dir),
                vec![(10, 1), (12, 3), (21, 5), (22, 6), (32, 9)],
                "no orphan; gas price read as Int64"
            );
        }

        // The last micro-batch arrived first: the same rows, not in order.
        let late = PartitionStore::local(&tmp.path().join("late")).unwrap();
        let files = landed(&late, &[2, 0, 1]).await;
        for (parts, whole) in [(1, READ_WHOLE_BELOW), (2, 0)] {
            let dir = tmp.path().join(format!("late-{parts}-{whole}"));
            let done = copy_table(&late, copy(files.clone(), whole), &dir, parts)
                .await
                .unwrap();
            assert_eq!(done.rows, 5);
            assert!(!done.time_ordered, "{parts} parts");
            assert_eq!(
                read_back(&dir),
                vec![(32, 9), (10, 1), (12, 3), (21, 5), (22, 6)]
            );
        }
    }

    #[test]
    fn parts_are_in_time_order_only_end_to_start() {
        let part = |rows, ordered, span: Option<(i64, i64)>| Part {
            rows,
            ordered,
            first: span.map(|(first, _)| first),
            last: span.map(|(_, last)| last),
        };
        assert!(in_time_order(&[
            part(2, true, Some((1, 5))),
            part(0, true, None),
            part(3, true, Some((5, 9)))
        ]));
        assert!(!in_time_order(&[
            part(2, true, Some((6, 8))),
            part(0, true, None),
            part(3, true, Some((5, 9)))
        ]));
        assert!(!in_time_order(&[part(2, false, Some((1, 5)))]));
        assert!(in_time_order(&[]));
    }

    #[tokio::test]
    async fn a_row_without_its_block_is_named_by_file_row_and_column() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PartitionStore::local(&tmp.path().join("landing")).unwrap();
        let files = landed(&store, &[0, 3]).await;
        for whole in [READ_WHOLE_BELOW, 0] {
            let table = gas_copy(files.clone(), &["c3"], whole);
            let dir = tmp.path().join(format!("copy-{whole}"));
            let err = copy_table(&store, table, &dir, 2)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("001.parquet"), "{err}");
            assert!(err.contains("row 2: column block_hash is null"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_corrupt_micro_batch_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let store = PartitionStore::local(&tmp.path().join("landing")).unwrap();
        let mut files = landed(&store, &[0, 1]).await;
        let bad = object_store::path::Path::from("transactions/009.parquet");
        store.put(&bad, b"not parquet".to_vec()).await.unwrap();
        files.push(store.head(&bad).await.unwrap().unwrap());
        let table = gas_copy(files, &[], READ_WHOLE_BELOW);
        let err = copy_table(&store, table, &tmp.path().join("copy"), 2)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("009.parquet"), "{err}");
    }
}
