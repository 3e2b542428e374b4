//! The run's steps in the run ledger, under the names of the user's old
//! pipeline: `ingest:set_date`, `ingest:wait_for_sources`, `ingest:extract`,
//! `ingest:merge:<table>` (one per table and day), `ingest:summary`,
//! `ingest:check`. Recorded after the run from its report, so `ledgerflow
//! runs --model ingest:merge:transfers` shows each table's history; the
//! per-table retry itself (`--retry-failed`) works from the manifest, which
//! commits with the data. A load whose steps never reached the ledger (a
//! crash, the database down) is recorded by the next ingest from its
//! manifest record ([`reconcile`]).

use chrono::NaiveDate;

use super::manifest::{ArchiveState, Manifest};
use super::summary::{ArchiveAction, IngestReport, TableState};
use crate::error::Result;
use crate::ledger::{this_process, NewRun, RunFilter, RunOutcome, RunState};
use crate::sinks::Sink;

struct Step {
    model: String,
    day: NaiveDate,
    state: RunState,
    rows: Option<i64>,
    error: Option<String>,
}

fn steps(report: &IngestReport) -> Vec<Step> {
    let day = report.date.unwrap_or_else(crate::day::today);
    let step = |model: &str, state: RunState, rows: Option<i64>, error: Option<String>| Step {
        model: format!("ingest:{model}"),
        day,
        state,
        rows,
        error,
    };
    let mut out = vec![step("set_date", RunState::Success, None, None)];
    if let Some(r) = &report.readiness {
        out.push(if report.skipped {
            step(
                "wait_for_sources",
                RunState::Skipped,
                None,
                Some(format!("not ready: {}", r.missing.join("; "))),
            )
        } else {
            step("wait_for_sources", RunState::Success, None, None)
        });
    }
    if report.skipped {
        return out;
    }
    let rejected: Vec<String> = report
        .archives
        .iter()
        .filter(|a| a.action == ArchiveAction::Rejected)
        .map(|a| format!("{}: {}", a.name, a.reason.clone().unwrap_or_default()))
        .collect();
    let loaded = report
        .archives
        .iter()
        .filter(|a| matches!(a.action, ArchiveAction::Loaded | ArchiveAction::Partial))
        .count() as i64;
    out.push(if rejected.is_empty() {
        step("extract", RunState::Success, Some(loaded), None)
    } else {
        step(
            "extract",
            RunState::Failed,
            Some(loaded),
            Some(format!("rejected: {}", rejected.join("; "))),
        )
    });
    for t in &report.tables {
        out.push(Step {
            model: format!("ingest:merge:{}", t.table),
            day: t.day,
            state: match t.state {
                TableState::Committed => RunState::Success,
                TableState::Failed => RunState::Failed,
            },
            rows: Some(t.rows_written as i64),
            error: t.error.clone(),
        });
    }
    let written: u64 = report.tables.iter().map(|t| t.rows_written).sum();
    out.push(step(
        "summary",
        RunState::Success,
        Some(written as i64),
        None,
    ));
    out.push(if report.reconciled {
        step("check", RunState::Success, None, None)
    } else {
        step(
            "check",
            RunState::Failed,
            None,
            Some(
                "reconciliation failed: read != written + quarantined, or footers != written"
                    .into(),
            ),
        )
    });
    out
}

/// Writes one ledger row per step of `report`, then marks its archives'
/// manifest records (under `batch_root`) as recorded.
pub async fn record(
    sink: &dyn Sink,
    report: &IngestReport,
    trigger: &str,
    batch_root: &std::path::Path,
) -> Result<()> {
    write(sink, steps(report), trigger).await?;
    let manifest = Manifest::new(batch_root);
    for a in &report.archives {
        if matches!(a.action, ArchiveAction::Loaded | ArchiveAction::Partial) {
            mark_recorded(&manifest, &a.name)?;
        }
    }
    Ok(())
}

fn mark_recorded(manifest: &Manifest, name: &str) -> Result<()> {
    if let Some(mut rec) = manifest.get(name)? {
        if !rec.ledger_recorded && rec.state != ArchiveState::Committing {
            rec.ledger_recorded = true;
            manifest.put(&rec)?;
        }
    }
    Ok(())
}

/// Records the loads whose steps never reached the ledger (the process
/// died between the commit and the ledger, or the serving database was
/// down): one `ingest:merge:<table>` row per partition of each such
/// archive, from its manifest record. Records younger than `settle` (an
/// ingest running beside this one may be about to record them) and the
/// archives named in `this_run` are left. Returns how many archives.
pub async fn reconcile(
    sink: &dyn Sink,
    batch_root: &std::path::Path,
    settle: std::time::Duration,
    this_run: &[String],
) -> Result<usize> {
    let manifest = Manifest::new(batch_root);
    let settled_before =
        chrono::Utc::now() - chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::MAX);
    let mut done = 0;
    for rec in manifest.all()? {
        if rec.ledger_recorded
            || rec.state == ArchiveState::Committing
            || rec.updated_at > settled_before
            || this_run.contains(&rec.name)
        {
            continue;
        }
        let note = format!(
            "recorded from the manifest of {} after an ingest that did not reach the ledger",
            rec.name
        );
        let mut out: Vec<Step> = rec
            .partitions
            .iter()
            .filter(|p| p.rows > 0 || !rec.failed_tables.contains(&p.table))
            .map(|p| Step {
                model: format!("ingest:merge:{}", p.table),
                day: p.day,
                state: RunState::Success,
                rows: Some(p.rows as i64),
                error: Some(note.clone()),
            })
            .collect();
        let day = rec
            .partitions
            .first()
            .map_or_else(crate::day::today, |p| p.day);
        for table in &rec.failed_tables {
            out.push(Step {
                model: format!("ingest:merge:{table}"),
                day,
                state: RunState::Failed,
                rows: None,
                error: Some(format!("failed ({note})")),
            });
        }
        write(sink, out, "reconcile").await?;
        mark_recorded(&manifest, &rec.name)?;
        done += 1;
    }
    Ok(done)
}

async fn write(sink: &dyn Sink, steps: Vec<Step>, trigger: &str) -> Result<()> {
    for s in steps {
        let previous = sink
            .ledger_list(&RunFilter {
                model: Some(s.model.clone()),
                from: Some(s.day),
                to: Some(s.day),
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        let id = sink
            .ledger_insert(&NewRun {
                model: s.model.clone(),
                day: s.day,
                state: RunState::Running,
                attempt: previous.first().map_or(1, |r| r.attempt + 1),
                trigger: trigger.to_string(),
                fingerprint: None,
                source_layers: None,
                error: None,
                owner: Some(this_process()),
            })
            .await?;
        let mut outcome = RunOutcome::new(s.state);
        outcome.rows_written = s.rows;
        outcome.error = s.error;
        sink.ledger_update(id, &outcome).await?;
    }
    Ok(())
}
