//! One function per subcommand: load config, call the library, print.

use std::path::Path;

use anyhow::Context;
use ledgerflow::catalog::batch::BatchLayer;
use ledgerflow::catalog::speed::SpeedLayer;
use ledgerflow::config::Config;
use ledgerflow::generate::{self, chain};
use ledgerflow::ledger::{RunFilter, RunState};
use ledgerflow::runner::{RunOptions, RunReport, RunStatus, Runner};
use ledgerflow::{day, project};

use crate::cli::{BackfillArgs, CompactArgs, GenerateArgs, RunArgs, RunSelection, RunsArgs};
use crate::progress;

pub fn init(dir: &Path) -> anyhow::Result<u8> {
    project::init(dir)?;
    println!(
        "created {}: edit ledgerflow.toml, then `cd {} && ledgerflow generate --from D --to D` and `ledgerflow run --date D`",
        dir.display(),
        dir.display()
    );
    Ok(0)
}

pub(crate) fn load(config: &Path) -> anyhow::Result<Config> {
    let config = Config::load(config)?;
    crate::allocator::apply(&config);
    Ok(config)
}

pub async fn generate(config: &Path, args: GenerateArgs) -> anyhow::Result<u8> {
    if let Some(dir) = &args.partner_dumps {
        return crate::ingest_cmd::partner_dumps(config, dir, &args).await;
    }
    let mut config = load(config)?;
    if let Some(url) = &args.speed {
        config.speed.url = url.clone().into();
        config.validate()?;
    }
    if args.live {
        return crate::realtime_cmd::generate_live(&config, &args).await;
    }
    let (from, to) = args.range()?;
    if !(args.scale > 0.0 && args.scale <= 100.0) {
        return Err(ledgerflow::Error::Usage("--scale must be in (0, 100]".into()).into());
    }
    if !(0.0..=0.5).contains(&args.reorg_rate) {
        return Err(ledgerflow::Error::Usage("--reorg-rate must be in [0, 0.5]".into()).into());
    }
    if args.blocks_per_file == 0 {
        return Err(ledgerflow::Error::Usage("--blocks-per-file must be at least 1".into()).into());
    }
    let batch = BatchLayer::open(&config)?;
    let speed = SpeedLayer::open(&config)?;
    let params = chain::GenParams {
        seed: args.seed,
        scale: args.scale,
        reorg_rate: args.reorg_rate,
        reorg_depth: args.reorg_depth,
        boundary_forks: args.boundary_forks,
    };
    let days = day::range(from, to);
    let speed_days = if args.speed_days.is_empty() {
        vec![day::today()]
    } else {
        args.speed_days.clone()
    };
    let per_day = chain::blocks_per_day(args.scale) as u64;
    let bar = progress::bar(per_day * days.len() as u64, "generating blocks");
    let mut total = generate::GenerateSummary::default();
    for (i, d) in days.iter().enumerate() {
        let offset = per_day * i as u64;
        let tick = |n: u64| bar.set_position(offset + n.min(per_day));
        let mut parts = Vec::new();
        if speed_days.contains(d) {
            parts.push(
                generate::write_speed_day(&speed, &params, *d, args.blocks_per_file, &tick).await?,
            );
        }
        if !speed_days.contains(d) || args.also_batch {
            parts.push(generate::write_batch_day(&batch, &params, *d, &tick).await?);
        }
        for s in parts {
            total.blocks += s.blocks;
            total.orphaned_blocks += s.orphaned_blocks;
            total.transactions += s.transactions;
            total.files += s.files;
        }
        total.days += 1;
        tracing::info!(day = %d, layer = if speed_days.contains(d) { "speed" } else { "batch" }, "generated");
    }
    bar.finish_and_clear();
    println!(
        "generated {} days: {} blocks ({} orphaned), {} transactions, {} files",
        total.days, total.blocks, total.orphaned_blocks, total.transactions, total.files
    );
    Ok(0)
}

fn options(select: &RunSelection, trigger: &str) -> RunOptions {
    RunOptions {
        force: select.force,
        allow_empty: select.allow_empty,
        trigger: trigger.into(),
        attempt: 1,
        turns: None,
    }
}

fn print_report(r: &RunReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("reports serialize"));
        return;
    }
    let what = match &r.status {
        RunStatus::Success {
            rows,
            compute_s,
            write_s,
        } => {
            format!("success  {rows} rows (compute {compute_s:.2}s, write {write_s:.2}s)")
        }
        RunStatus::Skipped { reason } => format!("skipped  {reason}"),
        RunStatus::UpstreamFailed { upstream } => {
            format!("skipped  upstream model `{upstream}` failed")
        }
        RunStatus::Failed { error, retry } => format!("FAILED   ({retry:?}) {error}"),
        RunStatus::Unavailable { reason } => format!("skipped  {reason}"),
        RunStatus::Superseded { reason } => format!("superseded  {reason}"),
    };
    println!(
        "{} {:<24} {:<6} {:>7.2}s  {what}",
        r.day,
        r.model,
        r.layer.as_str(),
        r.seconds
    );
}

/// 1 if any run failed, else 99 if any was skipped because the speed layer
/// was down (Airflow's "skipped"), else 0.
fn exit_code(reports: &[RunReport]) -> u8 {
    let any = |f: fn(&RunStatus) -> bool| reports.iter().any(|r| f(&r.status));
    if any(|s| matches!(s, RunStatus::Failed { .. })) {
        1
    } else if any(|s| matches!(s, RunStatus::Unavailable { .. })) {
        99
    } else {
        0
    }
}

pub async fn run(config: &Path, args: RunArgs) -> anyhow::Result<u8> {
    let runner = Runner::open(load(config)?).await?;
    let models = runner.select(&args.select.models)?;
    let reports = runner
        .run_day(args.date, &models, &options(&args.select, "run"))
        .await
        .with_context(|| format!("run for {}", args.date))?;
    for r in &reports {
        print_report(r, args.select.json);
    }
    Ok(exit_code(&reports))
}

pub async fn backfill(config: &Path, args: BackfillArgs) -> anyhow::Result<u8> {
    if args.to < args.from {
        return Err(ledgerflow::Error::Usage("--to is before --from".into()).into());
    }
    let runner = Runner::open(load(config)?).await?;
    let models = runner.select(&args.select.models)?;
    let days = day::range(args.from, args.to);
    let opts = options(&args.select, "backfill");
    if args.dry_run {
        let plan = runner.preview(&days, &models, &opts).await?;
        for p in &plan {
            if args.select.json {
                println!("{}", serde_json::to_string(p)?);
            } else {
                println!(
                    "{} {:<24} {:<6} {:<40} {:>5} files  {}",
                    p.day,
                    p.model,
                    p.layer.as_str(),
                    p.source_layers,
                    p.files,
                    p.action
                );
            }
        }
        return Ok(0);
    }
    let bar = progress::bar(days.len() as u64, "backfill days");
    let mut pace = progress::DayPace::new(days.len());
    let all = runner
        .backfill(&days, &models, &opts, |day, reports| {
            bar.suspend(|| {
                reports
                    .iter()
                    .for_each(|r| print_report(r, args.select.json))
            });
            let (seconds, finish) = pace.day_over();
            let finish = finish.format("%H:%M:%S");
            tracing::info!(target: "ledgerflow::backfill", %day, seconds, %finish, "backfill day over");
            bar.set_message(format!("last day {seconds:.1}s, done ~{finish}"));
            bar.inc(1);
        })
        .await
        .map_err(|(d, e)| anyhow::Error::new(e).context(format!("backfill at {d}")))?;
    bar.finish_and_clear();
    Ok(exit_code(&all))
}

pub async fn runs(config: &Path, args: RunsArgs) -> anyhow::Result<u8> {
    let config = load(config)?;
    let sink = ledgerflow::sinks::open(&config).await?;
    let state = match args.state.as_deref() {
        None => None,
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            ledgerflow::Error::Usage(format!(
                "--state {s}: expected pending, running, success, failed, skipped or superseded"
            ))
        })?),
    };
    let rows = sink
        .ledger_list(&RunFilter {
            model: args.model,
            state,
            from: args.from,
            to: args.to,
            limit: Some(i64::from(args.limit)),
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:>6} {:<24} {:<10} {:<8} {:>3} {:<16} {:<20} {:>8} {:>9}  {:<34} error",
        "id", "model", "day", "state", "try", "trigger", "started", "secs", "rows", "layers"
    );
    for r in rows {
        let secs = match (r.started_at, r.finished_at) {
            (Some(s), Some(f)) => format!("{:.2}", (f - s).num_milliseconds() as f64 / 1000.0),
            _ => "-".into(),
        };
        let mut error = r.error.unwrap_or_default().replace('\n', " ");
        if error.len() > 100 {
            error.truncate(error.floor_char_boundary(100));
            error.push('…');
        }
        println!(
            "{:>6} {:<24} {:<10} {:<8} {:>3} {:<16} {:<20} {:>8} {:>9}  {:<34} {}",
            r.id,
            r.model,
            r.day,
            r.state.as_str(),
            r.attempt,
            r.trigger,
            r.started_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            secs,
            r.rows_written.map(|n| n.to_string()).unwrap_or_default(),
            r.source_layers.unwrap_or_default(),
            error
        );
    }
    Ok(0)
}

pub async fn compact(config: &Path, args: CompactArgs) -> anyhow::Result<u8> {
    let config = load(config)?;
    let catalog = ledgerflow::catalog::unified::Catalog::open(&config)?;
    let opts = ledgerflow::compact::CompactOptions {
        force: args.force,
        remove_landing: args.remove_landing,
        today: None,
    };
    let report = ledgerflow::compact::compact_day(&config, &catalog, args.date, &opts)
        .await
        .with_context(|| format!("compact {}", args.date))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} {}: {} blocks, {} transactions ({} orphaned blocks dropped; {} landing files, {} removed)",
            report.day,
            report.action,
            report.blocks,
            report.transactions,
            report.orphaned_blocks,
            report.landing_files,
            report.removed_landing_files
        );
    }
    Ok(0)
}
