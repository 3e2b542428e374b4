//! The run ledger (`ledgerflow_runs` in the serving database): one row per
//! attempt of a (model, day) run. The sink stores it, so the row that marks
//! a run successful commits in the same transaction as the run's data.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

pub const TABLE: &str = "ledgerflow_runs";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Success,
    Failed,
    Skipped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RunState::Pending,
            "running" => RunState::Running,
            "success" => RunState::Success,
            "failed" => RunState::Failed,
            "skipped" => RunState::Skipped,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ledger row as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub model: String,
    pub day: NaiveDate,
    pub state: RunState,
    pub attempt: i32,
    /// What started it: `run`, `backfill`, `schedule`.
    pub trigger: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub rows_written: Option<i64>,
    pub fingerprint: Option<String>,
    /// Which layer each input table came from, e.g. `blocks=batch,transactions=batch`.
    pub source_layers: Option<String>,
    pub error: Option<String>,
}

/// A row about to be inserted.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub model: String,
    pub day: NaiveDate,
    pub state: RunState,
    pub attempt: i32,
    pub trigger: String,
    pub fingerprint: Option<String>,
    pub source_layers: Option<String>,
    pub error: Option<String>,
}

/// The end of a run: how a row is closed.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub state: RunState,
    pub rows_written: Option<i64>,
    pub error: Option<String>,
    /// Set when known; `None` keeps the stored value.
    pub fingerprint: Option<String>,
    /// Set when known; `None` keeps the stored value.
    pub source_layers: Option<String>,
}

impl RunOutcome {
    pub fn new(state: RunState) -> Self {
        Self {
            state,
            rows_written: None,
            error: None,
            fingerprint: None,
            source_layers: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub model: Option<String>,
    pub state: Option<RunState>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub limit: Option<i64>,
}
