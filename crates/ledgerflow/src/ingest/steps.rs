//! The run's steps in the run ledger, under the names of the user's old
//! pipeline: `ingest:set_date`, `ingest:wait_for_sources`, `ingest:extract`,
//! `ingest:merge:<table>` (one per table and day), `ingest:summary`,
//! `ingest:check`. Recorded after the run from its report, so `ledgerflow
//! runs --model ingest:merge:transfers` shows each table's history; the
//! per-table retry itself (`--retry-failed`) works from the manifest, which
//! commits with the data. A load whose steps never reached the ledger (a
//! crash, the database down) is recorded by the next ingest from its
//! manifest record ([`unrecorded`]). Ingest writes no ledger row itself:
//! the caller records these steps in the serving database.

use super::manifest::{ArchiveState, Manifest};
use super::summary::{ArchiveAction, IngestReport, TableState};
use crate::catalog::meta::MetaDir;
use crate::checks::CheckResult;
use crate::error::Result;
use crate::ledger::{RunState, Step};

/// The ledger name of a table's merge step (and of its row checks in
/// `ledgerflow_checks`).
fn merge_step(table: &str) -> String {
    format!("ingest:merge:{table}")
}

/// The run's steps, to record in the ledger.
pub fn steps(report: &IngestReport) -> Vec<Step> {
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
            model: merge_step(&t.table),
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

/// The results of `[ingest.checks]` in `report`, for `ledgerflow_checks`:
/// one per check and (table, day), under the table's merge step (`ids`:
/// the ledger ids of `steps`, as recorded). A failed table keeps only the
/// checks that failed: the others judged a part of its rows.
pub fn check_results(report: &IngestReport, steps: &[Step], ids: &[i64]) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for t in &report.tables {
        let model = merge_step(&t.table);
        let run_id = steps
            .iter()
            .zip(ids)
            .find(|(s, _)| s.model == model && s.day == t.day)
            .map(|(_, id)| *id);
        for c in &t.checks {
            let mut r = CheckResult::pass(run_id, &model, t.day, &c.check, c.severity);
            if c.failing_rows > 0 {
                r.status = c.severity.failed();
            } else if t.state == TableState::Failed {
                continue;
            }
            r.observed = Some(format!("{} of {} rows", c.failing_rows, c.rows_checked));
            r.failing_rows = c.failing_rows as i64;
            r.sample = (!c.sample.is_empty()).then(|| c.sample.join(", "));
            r.checked_at = report.finished_at;
            out.push(r);
        }
    }
    out
}

/// The archives `report` loaded (wholly or partly): what recording its
/// steps accounts for.
pub fn loaded(report: &IngestReport) -> Vec<String> {
    report
        .archives
        .iter()
        .filter(|a| matches!(a.action, ArchiveAction::Loaded | ArchiveAction::Partial))
        .map(|a| a.name.clone())
        .collect()
}

/// Marks the manifest records of `names` (in the batch layer's `docs`) as
/// recorded in the ledger.
pub fn mark_recorded(docs: &MetaDir, names: &[String]) -> Result<()> {
    let manifest = Manifest::new(docs.clone());
    for name in names {
        if let Some(mut rec) = manifest.get(name)? {
            if !rec.ledger_recorded && rec.state != ArchiveState::Committing {
                rec.ledger_recorded = true;
                manifest.put(&rec)?;
            }
        }
    }
    Ok(())
}

/// The loads whose steps never reached the ledger (the process died
/// between the commit and the ledger, or the serving database was down),
/// each with one `ingest:merge:<table>` step per partition, from its
/// manifest record. Records younger than `settle` (an ingest running beside
/// this one may be about to record them) and the archives in `this_run`
/// are left.
pub fn unrecorded(
    docs: &MetaDir,
    settle: std::time::Duration,
    this_run: &[String],
) -> Result<Vec<(String, Vec<Step>)>> {
    let manifest = Manifest::new(docs.clone());
    let settle = chrono::Duration::from_std(settle).unwrap_or(chrono::Duration::MAX);
    let now = chrono::Utc::now();
    let settled_before = now.checked_sub_signed(settle).unwrap_or(now);
    let mut out = Vec::new();
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
        let mut steps: Vec<Step> = rec
            .partitions
            .iter()
            .filter(|p| p.rows > 0 || !rec.failed_tables.contains(&p.table))
            .map(|p| Step {
                model: merge_step(&p.table),
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
            steps.push(Step {
                model: merge_step(table),
                day,
                state: RunState::Failed,
                rows: None,
                error: Some(format!("failed ({note})")),
            });
        }
        out.push((rec.name, steps));
    }
    Ok(out)
}
