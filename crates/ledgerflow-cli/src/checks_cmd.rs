//! `check`: a day's checks on demand; `checks`: the check history from the
//! serving database.

use std::path::Path;

use chrono::NaiveDate;
use ledgerflow::checks::{CheckFilter, CheckResult};
use ledgerflow::runner::{CheckOptions, Runner};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The day to check (or --from/--to).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub date: Option<NaiveDate>,
    #[arg(long, requires = "to")]
    pub from: Option<NaiveDate>,
    #[arg(long, requires = "from")]
    pub to: Option<NaiveDate>,
    /// Only these models (repeatable); default all day models.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Also compare each recomputed day with the serving table's rows.
    #[arg(long)]
    pub deep: bool,
    #[arg(long)]
    pub json: bool,
}

/// Recomputes each day's models (writing nothing but check results) and
/// evaluates their checks: exit 1 when one of severity `error` failed.
pub async fn check(config: &Path, args: CheckArgs) -> anyhow::Result<u8> {
    let (from, to) = match (args.date, args.from, args.to) {
        (Some(d), None, None) => (d, d),
        (None, Some(f), Some(t)) if f <= t => (f, t),
        (None, Some(_), Some(_)) => {
            return Err(ledgerflow::Error::Usage("--from is after --to".into()).into())
        }
        _ => return Err(ledgerflow::Error::Usage("give --date, or --from and --to".into()).into()),
    };
    let runner = Runner::open(crate::commands::load(config)?).await?;
    let models = runner.select(&args.models)?;
    let opts = CheckOptions { deep: args.deep };
    let mut all = Vec::new();
    for day in ledgerflow::day::range(from, to) {
        let results = runner.check_day(day, &models, opts).await?;
        if !args.json {
            print_results(&results, all.is_empty());
        }
        all.extend(results);
    }
    if let Some(fresh) = runner.freshness().await? {
        if !args.json {
            print_results(std::slice::from_ref(&fresh), all.is_empty());
        }
        all.push(fresh);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(u8::from(all.iter().any(CheckResult::blocks)))
}

#[derive(Debug, clap::Args)]
pub struct ChecksArgs {
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub from: Option<NaiveDate>,
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Only results that did not pass (warn, fail, error).
    #[arg(long)]
    pub failed: bool,
    /// At most this many results (newest first).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

pub async fn checks(config: &Path, args: ChecksArgs) -> anyhow::Result<u8> {
    let config = crate::commands::load(config)?;
    let sink = ledgerflow::sinks::open(&config).await?;
    let results = sink
        .checks_list(&CheckFilter {
            model: args.model,
            from: args.from,
            to: args.to,
            failed: args.failed,
            limit: Some(i64::from(args.limit)),
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(0);
    }
    print_results(&results, true);
    Ok(0)
}

fn print_results(results: &[CheckResult], header: bool) {
    if header {
        println!(
            "{:<10} {:<24} {:<6} {:<6} {:>8} {:<19}  check",
            "day", "model", "status", "sev", "failing", "checked"
        );
    }
    for r in results {
        let mut text = r.summary();
        if text.len() > 160 {
            text.truncate(text.floor_char_boundary(160));
            text.push('…');
        }
        println!(
            "{:<10} {:<24} {:<6} {:<6} {:>8} {:<19}  {}",
            r.day,
            r.model,
            r.status.as_str(),
            r.severity.as_str(),
            r.failing_rows,
            r.checked_at.format("%Y-%m-%d %H:%M:%S"),
            text
        );
    }
}
