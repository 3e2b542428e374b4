//! `[ingest]`: partner archives: limits, policies, compression.

use super::*;

/// What `ingest` does when a column's type changes across families (e.g. a
/// date column now holding integers), which no widening can absorb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IncompatiblePolicy {
    /// Keep the registered type; rows whose value does not parse go to
    /// quarantine (and the table fails above `max_bad_rows_ratio`).
    Quarantine,
    /// Fail the table for the day; nothing of it is written.
    Fail,
}

/// What `ingest` does with an archive whose name is in the manifest but
/// whose size or sha256 differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangedArchivePolicy {
    /// Reject the archive, naming both checksums.
    Error,
    /// Replace every row the earlier version of the archive loaded.
    Replace,
}

/// How ingested Parquet pages are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestCompression {
    /// zstd level 1: about half the size of `none` on hex-heavy ledger
    /// data, for ~15% of an ingest's CPU.
    Zstd,
    /// LZ4 (the raw block format Parquet names LZ4_RAW): ~6% less CPU
    /// than zstd for files ~1.9x larger (no entropy coding for hex).
    Lz4,
    /// Snappy, Spark's default: about zstd's CPU for lz4's size.
    Snappy,
    /// No compression: the fastest ingest, the largest files.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest uncompressed size of one archive (e.g. "8 GiB"); beyond it the
    /// archive is rejected as a decompression bomb. Default: 8 GiB.
    #[serde(default = "default_max_uncompressed")]
    pub max_uncompressed: ByteSize,
    /// Most entries one archive may hold. Default: 10000.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Largest uncompressed/compressed ratio, checked once 16 MiB have been
    /// inflated (CSV compresses 5-20x; bombs 1000x). Default: 200.
    #[serde(default = "default_max_ratio")]
    pub max_ratio: u64,
    /// Longest CSV record / NDJSON line; a longer one rejects the archive
    /// (a 1 GB line would otherwise be buffered whole). Default: 16 MiB.
    #[serde(default = "default_max_line")]
    pub max_line: ByteSize,
    /// Rows read before a file's column types are inferred; later values that
    /// do not parse as the inferred type are quarantined. Default: 1000.
    #[serde(default = "default_infer_rows")]
    pub infer_rows: usize,
    /// Share of a (table, day)'s rows that may be quarantined before the
    /// table fails. Default: 0.01.
    #[serde(default = "default_max_bad_rows_ratio")]
    pub max_bad_rows_ratio: f64,
    /// Default policy for incompatible type changes. Default: `quarantine`.
    #[serde(default = "default_on_incompatible")]
    pub on_incompatible: IncompatiblePolicy,
    /// Per-table overrides of `on_incompatible`, e.g. `{ balances = "fail" }`.
    #[serde(default)]
    pub table_policy: std::collections::BTreeMap<String, IncompatiblePolicy>,
    /// Readiness: table files (batches) expected per day, by table, e.g.
    /// `{ transfers = 24, prices = 24 }`. With `ingest --date D` the day is
    /// ingested only once every table has its count among the inputs (and
    /// earlier loads); `--wait` polls until `--timeout`, else the run is
    /// skipped (exit 99) naming what is missing. Default: none (no check).
    #[serde(default)]
    pub expected: std::collections::BTreeMap<String, u32>,
    /// Seconds between readiness checks under `--wait`. Default: 30.
    #[serde(default = "default_poll_seconds")]
    pub poll_seconds: u64,
    /// A known archive name with other content: `error` (default) or
    /// `replace`.
    #[serde(default = "default_on_changed_archive")]
    pub on_changed_archive: ChangedArchivePolicy,
    /// Compression of the Parquet files ingest writes: `zstd` (default,
    /// level 1), `lz4` (LZ4_RAW), `snappy` or `none`.
    #[serde(default = "default_ingest_compression")]
    pub compression: IngestCompression,
    /// Column checks per table, applied to each row at merge time, e.g.
    /// `{ transfers = ["not_null(tx_hash)", "range(amount, 0, *) warn"] }`:
    /// not_null, accepted_values and range; a failing `warn` check
    /// quarantines the row, an `error` check fails the table. Default: none.
    #[serde(default)]
    pub checks: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_uncompressed: default_max_uncompressed(),
            max_entries: default_max_entries(),
            max_ratio: default_max_ratio(),
            max_line: default_max_line(),
            infer_rows: default_infer_rows(),
            max_bad_rows_ratio: default_max_bad_rows_ratio(),
            on_incompatible: default_on_incompatible(),
            table_policy: Default::default(),
            expected: Default::default(),
            poll_seconds: default_poll_seconds(),
            on_changed_archive: default_on_changed_archive(),
            compression: default_ingest_compression(),
            checks: Default::default(),
        }
    }
}

impl IngestConfig {
    pub fn policy(&self, table: &str) -> IncompatiblePolicy {
        self.table_policy
            .get(table)
            .copied()
            .unwrap_or(self.on_incompatible)
    }
}

pub(super) fn default_max_uncompressed() -> ByteSize {
    ByteSize::gib(8)
}

pub(super) fn default_max_entries() -> u64 {
    10_000
}

pub(super) fn default_max_ratio() -> u64 {
    200
}

pub(super) fn default_max_line() -> ByteSize {
    ByteSize::mib(16)
}

pub(super) fn default_infer_rows() -> usize {
    1000
}

pub(super) fn default_max_bad_rows_ratio() -> f64 {
    0.01
}

pub(super) fn default_on_incompatible() -> IncompatiblePolicy {
    IncompatiblePolicy::Quarantine
}

pub(super) fn default_poll_seconds() -> u64 {
    30
}

pub(super) fn default_on_changed_archive() -> ChangedArchivePolicy {
    ChangedArchivePolicy::Error
}

pub(super) fn default_ingest_compression() -> IngestCompression {
    IngestCompression::Zstd
}
