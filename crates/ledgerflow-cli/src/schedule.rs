//! `schedule` and `status`: signals in, the library's scheduler, a report out.

use std::path::Path;

use ledgerflow::schedule::{self, status, ScheduleOptions};
use tokio::sync::watch;

use crate::cli::{ScheduleArgs, StatusArgs};

/// SIGTERM or SIGINT turns the channel true: the scheduler stops starting
/// runs and gives running ones the grace period.
fn shutdown_on_signals() -> anyhow::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    crate::signals::on_shutdown("shutting down", move || {
        let _ = tx.send(true);
    })?;
    Ok(rx)
}

pub async fn schedule(config: &Path, args: ScheduleArgs) -> anyhow::Result<u8> {
    let config = crate::commands::load(config)?;
    crate::serve::spawn_metrics(args.metrics_listen, &config).await?;
    let shutdown = shutdown_on_signals()?;
    let summary = schedule::serve(
        config,
        ScheduleOptions {
            once: args.once,
            standby: args.standby,
        },
        shutdown,
    )
    .await?;
    tracing::info!(
        succeeded = summary.succeeded,
        failed = summary.failed,
        "scheduler stopped"
    );
    Ok(if args.once && summary.failed > 0 {
        1
    } else {
        0
    })
}

pub async fn status(config: &Path, args: StatusArgs) -> anyhow::Result<u8> {
    let config = crate::commands::load(config)?;
    let s = status::status(&config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    let t = |d: Option<chrono::DateTime<chrono::Utc>>| {
        d.map_or("-".into(), |d| d.format("%Y-%m-%d %H:%M:%S").to_string())
    };
    println!(
        "now {}  leader: {}",
        t(Some(s.now)),
        s.leader.as_deref().unwrap_or("none running")
    );
    if s.jobs.is_empty() {
        println!("no [[jobs]] configured");
    }
    for j in &s.jobs {
        println!();
        println!("job {} ({} {})", j.job, j.cron, j.timezone);
        println!(
            "  next tick   {} -> day {}",
            t(j.next_tick),
            j.next_day.map_or("-".into(), |d| d.to_string())
        );
        for r in &j.running {
            println!(
                "  running     day {} (tick {}, attempt {})",
                r.day,
                t(Some(r.tick)),
                r.attempts
            );
        }
        for d in &j.due {
            println!(
                "  due         day {} (tick {}, {} attempt(s) so far{})",
                d.day,
                t(Some(d.tick)),
                d.attempts,
                d.next_attempt_at
                    .map(|at| format!(", next at {}", t(Some(at))))
                    .unwrap_or_default()
            );
        }
        if let Some(last) = &j.last_tick {
            println!(
                "  last tick   day {} {} (attempts {}){}",
                last.day,
                last.state.as_str(),
                last.attempts,
                last.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        for m in &j.models {
            println!(
                "  model {:<24} last success day {:<10} lag {} day(s)",
                m.model,
                m.last_success_day.map_or("-".into(), |d| d.to_string()),
                m.lag_days.map_or("-".into(), |l| l.to_string())
            );
        }
        for a in &j.sla_misses {
            println!(
                "  SLA MISSED  day {} deadline {} (was {}){}",
                a.day,
                t(Some(a.deadline)),
                a.state,
                match (&a.delivered_at, &a.delivery_error) {
                    (Some(_), _) => ", webhook delivered".to_string(),
                    (None, Some(e)) => format!(", webhook failed: {e}"),
                    (None, None) if a.webhook.is_some() => ", webhook pending".to_string(),
                    _ => String::new(),
                }
            );
        }
        for g in &j.gaps {
            println!(
                "  GAP         {}{} interval(s) not run: days {} .. {} (repair: ledgerflow backfill --from {} --to {})",
                if g.gap.capped { "at least " } else { "" },
                g.gap.ticks,
                g.gap.first_day,
                g.gap.last_day,
                g.gap.first_day,
                g.gap.last_day
            );
        }
    }
    if !s.failed_checks.is_empty() {
        println!();
        println!(
            "checks that did not pass (latest {}):",
            s.failed_checks.len()
        );
        for c in &s.failed_checks {
            println!("  {} {:<24} {}", c.day, c.model, c.summary());
        }
    }
    Ok(0)
}
