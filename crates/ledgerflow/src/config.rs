//! `ledgerflow.toml`, typed. The structs are the reference documentation of
//! every setting (README's config section mirrors them). Loading parses and
//! applies environment overrides; [`Config::validate`] checks what parsing
//! cannot, before anything is built.

use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::location::Location;

/// Environment variables that override the file (useful in CI and Airflow).
pub const ENV_SERVING_URL: &str = "LEDGERFLOW_SERVING_URL";
pub const ENV_BATCH_URL: &str = "LEDGERFLOW_BATCH_URL";
pub const ENV_SPEED_URL: &str = "LEDGERFLOW_SPEED_URL";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Project-wide settings.
    #[serde(default)]
    pub project: ProjectConfig,
    /// The batch layer: committed day partitions.
    pub batch: BatchConfig,
    /// The speed layer: the open day.
    pub speed: SpeedConfig,
    /// The serving database: metric tables and the run ledger.
    pub serving: ServingConfig,
    /// Query engine limits.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The run ledger.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// How a day's models are committed.
    #[serde(default)]
    pub run: RunConfig,
    /// The long-running scheduler (`ledgerflow schedule`).
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Scheduled jobs (`[[jobs]]`), validated by `schedule` and `status`.
    #[serde(default)]
    pub jobs: Vec<crate::schedule::job::JobConfig>,
    /// Partner ingestion (`ledgerflow ingest`): limits, drift and quarantine
    /// policies.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Directory of the config file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the config was read from, for error messages.
    #[serde(skip)]
    pub source_path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Directory of model SQL files. Default: `models`.
    #[serde(default = "default_models_dir")]
    pub models_dir: String,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        Self {
            models_dir: default_models_dir(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Root of the batch layer: a local path (relative to this file), a
    /// `file://` URL, `s3://bucket/prefix` (settings in `[batch.s3]`) or
    /// `hdfs://namenode:port/path` (builds with the `hdfs` feature). Tables
    /// live at `<url>/<table>/date=YYYY-MM-DD/*.parquet`. Overridden by
    /// `LEDGERFLOW_BATCH_URL`.
    pub url: String,
    /// File whose presence marks a day partition as committed; written last.
    /// Default: `_SUCCESS`.
    #[serde(default = "default_marker")]
    pub marker: String,
    /// Target rows per Parquet file when ledgerflow writes a partition.
    /// Default: 500000.
    #[serde(default = "default_rows_per_file")]
    pub rows_per_file: usize,
    /// S3 settings for every `s3://` URL of the project (the batch layer
    /// and an S3 landing dir).
    #[serde(default)]
    pub s3: S3Config,
}

/// How to reach an S3-compatible store. Credentials come from the standard
/// AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, web identity, instance metadata) unless set here.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:8333`,
    /// MinIO, SeaweedFS, R2...). Default: AWS (`AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region. Default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else
    /// `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint. Default: false.
    #[serde(default)]
    pub allow_http: bool,
    /// `path` (`endpoint/bucket/key`) or `virtual_hosted`
    /// (`bucket.endpoint/key`). Default: `path`.
    #[serde(default)]
    pub url_style: S3UrlStyle,
    /// Access key id; prefer the environment. Never printed.
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    /// Secret access key; prefer the environment. Never printed.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Longest a single request may take. Default: 30s.
    #[serde(default = "default_s3_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
    /// Longest wait for a connection. Default: 5s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: std::time::Duration,
    /// Retries of a failed request (with exponential backoff). Default: 3.
    #[serde(default = "default_s3_retries")]
    pub max_retries: usize,
    /// Longest time spent retrying one request. Default: 30s.
    #[serde(default = "default_s3_timeout", with = "humantime_serde")]
    pub retry_timeout: std::time::Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            allow_http: false,
            url_style: S3UrlStyle::default(),
            access_key_id: None,
            secret_access_key: None,
            timeout: default_s3_timeout(),
            connect_timeout: default_connect_timeout(),
            max_retries: default_s3_retries(),
            retry_timeout: default_s3_timeout(),
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("url_style", &self.url_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum S3UrlStyle {
    #[default]
    Path,
    VirtualHosted,
}

/// A setting that must never be printed: `Debug` shows `***`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

fn default_s3_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_s3_retries() -> usize {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedConfig {
    /// The speed layer: either a landing directory of micro-batch Parquet
    /// files (`<url>/<table>/date=YYYY-MM-DD/<seq>.parquet`: a local path
    /// relative to this file, or `s3://bucket/prefix` with the settings of
    /// `[batch.s3]`), or a MongoDB connection string
    /// (`mongodb://host:port/?directConnection=true`, `mongodb+srv://..`).
    /// Overridden by `LEDGERFLOW_SPEED_URL`.
    pub url: String,
    /// MongoDB database holding the speed layer. Default: `ledger`.
    #[serde(default = "default_mongo_database")]
    pub database: String,
    /// MongoDB collection of blocks (time field `timestamp`, a BSON date).
    /// Default: `blocks`.
    #[serde(default = "default_blocks_collection")]
    pub blocks_collection: String,
    /// MongoDB collection of transactions (time field `block_timestamp`, a
    /// BSON date; `value` as Decimal128 or a decimal string). Default:
    /// `transactions`.
    #[serde(default = "default_transactions_collection")]
    pub transactions_collection: String,
    /// How long the speed layer keeps data (e.g. "48h"). A day that starts
    /// before now - ttl and is not committed in the batch layer is an error,
    /// never an empty result. Default: the TTL index of the blocks
    /// collection (MongoDB), none for a landing dir.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<std::time::Duration>,
    /// What a run does when the speed layer cannot be reached: `fail`
    /// (exit 1) or `skip` (ledger state skipped with the reason, exit 99;
    /// repair later with backfill). Default: `fail`.
    #[serde(default)]
    pub on_unavailable: UnavailablePolicy,
    /// How long to wait for a MongoDB server before it counts as
    /// unavailable. Default: 5s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: std::time::Duration,
    /// Create the time-field indexes if missing (else only warn that they
    /// are missing). Default: true.
    #[serde(default = "default_true")]
    pub create_indexes: bool,
    /// How `realtime` follows MongoDB: `change_stream` (resume token),
    /// `poll` (by block number, for servers without change streams), or
    /// `auto` (change streams if the server has them). Default: `auto`.
    #[serde(default)]
    pub follow: FollowMode,
    /// How often `realtime` looks for new data when polling (landing dir,
    /// or MongoDB in `poll` mode), and the change stream's longest wait.
    /// Default: 100ms.
    #[serde(default = "default_speed_poll", with = "humantime_serde")]
    pub poll_interval: std::time::Duration,
    /// Confirmations (blocks above a day's last canonical block, the next
    /// day's included) before `compact` may freeze the day into the batch
    /// layer: a reorg shallower than this cannot change a compacted day.
    /// Default: 64.
    #[serde(default = "default_finality_blocks")]
    pub finality_blocks: i64,
}

fn default_finality_blocks() -> i64 {
    64
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailablePolicy {
    #[default]
    Fail,
    Skip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowMode {
    #[default]
    Auto,
    ChangeStream,
    Poll,
}

/// Where the speed layer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeedTarget {
    Landing { location: Location },
    Mongo { uri: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingConfig {
    /// `postgres://user@host:port/db` or `sqlite://PATH` (relative to this
    /// file). Overridden by `LEDGERFLOW_SERVING_URL`.
    pub url: String,
    /// PostgreSQL schema for metric tables and the ledger. Default: `public`.
    #[serde(default = "default_schema")]
    pub schema: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `model`: each model's day commits on its own as soon as it is
    /// written (a reader may briefly see one table's new day beside
    /// another's old one, and a failed model leaves its table's old day
    /// beside the others' new ones). `day`: a day's models commit in one
    /// transaction once all of them are computed, so readers see every
    /// table's new day or none; one failure leaves every table's old day.
    /// Default: `model`.
    #[serde(default)]
    pub commit: CommitMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitMode {
    #[default]
    Model,
    Day,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// How long an open (pending or running) ledger row lives without a
    /// heartbeat; its process renews it every third of this. Any
    /// invocation, on any host, closes rows past it as failed (abandoned).
    /// Default: 1m.
    #[serde(default = "default_ledger_lease", with = "humantime_serde")]
    pub lease: std::time::Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            lease: default_ledger_lease(),
        }
    }
}

fn default_ledger_lease() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Memory the query engine may use before it spills to disk (e.g.
    /// "1 GiB"). Default: 1 GiB.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// Directory for spill files (relative to this file). Default:
    /// `.ledgerflow/spill`.
    #[serde(default = "default_spill_dir")]
    pub spill_dir: String,
    /// Parallelism of query execution. Default: the number of cores.
    #[serde(default)]
    pub target_partitions: Option<usize>,
    /// Rows per Arrow batch. Default: 8192.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How many independent models run at once (query and write). One
    /// query already uses every core of a small machine. Default: 1.
    #[serde(default = "default_parallel_models")]
    pub parallel_models: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            memory_limit: default_memory_limit(),
            spill_dir: default_spill_dir(),
            target_partitions: None,
            batch_size: default_batch_size(),
            parallel_models: default_parallel_models(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How often the leader looks for due work. Default: "1s".
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: std::time::Duration,
    /// On SIGTERM/SIGINT, how long running runs may finish before they are
    /// cancelled (rolled back). Default: "30s".
    #[serde(default = "default_grace_period", with = "humantime_serde")]
    pub grace_period: std::time::Duration,
    /// How soon a dead leader's lock is released when its host vanishes
    /// without closing the connection (TCP keepalive on the lock session),
    /// and how often a standby retries. Default: "10s".
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: std::time::Duration,
    /// URL that SLA alerts are POSTed to (JSON: job, day, deadline, state).
    /// A job's own `webhook` overrides it. Default: none (log + ledger only).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Delivery attempts per alert (exponential backoff with jitter).
    /// Default: 5.
    #[serde(default = "default_webhook_attempts")]
    pub webhook_attempts: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            poll_interval: default_poll_interval(),
            grace_period: default_grace_period(),
            lease: default_lease(),
            webhook: None,
            webhook_attempts: default_webhook_attempts(),
        }
    }
}

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
        }
    }
}

fn default_poll_interval() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}
fn default_grace_period() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}
fn default_lease() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_webhook_attempts() -> usize {
    5
}
impl IngestConfig {
    pub fn policy(&self, table: &str) -> IncompatiblePolicy {
        self.table_policy
            .get(table)
            .copied()
            .unwrap_or(self.on_incompatible)
    }
}

fn default_max_uncompressed() -> ByteSize {
    ByteSize::gib(8)
}
fn default_max_entries() -> u64 {
    10_000
}
fn default_max_ratio() -> u64 {
    200
}
fn default_max_line() -> ByteSize {
    ByteSize::mib(16)
}
fn default_infer_rows() -> usize {
    1000
}
fn default_max_bad_rows_ratio() -> f64 {
    0.01
}
fn default_on_incompatible() -> IncompatiblePolicy {
    IncompatiblePolicy::Quarantine
}
fn default_poll_seconds() -> u64 {
    30
}
fn default_on_changed_archive() -> ChangedArchivePolicy {
    ChangedArchivePolicy::Error
}
fn default_ingest_compression() -> IngestCompression {
    IngestCompression::Zstd
}

impl IngestCompression {
    pub fn parquet(self) -> parquet::basic::Compression {
        match self {
            IngestCompression::Zstd => crate::catalog::store::zstd(),
            IngestCompression::Lz4 => parquet::basic::Compression::LZ4_RAW,
            IngestCompression::Snappy => parquet::basic::Compression::SNAPPY,
            IngestCompression::None => parquet::basic::Compression::UNCOMPRESSED,
        }
    }
}

fn default_mongo_database() -> String {
    "ledger".into()
}
fn default_blocks_collection() -> String {
    "blocks".into()
}
fn default_transactions_collection() -> String {
    "transactions".into()
}
fn default_connect_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}
fn default_speed_poll() -> std::time::Duration {
    std::time::Duration::from_millis(100)
}
fn default_true() -> bool {
    true
}
fn default_models_dir() -> String {
    "models".into()
}
fn default_marker() -> String {
    "_SUCCESS".into()
}
fn default_rows_per_file() -> usize {
    500_000
}
fn default_schema() -> String {
    "public".into()
}
fn default_memory_limit() -> ByteSize {
    ByteSize::gib(1)
}
fn default_spill_dir() -> String {
    ".ledgerflow/spill".into()
}
fn default_batch_size() -> usize {
    8192
}
fn default_parallel_models() -> usize {
    1
}

/// Where the serving layer lives, parsed from `serving.url`.
#[derive(Debug, Clone, PartialEq)]
pub enum ServingTarget {
    Postgres { url: String },
    Sqlite { path: PathBuf },
}

impl Config {
    /// Reads, parses and applies environment overrides; then validates.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("cannot read: {e} (run `ledgerflow init DIR` to create a project)"),
        })?;
        let mut config = Self::parse(&text, path)?;
        config.apply_env(|k| std::env::var(k).ok());
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.source_path = path.to_path_buf();
        config.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(config)
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get(ENV_SERVING_URL).filter(|v| !v.is_empty()) {
            self.serving.url = v;
        }
        if let Some(v) = get(ENV_BATCH_URL).filter(|v| !v.is_empty()) {
            self.batch.url = v;
        }
        if let Some(v) = get(ENV_SPEED_URL).filter(|v| !v.is_empty()) {
            self.speed.url = v;
        }
    }

    fn invalid(&self, key: &str, message: impl std::fmt::Display) -> Error {
        Error::Config {
            path: self.source_path.clone(),
            message: format!("`{key}`: {message}"),
        }
    }

    /// Checks every setting that parsing cannot, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        self.serving_target()?;
        crate::names::validate(&self.serving.schema)
            .map_err(|m| self.invalid("serving.schema", m))?;
        if self.batch.marker.is_empty() || self.batch.marker.contains('/') {
            return Err(self.invalid("batch.marker", "must be a plain file name"));
        }
        if self.batch.rows_per_file == 0 {
            return Err(self.invalid("batch.rows_per_file", "must be at least 1"));
        }
        let lease = self.ledger.lease;
        if lease < std::time::Duration::from_secs(1)
            || lease > std::time::Duration::from_secs(86_400)
        {
            return Err(self.invalid("ledger.lease", "must be between 1s and 1d"));
        }
        if self.speed.finality_blocks < 0 {
            return Err(self.invalid("speed.finality_blocks", "must be 0 or more"));
        }
        self.batch_location()?;
        if self.batch.s3.max_retries > 10 {
            return Err(self.invalid("batch.s3.max_retries", "must be at most 10"));
        }
        if self.batch.s3.timeout.is_zero() || self.batch.s3.connect_timeout.is_zero() {
            return Err(self.invalid(
                "batch.s3.timeout / batch.s3.connect_timeout",
                "must be above zero",
            ));
        }
        if let SpeedTarget::Mongo { .. } = self.speed_target()? {
            // MongoDB's own naming rules: a database name has no `/\. "$`,
            // a collection name no `$` (and neither a NUL).
            for (key, name, forbidden) in [
                ("speed.database", &self.speed.database, "/\\. \"$\0"),
                (
                    "speed.blocks_collection",
                    &self.speed.blocks_collection,
                    "$\0",
                ),
                (
                    "speed.transactions_collection",
                    &self.speed.transactions_collection,
                    "$\0",
                ),
            ] {
                if name.is_empty() || name.contains(|c| forbidden.contains(c)) {
                    return Err(self.invalid(key, format!("`{name}` is not a valid MongoDB name")));
                }
            }
        }
        if self
            .speed
            .ttl
            .is_some_and(|t| t < std::time::Duration::from_secs(3600))
        {
            return Err(self.invalid("speed.ttl", "must be at least 1h"));
        }
        if self.speed.connect_timeout.is_zero() || self.speed.poll_interval.is_zero() {
            return Err(self.invalid(
                "speed.connect_timeout / speed.poll_interval",
                "must be above zero",
            ));
        }
        if self.engine.memory_limit < ByteSize::mib(64) {
            return Err(self.invalid("engine.memory_limit", "must be at least 64 MiB"));
        }
        if self.engine.batch_size == 0 {
            return Err(self.invalid("engine.batch_size", "must be at least 1"));
        }
        if self.scheduler.poll_interval.is_zero() {
            return Err(self.invalid("scheduler.poll_interval", "must be above zero"));
        }
        if self.scheduler.lease < std::time::Duration::from_secs(2) {
            return Err(self.invalid("scheduler.lease", "must be at least 2s"));
        }
        if self.scheduler.webhook_attempts == 0 {
            return Err(self.invalid("scheduler.webhook_attempts", "must be at least 1"));
        }
        if let Some(url) = &self.scheduler.webhook {
            crate::schedule::alert::check_url(url)
                .map_err(|m| self.invalid("scheduler.webhook", m))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, job) in self.jobs.iter().enumerate() {
            job.validate()
                .map_err(|(key, m)| self.invalid(&format!("jobs[{i}] ({}).{key}", job.name), m))?;
            if !names.insert(job.name.as_str()) {
                return Err(self.invalid(
                    &format!("jobs[{i}].name"),
                    format!("job `{}` is defined twice", job.name),
                ));
            }
        }
        if self.engine.parallel_models == 0 {
            return Err(self.invalid("engine.parallel_models", "must be at least 1"));
        }
        if self.engine.target_partitions == Some(0) {
            return Err(self.invalid("engine.target_partitions", "must be at least 1"));
        }
        let ingest = &self.ingest;
        if ingest.max_entries == 0 || ingest.max_ratio == 0 || ingest.infer_rows == 0 {
            return Err(self.invalid(
                "ingest.max_entries / max_ratio / infer_rows",
                "must be at least 1",
            ));
        }
        if ingest.max_line < ByteSize::kib(1) {
            return Err(self.invalid("ingest.max_line", "must be at least 1 KiB"));
        }
        if !(0.0..=1.0).contains(&ingest.max_bad_rows_ratio) {
            return Err(self.invalid("ingest.max_bad_rows_ratio", "must be in [0, 1]"));
        }
        if ingest.poll_seconds == 0 {
            return Err(self.invalid("ingest.poll_seconds", "must be at least 1"));
        }
        for table in ingest.expected.keys() {
            crate::names::validate(table).map_err(|m| self.invalid("ingest.expected", m))?;
        }
        for table in ingest.table_policy.keys() {
            crate::names::validate(table).map_err(|m| self.invalid("ingest.table_policy", m))?;
        }
        Ok(())
    }

    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Where the batch layer lives.
    pub fn batch_location(&self) -> Result<Location> {
        self.location("batch.url", &self.batch.url)
    }

    /// The batch layer as a local directory, for the parts that need one
    /// (an error naming `batch.url` otherwise).
    pub fn batch_root(&self) -> Result<PathBuf> {
        match self.batch_location()? {
            Location::Local(root) => Ok(root),
            other => Err(self.invalid(
                "batch.url",
                format!("is {other}; this needs a local directory"),
            )),
        }
    }

    pub fn speed_target(&self) -> Result<SpeedTarget> {
        let url = self.speed.url.trim();
        if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
            return Ok(SpeedTarget::Mongo {
                uri: url.to_string(),
            });
        }
        Ok(SpeedTarget::Landing {
            location: self.location("speed.url", url)?,
        })
    }

    fn location(&self, key: &str, value: &str) -> Result<Location> {
        let location = Location::parse(value, &self.base_dir).map_err(|m| self.invalid(key, m))?;
        if matches!(location, Location::Hdfs { .. }) && !cfg!(feature = "hdfs") {
            return Err(self.invalid(
                key,
                "hdfs:// needs a build with the `hdfs` feature (release builds have it: cargo install --features hdfs)",
            ));
        }
        Ok(location)
    }

    pub fn serving_target(&self) -> Result<ServingTarget> {
        let url = self.serving.url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.parse::<tokio_postgres::Config>().map_err(|e| {
                self.invalid("serving.url", format!("not a valid PostgreSQL URL: {e}"))
            })?;
            Ok(ServingTarget::Postgres {
                url: url.to_string(),
            })
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(self.invalid("serving.url", "sqlite:// needs a file path"));
            }
            Ok(ServingTarget::Sqlite {
                path: self.resolve(path),
            })
        } else {
            Err(self.invalid(
                "serving.url",
                "must start with postgres://, postgresql:// or sqlite://",
            ))
        }
    }

    pub fn models_dir(&self) -> PathBuf {
        self.resolve(&self.project.models_dir)
    }

    pub fn spill_dir(&self) -> PathBuf {
        self.resolve(&self.engine.spill_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[batch]
url = "data/batch"
[speed]
url = "data/landing"
[serving]
url = "sqlite://serving.db"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = Config::parse(MINIMAL, Path::new("/p/ledgerflow.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.batch_root().unwrap(), PathBuf::from("/p/data/batch"));
        assert_eq!(c.batch.s3.timeout, std::time::Duration::from_secs(30));
        assert_eq!(c.batch.marker, "_SUCCESS");
        assert_eq!(c.engine.memory_limit, ByteSize::gib(1));
        assert_eq!(
            c.serving_target().unwrap(),
            ServingTarget::Sqlite {
                path: "/p/serving.db".into()
            }
        );
    }

    #[test]
    fn typo_names_the_key() {
        let text = MINIMAL.replace("[serving]", "[serving]\nschem = \"x\"");
        let err = Config::parse(&text, Path::new("l.toml")).unwrap_err();
        assert!(err.to_string().contains("schem"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn env_overrides_and_bad_values() {
        let mut c = Config::parse(MINIMAL, Path::new("l.toml")).unwrap();
        c.apply_env(|k| (k == ENV_SERVING_URL).then(|| "mysql://x".to_string()));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("serving.url"), "{err}");
        let mut c = Config::parse(MINIMAL, Path::new("l.toml")).unwrap();
        c.serving.schema = "a".repeat(64);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("serving.schema"));
    }

    #[test]
    fn hdfs_needs_its_feature() {
        let text = MINIMAL.replace("url = \"data/batch\"", "url = \"hdfs://nn:9000/ledger\"");
        let c = Config::parse(&text, Path::new("l.toml")).unwrap();
        match (c.batch_location(), cfg!(feature = "hdfs")) {
            (Ok(location), true) => assert_eq!(location.to_string(), "hdfs://nn:9000/ledger"),
            (Err(e), false) => assert!(e.to_string().contains("--features hdfs"), "{e}"),
            (other, feature) => panic!("hdfs feature {feature}: {other:?}"),
        }
    }

    #[test]
    fn s3_settings_and_secrets() {
        let text = MINIMAL.replace(
            "url = \"data/batch\"",
            "url = \"s3://ledger-data/batch\"\n[batch.s3]\nendpoint = \"http://127.0.0.1:8333\"\nallow_http = true\nurl_style = \"virtual_hosted\"\nsecret_access_key = \"hunter2\"",
        );
        let c = Config::parse(&text, Path::new("l.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.batch_location().unwrap().to_string(),
            "s3://ledger-data/batch"
        );
        assert_eq!(c.batch.s3.url_style, S3UrlStyle::VirtualHosted);
        assert!(!format!("{c:?}").contains("hunter2"));
        let err = c.batch_root().unwrap_err().to_string();
        assert!(
            err.contains("batch.url") && err.contains("s3://ledger-data/batch"),
            "{err}"
        );
        let mut c = Config::parse(MINIMAL, Path::new("l.toml")).unwrap();
        c.apply_env(|k| (k == ENV_BATCH_URL).then(|| "s3://k:hunter2@b/p".to_string()));
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("batch.url") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
