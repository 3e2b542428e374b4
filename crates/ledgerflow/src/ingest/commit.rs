//! Committing a (table, day) partition after a merge, and rolling an
//! archive back after a crash. The marker is removed first and written
//! last, so readers see the partition before or after, never between:
//! 1. remove the marker;
//! 2. delete the files of the archives being (re)loaded (`part-<key>-*`),
//!    and stale temporaries of dead ingests;
//! 3. rename the new temporary parts to `part-<key>-<batch>-<n>.parquet`;
//! 4. rewrite older parts whose schema is behind the registry (a column was
//!    added or widened since), so a partition has one schema;
//! 5. write the marker.

use std::path::PathBuf;

use arrow::array::{new_null_array, ArrayRef};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::path::Path;
use parquet::basic::Compression;

use super::merge::{final_name, part_prefix, TMP_PREFIX};
use super::quarantine;
use crate::catalog::batch::BatchLayer;
use crate::catalog::store::PartitionStore;
use crate::error::{Error, Result};

/// One partition's share of a run.
#[derive(Debug, Clone)]
pub struct PartitionCommit {
    pub table: String,
    pub day: NaiveDate,
    /// Archives whose earlier files in this partition are replaced.
    pub akeys: Vec<String>,
    /// Temporary Parquet files to commit.
    pub parts: Vec<Path>,
    /// Temporary quarantine files to commit.
    pub quarantine: Vec<PathBuf>,
    /// The registry's schema for the table.
    pub target: SchemaRef,
    /// `ingest.compression`, for parts rewritten to `target`.
    pub compression: Compression,
}

/// Deletes `.ingest-tmp-*` objects of other processes under a partition
/// (data or quarantine): only one ingest runs at a time (the lock), so
/// they are a dead run's.
async fn sweep_stale(store: &PartitionStore, prefix: &Path) -> Result<()> {
    let mine = format!("{TMP_PREFIX}{}-", std::process::id());
    for meta in store.list_all(prefix).await? {
        let name = meta.location.filename().unwrap_or_default();
        if name.starts_with(TMP_PREFIX) && !name.starts_with(&mine) {
            store.delete(&meta.location).await?;
        }
    }
    Ok(())
}

/// Deletes the files of archive `akey` in a partition and its quarantine.
async fn delete_archive_files(
    batch: &BatchLayer,
    table: &str,
    day: NaiveDate,
    akey: &str,
) -> Result<()> {
    let store = &batch.files;
    let prefix = part_prefix(akey);
    for meta in store.list_day(table, day).await? {
        if meta
            .location
            .filename()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            store.delete(&meta.location).await?;
        }
    }
    let bad = format!("bad-{akey}-");
    for meta in store.list_all(&quarantine::prefix(table, day)).await? {
        if meta
            .location
            .filename()
            .is_some_and(|n| n.starts_with(&bad))
        {
            store.delete(&meta.location).await?;
        }
    }
    Ok(())
}

/// Moves a staged quarantine file to its committed name: a rename on
/// local disk, an upload elsewhere.
async fn commit_quarantine(
    store: &PartitionStore,
    tmp: &std::path::Path,
    table: &str,
    day: NaiveDate,
) -> Result<()> {
    let name = tmp
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(TMP_PREFIX))
        .and_then(|r| r.split_once('-'))
        .map(|(_pid, rest)| format!("bad-{rest}"))
        .expect("a temporary quarantine name");
    let target = quarantine::prefix(table, day).join(name.as_str());
    match store.local_root() {
        Some(root) => {
            let path = root.join(target.as_ref());
            std::fs::rename(tmp, &path).map_err(|e| Error::io(tmp, e))
        }
        None => {
            let bytes = std::fs::read(tmp).map_err(|e| Error::io(tmp, e))?;
            store.put(&target, bytes).await?;
            std::fs::remove_file(tmp).map_err(|e| Error::io(tmp, e))
        }
    }
}

pub async fn commit_partition(batch: &BatchLayer, c: &PartitionCommit) -> Result<()> {
    let store = &batch.files;
    batch.uncommit(&c.table, c.day).await?;
    sweep_stale(store, &PartitionStore::day_prefix(&c.table, c.day)).await?;
    sweep_stale(store, &quarantine::prefix(&c.table, c.day)).await?;
    for akey in &c.akeys {
        delete_archive_files(batch, &c.table, c.day, akey).await?;
    }
    for tmp in &c.parts {
        store.rename(tmp, &final_name(tmp)).await?;
    }
    for tmp in &c.quarantine {
        commit_quarantine(store, tmp, &c.table, c.day).await?;
    }
    conform(store, c).await?;
    crate::failpoint::hit("ingest_before_marker", &c.table).await;
    batch.mark_committed(&c.table, c.day).await
}
fn same_columns(a: &arrow::datatypes::Schema, b: &arrow::datatypes::Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// Rewrites the partition's parts whose columns differ from `target`:
/// widened columns are cast, added ones filled with nulls. Each rewrite
/// goes to a temporary file renamed over the old one.
async fn conform(store: &PartitionStore, c: &PartitionCommit) -> Result<()> {
    let (table, day, target) = (c.table.as_str(), c.day, &c.target);
    for meta in store.list_day(table, day).await? {
        let schema = store.file_schema(&meta).await?;
        if same_columns(&schema, target) {
            continue;
        }
        let name = meta.location.filename().expect("a file").to_string();
        let tmp = PartitionStore::day_prefix(table, day)
            .join(format!("{TMP_PREFIX}{}-conform-{name}", std::process::id()));
        // Rare (days with drift): dictionaries stay on, as the rewrite has
        // no sample; a column that overflows one falls back to plain.
        let mut writer = store.parquet_writer_with(&tmp, target.clone(), c.compression, &[])?;
        let mut stream = store.read_stream(&meta).await?;
        let describe = store.describe(&meta.location);
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| Error::data(&describe, e))?
        {
            let columns: Vec<ArrayRef> = target
                .fields()
                .iter()
                .map(|f| match batch.column_by_name(f.name()) {
                    Some(col) => arrow::compute::cast(col, f.data_type())
                        .map_err(|e| Error::data(format!("{describe}: column {}", f.name()), e)),
                    None => Ok(new_null_array(f.data_type(), batch.num_rows())),
                })
                .collect::<Result<_>>()?;
            let out = RecordBatch::try_new(target.clone(), columns)
                .map_err(|e| Error::data(&describe, e))?;
            writer
                .write(&out)
                .await
                .map_err(|e| Error::data(store.describe(&tmp), e))?;
        }
        writer
            .close()
            .await
            .map_err(|e| Error::data(store.describe(&tmp), e))?;
        store.rename(&tmp, &meta.location).await?;
    }
    Ok(())
}

/// Undoes an archive whose commit a dead process left half done: its files
/// go, and each partition is committed again if anything remains in it.
pub async fn roll_back(
    batch: &BatchLayer,
    akey: &str,
    partitions: &[(String, NaiveDate)],
) -> Result<()> {
    for (table, day) in partitions {
        batch.uncommit(table, *day).await?;
        sweep_stale(&batch.files, &PartitionStore::day_prefix(table, *day)).await?;
        delete_archive_files(batch, table, *day, akey).await?;
        if !batch.list_day(table, *day).await?.is_empty() {
            batch.mark_committed(table, *day).await?;
        }
    }
    Ok(())
}

/// Rows in the committed files of archive `akey` in a partition, from the
/// Parquet footers: the post-merge check compares it with what was merged.
pub async fn rows_on_disk(
    batch: &BatchLayer,
    table: &str,
    day: NaiveDate,
    akey: &str,
) -> Result<u64> {
    let prefix = part_prefix(akey);
    let mut rows = 0;
    for meta in batch.list_day(table, day).await? {
        if meta
            .location
            .filename()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            rows += batch.files.row_count(&meta).await?;
        }
    }
    Ok(rows)
}
