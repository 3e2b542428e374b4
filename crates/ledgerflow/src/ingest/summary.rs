//! What an ingest did, per archive and per (table, day) with every batch,
//! and the reconciliation that closes it: for each batch and table, rows
//! read = rows written + rows quarantined, and the rows in the committed
//! Parquet footers = rows written. Printed, `--json`, and stored in
//! `<batch root>/_ingest/runs/`.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::archive::ExtractStats;
use crate::catalog::meta::MetaDir;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveAction {
    /// Every table committed.
    Loaded,
    /// Some tables failed; the rest committed.
    Partial,
    /// Same name, size and sha256 as a loaded archive: nothing done.
    Unchanged,
    /// Refused as a whole; nothing of it written.
    Rejected,
    /// `--dry-run`: would be loaded (or replaced).
    WouldLoad,
    /// Its first table file is of another day than `--date`: left for that
    /// day's run.
    OtherDay,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub action: ArchiveAction,
    /// A known name with new content, loaded over the old rows.
    pub replaced: bool,
    pub reason: Option<String>,
    #[serde(flatten)]
    pub stats: ExtractStats,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    pub source: String,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_quarantined: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    Committed,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub day: NaiveDate,
    pub state: TableState,
    pub schema_version: u32,
    /// Registry changes this run made (new versions).
    pub changes: Vec<String>,
    /// Registry columns absent from some file (written as null).
    pub missing: Vec<String>,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_quarantined: u64,
    /// Rows in the committed files' footers (post-merge check).
    pub rows_on_disk: Option<u64>,
    pub batches: Vec<BatchReport>,
    /// `[ingest.checks]` of the table: each check's failing rows (also
    /// stored in `ledgerflow_checks`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<super::row_checks::Tally>,
    pub error: Option<String>,
}

impl TableReport {
    /// read = written + quarantined for the table and each batch, and the
    /// footers agree with what was written.
    pub fn reconciles(&self) -> bool {
        let batches = self
            .batches
            .iter()
            .all(|b| b.rows_read == b.rows_written + b.rows_quarantined);
        let sums = self.rows_read == self.rows_written + self.rows_quarantined
            && self.rows_read == self.batches.iter().map(|b| b.rows_read).sum::<u64>();
        let disk = match self.state {
            TableState::Committed => self.rows_on_disk == Some(self.rows_written),
            TableState::Failed => true,
        };
        batches && sums && disk
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub date: Option<NaiveDate>,
    pub dry_run: bool,
    pub archives: Vec<ArchiveReport>,
    pub tables: Vec<TableReport>,
    /// Every committed table reconciles.
    pub reconciled: bool,
    /// The readiness check, when `[ingest.expected]` and `--date` are set.
    pub readiness: Option<super::readiness::Readiness>,
    /// Not ready by the deadline: nothing was ingested (exit 99).
    pub skipped: bool,
}

impl IngestReport {
    /// 0 when everything given was loaded or unchanged, 99 when the day was
    /// skipped as not ready, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.skipped {
            return 99;
        }
        let bad_archive = self
            .archives
            .iter()
            .any(|a| matches!(a.action, ArchiveAction::Rejected | ArchiveAction::Partial));
        let bad_table = self.tables.iter().any(|t| t.state == TableState::Failed);
        if bad_archive || bad_table || !self.reconciled {
            1
        } else {
            0
        }
    }

    /// Stores the report under `<batch layer>/_ingest/runs/`; returns
    /// where.
    pub fn store(&self, docs: &MetaDir) -> Result<String> {
        let key = format!(
            "{}/runs/{}-{}.json",
            super::manifest::DIR,
            self.started_at.format("%Y%m%dT%H%M%S%.3fZ"),
            std::process::id()
        );
        docs.write(
            &key,
            &serde_json::to_vec_pretty(self).expect("reports serialize"),
        )?;
        Ok(docs.describe(&key))
    }
}
