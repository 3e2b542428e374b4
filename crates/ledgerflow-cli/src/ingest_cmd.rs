//! `ingest`, `schemas`, `generate --partner-dumps` and `bench-ingest`: load
//! config, call `ledgerflow::ingest`, print.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::NaiveDate;
use ledgerflow::catalog::meta::MetaDir;
use ledgerflow::generate::partner;
use ledgerflow::ingest::registry::Registry;
use ledgerflow::ingest::summary::IngestReport;
use ledgerflow::ingest::{self, IngestOptions};

use crate::cli::GenerateArgs;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Archives (.tar.gz, .tgz), table files (.csv, .csv.gz, .ndjson,
    /// .json.gz) or directories of them (one level).
    pub inputs: Vec<PathBuf>,
    /// The run's day: every table file must be of this day.
    #[arg(long)]
    pub date: Option<NaiveDate>,
    /// Wait until the day's expected tables (`[ingest.expected]`) are all
    /// present in the inputs, up to --timeout; else skip (exit 99).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. `2h`, `90s`.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Say what would be loaded, unchanged or refused; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also re-run the failed tables of archives recorded as partial.
    #[arg(long)]
    pub retry_failed: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SchemasArgs {
    /// One table's versions and changes (default: every table's latest).
    pub table: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct BenchIngestArgs {
    /// Uncompressed size of the generated archive, in MB.
    #[arg(long, default_value_t = 1024)]
    pub mb: u64,
    /// Working directory (default: a temporary one, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// gzip level of the archive: 6 is gzip's and tar's default (what
    /// partners usually send); 1 is ~1.5x the size.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    /// Split the data over this many archives (of one day), ingested in
    /// one run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub archives: u64,
    /// Internal: only write the archive into --dir (run as a child, so the
    /// measuring process never holds the generator's memory: Linux counts
    /// the parent's peak RSS at exec in the child's).
    #[arg(long, hide = true, requires = "dir")]
    pub generate_only: bool,
}

fn usage(message: String) -> anyhow::Error {
    ledgerflow::Error::Usage(message).into()
}

pub async fn ingest(config: &Path, args: IngestArgs) -> anyhow::Result<u8> {
    let config = crate::commands::load(config)?;
    if args.inputs.is_empty() && !args.retry_failed {
        return Err(usage(
            "give archives, files or directories to ingest (or --retry-failed)".into(),
        ));
    }
    if args.wait && args.date.is_none() {
        return Err(usage("--wait needs --date".into()));
    }
    if args.wait && config.ingest.expected.is_empty() {
        return Err(usage(
            "--wait needs the day's expected tables in [ingest.expected]".into(),
        ));
    }
    let opts = IngestOptions {
        date: args.date,
        dry_run: args.dry_run,
        retry_failed: args.retry_failed,
        wait: args.wait.then_some(args.timeout),
    };
    let report = ingest::ingest(&config, &args.inputs, &opts).await?;
    print(&report, args.json);
    if !args.dry_run {
        // The data and manifest are committed already; a ledger that
        // cannot be written is reported, not a failed ingest (the next
        // ingest records the steps this one could not; the row checks'
        // results stay in the stored report).
        let trigger = if args.retry_failed { "retry" } else { "ingest" };
        let root = MetaDir::open(&config.batch_location()?, &config.batch.s3)?;
        let recorded = async {
            let sink = ledgerflow::sinks::open(&config).await?;
            let this_run = ingest::steps::loaded(&report);
            let earlier = ingest::steps::unrecorded(&root, config.ledger.lease, &this_run)?;
            if !earlier.is_empty() {
                eprintln!(
                    "recording the steps of {} earlier load(s) missing from the run ledger",
                    earlier.len()
                );
            }
            for (name, steps) in earlier {
                ledgerflow::sinks::record_steps(sink.as_ref(), steps, "reconcile").await?;
                ingest::steps::mark_recorded(&root, &[name])?;
            }
            ledgerflow::failpoint::hit("ingest_before_ledger", "").await;
            let steps = ingest::steps::steps(&report);
            let ids =
                ledgerflow::sinks::record_steps(sink.as_ref(), steps.clone(), trigger).await?;
            ingest::steps::mark_recorded(&root, &this_run)?;
            let checks = ingest::steps::check_results(&report, &steps, &ids);
            ledgerflow::runner::record_checks(sink.as_ref(), &config, &checks).await
        };
        if let Err(e) = recorded.await {
            eprintln!("warning: could not record the ingest steps and check results in the serving database: {e}");
        }
    }
    Ok(report.exit_code() as u8)
}

fn print(r: &IngestReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).expect("reports serialize")
        );
        return;
    }
    if let Some(ready) = &r.readiness {
        if r.skipped {
            println!(
                "skipped {}: sources not ready: {}",
                r.date.map(|d| d.to_string()).unwrap_or_default(),
                ready.missing.join("; ")
            );
        }
    }
    for a in &r.archives {
        let action = serde_json::to_value(a.action).expect("serializes");
        println!(
            "archive {:<44} {:<10} {:>4} entries {:>10.1} MB{}{}",
            a.name,
            action.as_str().unwrap_or_default(),
            a.stats.entries,
            a.stats.uncompressed_bytes as f64 / 1e6,
            if a.replaced { "  (replaced)" } else { "" },
            a.reason
                .as_ref()
                .map(|m| format!("  {m}"))
                .unwrap_or_default()
        );
    }
    for t in &r.tables {
        let state = serde_json::to_value(t.state).expect("serializes");
        println!(
            "table   {:<24} {} {:<9} v{:<3} read {:>9} written {:>9} quarantined {:>7} on disk {:>9}{}",
            t.table,
            t.day,
            state.as_str().unwrap_or_default(),
            t.schema_version,
            t.rows_read,
            t.rows_written,
            t.rows_quarantined,
            t.rows_on_disk.map(|n| n.to_string()).unwrap_or("-".into()),
            t.error
                .as_ref()
                .map(|m| format!("  {m}"))
                .unwrap_or_default()
        );
        for c in &t.changes {
            println!("          schema: {c}");
        }
        for c in t.checks.iter().filter(|c| c.failing_rows > 0) {
            println!(
                "          check `{}` ({}): {} of {} rows failed, e.g. {}",
                c.check,
                c.severity.as_str(),
                c.failing_rows,
                c.rows_checked,
                c.sample.join(", ")
            );
        }
    }
    if !r.dry_run && !r.tables.is_empty() {
        println!(
            "reconciliation: {}",
            if r.reconciled {
                "ok (read = written + quarantined per batch and table; footers = written)"
            } else {
                "FAILED"
            }
        );
    }
}

pub fn schemas(config: &Path, args: SchemasArgs) -> anyhow::Result<u8> {
    let config = crate::commands::load(config)?;
    let registry = Registry::new(MetaDir::open(&config.batch_location()?, &config.batch.s3)?);
    let docs = match &args.table {
        Some(t) => {
            let doc = registry.load(t)?;
            if doc.versions.is_empty() {
                return Err(usage(format!("no table `{t}` in the schema registry")));
            }
            vec![doc]
        }
        None => registry.load_all()?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
        return Ok(0);
    }
    for doc in docs {
        let versions: Vec<_> = if args.table.is_some() {
            doc.versions.iter().collect()
        } else {
            doc.current().into_iter().collect()
        };
        for v in versions {
            println!(
                "{} v{} ({} from {}, {})",
                doc.table,
                v.version,
                v.day,
                v.source,
                v.created_at.format("%Y-%m-%d %H:%M:%S")
            );
            for c in &v.changes {
                println!("    change: {c}");
            }
            let cols: Vec<String> = v
                .columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.ty))
                .collect();
            println!("    columns: {}", cols.join(", "));
        }
    }
    Ok(0)
}

/// `generate --partner-dumps DIR`; DIR may be `s3://bucket/prefix`: the
/// archives are written to a scratch dir, then uploaded (with the project's
/// `[batch.s3]` settings).
pub async fn partner_dumps(config: &Path, dir: &Path, args: &GenerateArgs) -> anyhow::Result<u8> {
    if args.archives_per_day == 0 || args.rows_per_batch == 0 {
        return Err(usage(
            "--archives-per-day and --rows-per-batch must be at least 1".into(),
        ));
    }
    if !ingest::remote::is_remote(dir) {
        return write_partner_dumps(dir, dir, args);
    }
    let config = crate::commands::load(config)?;
    let location = ledgerflow::location::Location::parse(&dir.to_string_lossy(), Path::new(""))
        .map_err(|m| usage(format!("--partner-dumps: {m}")))?;
    let store = ledgerflow::catalog::store::PartitionStore::open(&location, &config.batch.s3)?;
    let scratch = ledgerflow::engine::scratch_dir(&config.spill_dir(), "partner-dumps-")?;
    write_partner_dumps(scratch.path(), Path::new(&location.to_string()), args)?;
    let uploaded = store.upload_tree(scratch.path()).await?;
    println!("uploaded {uploaded} files to {location}");
    Ok(0)
}

/// Writes the dumps into `dir`; `shown` is how the summary names it.
fn write_partner_dumps(dir: &Path, shown: &Path, args: &GenerateArgs) -> anyhow::Result<u8> {
    let (from, to) = args.range()?;
    let params = partner::DumpParams {
        seed: args.seed,
        days: ledgerflow::day::range(from, to),
        archives_per_day: args.archives_per_day,
        rows_per_batch: args.rows_per_batch,
        bad_rows: true,
    };
    let summary = partner::write_partner_dumps(dir, &params)?;
    let hostile = partner::hostile_archives(
        &dir.join("hostile"),
        &partner::HostileParams {
            day: from,
            ..Default::default()
        },
    )?;
    println!(
        "generated {} partner archives ({:.1} MB of CSV/NDJSON) in {} and {} hostile ones in {}",
        summary.archives.len(),
        summary.uncompressed_bytes as f64 / 1e6,
        shown.display(),
        hostile.len(),
        shown.join("hostile").display()
    );
    Ok(0)
}

/// Generates one archive of about `--mb` MB of CSV/NDJSON, then runs
/// `ingest` on it as a child process (wall time, CPU time, peak RSS).
pub async fn bench_ingest(args: BenchIngestArgs) -> anyhow::Result<u8> {
    let (_tmp, work) = crate::bench::work_dir(args.dir.as_deref())?;
    // One row of each of the three tables is ~245 bytes.
    let rows = ((args.mb * 1_000_000) / 245 / args.archives).max(1) as usize;
    let day = NaiveDate::from_ymd_opt(2026, 11, 1).context("bench day")?;
    let dumps = work.join("dumps");
    if args.generate_only {
        let started = std::time::Instant::now();
        let summary = partner::write_partner_dumps(
            &dumps,
            &partner::DumpParams {
                seed: 42,
                days: vec![day],
                archives_per_day: args.archives as usize,
                rows_per_batch: rows,
                bad_rows: false,
            },
        )?;
        let mut compressed = 0;
        for archive in &summary.archives {
            if args.gzip_level != partner::ARCHIVE_GZIP_LEVEL {
                partner::recompress(archive, args.gzip_level)?;
            }
            compressed += std::fs::metadata(archive)?.len();
        }
        println!(
            "generated {} archive(s) in {} ({:.1} MB uncompressed, {:.1} MB gzip -{}) in {:.1}s",
            summary.archives.len(),
            dumps.display(),
            summary.uncompressed_bytes as f64 / 1e6,
            compressed as f64 / 1e6,
            args.gzip_level,
            started.elapsed().as_secs_f64()
        );
        std::fs::write(
            work.join("uncompressed_bytes"),
            summary.uncompressed_bytes.to_string(),
        )?;
        return Ok(0);
    }
    let project = work.join("project");
    ledgerflow::project::init(&project)
        .with_context(|| format!("creating the bench project in {}", project.display()))?;
    let config = project.join(ledgerflow::project::CONFIG_FILE);
    let exe = std::env::current_exe().context("locating the ledgerflow executable")?;
    let status = std::process::Command::new(&exe)
        .arg("bench-ingest")
        .arg("--mb")
        .arg(args.mb.to_string())
        .arg("--dir")
        .arg(&work)
        .arg("--gzip-level")
        .arg(args.gzip_level.to_string())
        .arg("--archives")
        .arg(args.archives.to_string())
        .arg("--generate-only")
        .status()
        .context("generating the bench archive")?;
    anyhow::ensure!(status.success(), "generating the bench archive failed");
    let mut compressed = 0;
    for entry in std::fs::read_dir(&dumps).with_context(|| format!("{}", dumps.display()))? {
        let entry = entry?;
        // Only archives: not a recompression's leftover of an earlier run.
        if entry.file_name().to_string_lossy().ends_with(".tar.gz") {
            compressed += entry.metadata()?.len();
        }
    }
    let uncompressed: u64 = std::fs::read_to_string(work.join("uncompressed_bytes"))?
        .trim()
        .parse()?;
    let argv = crate::bench::argv(&config, &format!("ingest {} --json", dumps.display()));
    let m = crate::bench::child(&exe, &work, "ingest", &[], &argv).await?;
    let mb = uncompressed as f64 / 1e6;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // "Per core with every core busy": the wall rate shared by the cores,
    // which counts a core left idle against the throughput; the rate per
    // CPU-second does not.
    println!("| archives | MB (uncompressed) | gzip MB | wall s | CPU s | MB/s (wall) | MB/s per core (wall / cores) | MB/s per CPU-second | cores | peak RSS MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {mb:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {cores} | {:.0} |",
        args.archives,
        compressed as f64 / 1e6,
        m.wall_s,
        m.cpu_s,
        mb / m.wall_s,
        mb / m.wall_s / cores as f64,
        mb / m.cpu_s,
        m.rss_mib
    );
    Ok(0)
}
