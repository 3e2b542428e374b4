//! The command line: clap definitions only.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ledgerflow",
    version,
    about = "Blockchain ledger analytics: batch + speed layers -> SQL models -> PostgreSQL / SQLite, exactly once",
    after_help = "Exit codes: 0 success, 1 a run failed, 2 usage or configuration error, 99 skipped (source unavailable)."
)]
pub struct Cli {
    /// Project configuration file.
    #[arg(
        long,
        global = true,
        default_value = "ledgerflow.toml",
        env = "LEDGERFLOW_CONFIG"
    )]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Only warnings and errors on stderr (the default of one-shot
    /// commands; `schedule` and `realtime` log what they do).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Logs too: `-v` what each step does, `-vv` debug (server notices
    /// included). `LEDGERFLOW_LOG` (a tracing filter) overrides both.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a project in DIR: ledgerflow.toml and the default models.
    Init { dir: PathBuf },
    /// Generate deterministic ethereum-like data into the batch and speed layers.
    Generate(GenerateArgs),
    /// Run models for one day.
    Run(RunArgs),
    /// Run models for every day of a range, oldest first.
    Backfill(BackfillArgs),
    /// List the run ledger, newest first.
    Runs(RunsArgs),
    /// Recompute days and evaluate their checks (--deep: against the serving tables too).
    Check(crate::checks_cmd::CheckArgs),
    /// List check results (passes too), newest first.
    Checks(crate::checks_cmd::ChecksArgs),
    /// Show a model's query plan for a day (--analyze: run it here and show each operator's metrics); writes nothing.
    Explain(crate::explain_cmd::ExplainArgs),
    /// A read-only web page (partition grid, runs, checks, schedule, realtime, ingest) and /metrics.
    Serve(crate::serve::ServeArgs),
    /// Close a day: move its canonical rows from the speed layer into batch partitions.
    Compact(CompactArgs),
    /// Keep the realtime models (realtime_dashboard) fresh from the speed layer; resumes from its checkpoint.
    Realtime(RealtimeArgs),
    /// Measure realtime freshness (block landed -> row visible) at several rates.
    BenchRealtime(BenchRealtimeArgs),
    /// Run the configured [[jobs]] on their schedules (long-running; one leader).
    Schedule(ScheduleArgs),
    /// Jobs: next tick, running, last success and lag per model, SLA misses, gaps.
    Status(StatusArgs),
    /// Measure a mainnet-scale day (and a week) end to end.
    Bench(BenchArgs),
    /// Load partner archives (.tar.gz of per-table CSV/NDJSON) into the batch layer.
    Ingest(crate::ingest_cmd::IngestArgs),
    /// Show the ingest schema registry: tables, versions and changes.
    Schemas(crate::ingest_cmd::SchemasArgs),
    /// Measure ingest throughput (MB/s of CSV) and peak RSS on a generated archive.
    BenchIngest(crate::ingest_cmd::BenchIngestArgs),
    /// Measure the web page's server time over a large ledger and `serve`'s idle memory.
    BenchServe(crate::serve::bench::BenchServeArgs),
    /// A Ballista cluster for engine.mode = "ballista": a scheduler, an executor, or both on this host (`up`).
    #[cfg(feature = "ballista")]
    Cluster(crate::cluster_cmd::ClusterArgs),
}

#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    #[arg(long)]
    pub date: NaiveDate,
    /// Compact a day that is still open (today or later, UTC), or whose
    /// last block has fewer than `speed.finality_blocks` confirmations.
    #[arg(long)]
    pub force: bool,
    /// Delete the day's landing files once the batch partitions are committed.
    #[arg(long)]
    pub remove_landing: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// If another scheduler leads, wait and take over when it stops
    /// (instead of refusing).
    #[arg(long)]
    pub standby: bool,
    /// Run what is due now (with retries), then exit: 1 if a tick failed.
    #[arg(long)]
    pub once: bool,
    /// Also serve Prometheus `/metrics` on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// First day (with --live: the day to append to; default today, UTC).
    #[arg(long, required_unless_present = "live")]
    pub from: Option<NaiveDate>,
    #[arg(long, required_unless_present = "live")]
    pub to: Option<NaiveDate>,
    /// 1.0 = mainnet: 7,200 blocks and about 1.2 million transactions a day.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Days written to the speed layer instead of the batch layer (default:
    /// today's UTC day, if in the range).
    #[arg(long, value_delimiter = ',')]
    pub speed_days: Vec<NaiveDate>,
    /// Write the speed days to the batch layer too (a day present in both).
    #[arg(long)]
    pub also_batch: bool,
    /// Probability that a speed-layer height gets an orphaned fork block.
    #[arg(long, default_value_t = 0.01)]
    pub reorg_rate: f64,
    /// Make every fork exactly this many blocks deep (default: 1, a
    /// quarter of them 2).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub reorg_depth: Option<u32>,
    /// End each speed day with a fork past its last height (stamped on the
    /// day, `--reorg-depth` deep) that the next day's chain orphans.
    #[arg(long)]
    pub boundary_forks: bool,
    /// Blocks per landing-dir micro-batch file.
    #[arg(long, default_value_t = 10)]
    pub blocks_per_file: usize,
    /// Write partner archives (.tar.gz, drifting schemas, bad rows) for the
    /// days into this directory, and hostile ones into its `hostile/`,
    /// instead of ledger data.
    #[arg(long, value_name = "DIR")]
    pub partner_dumps: Option<PathBuf>,
    /// With --partner-dumps: archives per day.
    #[arg(long, default_value_t = 2)]
    pub archives_per_day: usize,
    /// With --partner-dumps: rows of each table in each archive.
    #[arg(long, default_value_t = 5000)]
    pub rows_per_batch: usize,
    /// Append blocks to the speed layer as they "happen" (one micro-batch
    /// per block, reorgs included), until stopped; continues after the
    /// blocks already there, and into the next day.
    #[arg(long)]
    pub live: bool,
    /// With --live: multiple of mainnet's rate (1 = a block every 12 s).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// With --live: stop after at least this many blocks of the day, at a
    /// settled tip (no open fork).
    #[arg(long)]
    pub blocks: Option<u64>,
    /// The speed layer to write to, instead of the config's `speed.url`
    /// (a landing dir or mongodb://...).
    #[arg(long, value_name = "URL")]
    pub speed: Option<String>,
}

impl GenerateArgs {
    pub fn range(&self) -> Result<(NaiveDate, NaiveDate), ledgerflow::Error> {
        match (self.from, self.to) {
            (Some(from), Some(to)) if to < from => {
                Err(ledgerflow::Error::Usage("--to is before --from".into()))
            }
            (Some(from), Some(to)) => Ok((from, to)),
            _ => Err(ledgerflow::Error::Usage(
                "--from and --to are required (unless --live)".into(),
            )),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RealtimeArgs {
    /// Catch up with the speed layer, then exit (instead of following it).
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Print the summary as JSON on exit.
    #[arg(long)]
    pub json: bool,
    /// Also serve Prometheus `/metrics` on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub struct BenchRealtimeArgs {
    /// Rates to measure, as multiples of mainnet (a block every 12 s).
    #[arg(long, value_delimiter = ',', default_value = "1,100,400")]
    pub rates: Vec<f64>,
    /// Blocks per rate (at least 2).
    #[arg(long, default_value_t = 60)]
    pub blocks: u64,
    /// Speed layer: `landing` (a temporary dir) or a mongodb:// URL.
    #[arg(long, default_value = "landing")]
    pub speed: String,
    /// Serving database (default: SQLite in the temporary dir).
    #[arg(long)]
    pub serving: Option<String>,
    /// Also time reading a whole day of this many blocks from MongoDB
    /// (documents/s), when --speed is a MongoDB URL.
    #[arg(long, default_value_t = 0)]
    pub day_blocks: u64,
}

#[derive(Debug, clap::Args)]
pub struct RunSelection {
    /// Only these models (repeatable); default all, in dependency order.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Run even when inputs and SQL are unchanged since the last success.
    #[arg(long)]
    pub force: bool,
    /// Write an empty result for a day found in neither layer, instead of failing.
    #[arg(long)]
    pub allow_empty: bool,
    /// Print one JSON object per (model, day) on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[arg(long)]
    pub date: NaiveDate,
    #[command(flatten)]
    pub select: RunSelection,
}

#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    #[arg(long)]
    pub from: NaiveDate,
    #[arg(long)]
    pub to: NaiveDate,
    /// Print the plan (model, day, layer, run or skip) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub select: RunSelection,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[arg(long)]
    pub model: Option<String>,
    /// pending, running, success, failed, skipped or superseded.
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub from: Option<NaiveDate>,
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// At most this many rows (newest first).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Days in the multi-day run (0 skips it).
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// PostgreSQL URL to bench against (default: LEDGERFLOW_TEST_PG_URL or
    /// the local server); `none` skips PostgreSQL.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Working directory (default: a temporary one, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also run the first day with the batch layer on object storage: the
    /// generated layer is uploaded to this `s3://bucket/prefix` (credentials
    /// from the AWS environment), then read from there.
    #[arg(long, value_name = "URL")]
    pub batch: Option<String>,
    /// Also run the first day again with the checks off (`run.checks =
    /// false`) beside a run with them on: what the checks cost.
    #[arg(long)]
    pub checks: bool,
    /// With --batch: the S3 endpoint (e.g. `http://127.0.0.1:8333` for a
    /// local server; plain http is allowed for it). Default: AWS's.
    #[arg(long, requires = "batch")]
    pub s3_endpoint: Option<String>,
    /// `ballista`: also run the first day and the range on a Ballista
    /// cluster started on this host (see --executors), beside local mode.
    #[arg(long, value_enum, default_value_t = BenchEngine::Local)]
    pub engine: BenchEngine,
    /// With --engine ballista: a cluster of each of these many executors
    /// (2 task slots each), one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub executors: Vec<usize>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchEngine {
    Local,
    Ballista,
}
