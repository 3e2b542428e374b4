//! The partition grid: for each (model, day) of a window, the state its
//! ledger rows and inputs give it.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use crate::catalog::unified::Layer;
use crate::error::Result;
use crate::ledger::{RunFilter, RunRecord, RunState};
use crate::models::Grain;
use crate::runner::Runner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CellState {
    Success,
    /// Loaded, but its inputs changed since (their fingerprint differs
    /// from the last success's).
    Stale,
    Failed,
    Running,
    Skipped,
    /// No run of it in the ledger.
    Missing,
    /// A day after today.
    Future,
}

impl CellState {
    pub fn as_str(self) -> &'static str {
        match self {
            CellState::Success => "success",
            CellState::Stale => "stale",
            CellState::Failed => "failed",
            CellState::Running => "running",
            CellState::Skipped => "skipped",
            CellState::Missing => "missing",
            CellState::Future => "future",
        }
    }

    pub const ALL: [CellState; 7] = [
        CellState::Success,
        CellState::Stale,
        CellState::Failed,
        CellState::Running,
        CellState::Skipped,
        CellState::Missing,
        CellState::Future,
    ];
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub state: CellState,
    /// Ledger rows of (model, day).
    pub attempts: usize,
    /// The newest row's error, if it has one.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Grid {
    pub days: Vec<NaiveDate>,
    /// Day models in dependency order, each with a cell per day.
    pub rows: Vec<(String, Vec<Cell>)>,
    pub counts: BTreeMap<CellState, usize>,
}

/// The state of (model, day) from its ledger rows, newest first.
pub fn state_of(rows: &[&RunRecord]) -> CellState {
    let Some(newest) = rows.first() else {
        return CellState::Missing;
    };
    if rows
        .iter()
        .any(|r| matches!(r.state, RunState::Pending | RunState::Running))
    {
        return CellState::Running;
    }
    match newest.state {
        RunState::Success | RunState::Superseded => CellState::Success,
        RunState::Failed => CellState::Failed,
        // Skipped as unchanged keeps the last success; skipped for a
        // failed upstream or a source down is not loaded.
        RunState::Skipped | RunState::Pending | RunState::Running => {
            if rows.iter().any(|r| r.state == RunState::Success) {
                CellState::Success
            } else {
                CellState::Skipped
            }
        }
    }
}

/// The grid of `runner`'s day models over `from..=to`; with `stale`, each
/// loaded day's inputs are planned and fingerprinted to tell stale cells.
pub async fn grid(runner: &Runner, from: NaiveDate, to: NaiveDate, stale: bool) -> Result<Grid> {
    let runs = runner
        .sink
        .ledger_list(&RunFilter {
            from: Some(from),
            to: Some(to),
            ..Default::default()
        })
        .await?;
    let mut by_cell: BTreeMap<(&str, NaiveDate), Vec<&RunRecord>> = BTreeMap::new();
    for r in &runs {
        by_cell
            .entry((r.model.as_str(), r.day))
            .or_default()
            .push(r);
    }
    let days = crate::day::range(from, to);
    let today = crate::day::today();
    let models: Vec<_> = runner
        .models
        .iter()
        .filter(|m| m.grain == Grain::Day)
        .collect();
    let mut rows = Vec::new();
    let mut counts: BTreeMap<CellState, usize> = BTreeMap::new();
    let mut plans = BTreeMap::new();
    for model in &models {
        let mut cells = Vec::with_capacity(days.len());
        for &day in &days {
            let rows_of = by_cell
                .get(&(model.name.as_str(), day))
                .cloned()
                .unwrap_or_default();
            let mut state = if day > today && rows_of.is_empty() {
                CellState::Future
            } else {
                state_of(&rows_of)
            };
            if stale && state == CellState::Success {
                if let std::collections::btree_map::Entry::Vacant(e) = plans.entry(day) {
                    // A day that cannot be planned now is not called stale.
                    e.insert(runner.catalog.plan_day(day).await.ok());
                }
                if let Some(plan) = plans[&day].as_ref().filter(|p| p.layer != Layer::None) {
                    let now = runner.fingerprint(model, plan);
                    let last = runner
                        .sink
                        .last_success_fingerprint(&model.name, day)
                        .await?;
                    if last.is_some_and(|f| f != now) {
                        state = CellState::Stale;
                    }
                }
            }
            *counts.entry(state).or_default() += 1;
            cells.push(Cell {
                state,
                attempts: rows_of.len(),
                error: rows_of.first().and_then(|r| r.error.clone()),
            });
        }
        rows.push((model.name.clone(), cells));
    }
    Ok(Grid { days, rows, counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: RunState) -> RunRecord {
        RunRecord {
            id: 1,
            model: "m".into(),
            day: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            state,
            attempt: 1,
            trigger: "run".into(),
            started_at: None,
            finished_at: None,
            rows_written: None,
            fingerprint: None,
            source_layers: None,
            error: None,
            owner: None,
        }
    }

    #[test]
    fn a_cell_takes_its_state_from_the_newest_rows() {
        let (s, f, k, r) = (
            row(RunState::Success),
            row(RunState::Failed),
            row(RunState::Skipped),
            row(RunState::Running),
        );
        assert_eq!(state_of(&[]), CellState::Missing);
        assert_eq!(state_of(&[&f, &s]), CellState::Failed);
        assert_eq!(state_of(&[&s, &f]), CellState::Success);
        // Skipped as unchanged after a success: still loaded.
        assert_eq!(state_of(&[&k, &s]), CellState::Success);
        assert_eq!(state_of(&[&k]), CellState::Skipped);
        assert_eq!(state_of(&[&r, &s]), CellState::Running);
        assert_eq!(state_of(&[&row(RunState::Superseded)]), CellState::Success);
    }
}
