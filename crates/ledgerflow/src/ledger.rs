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
    /// Computed, but a run that read the inputs later committed first: its
    /// output was dropped, never written over the newer one.
    Superseded,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
            RunState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RunState::Pending,
            "running" => RunState::Running,
            "success" => RunState::Success,
            "failed" => RunState::Failed,
            "skipped" => RunState::Skipped,
            "superseded" => RunState::Superseded,
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
    /// `host:pid` of the process that ran it, to tell a live run from one
    /// whose process died.
    pub owner: Option<String>,
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
    pub owner: Option<String>,
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

/// `host:pid` of this process.
pub fn this_process() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether `owner` names a process on this host that no longer exists. A
/// process elsewhere cannot be checked from here and counts as alive.
pub fn owner_is_gone(owner: &str) -> bool {
    let Some((host, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return false;
    };
    if host != hostname() || pid <= 0 {
        return false;
    }
    // Signal 0 checks existence; EPERM means it exists under another user.
    // SAFETY: kill with signal 0 sends nothing.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_local_process_is_gone_a_live_or_remote_one_is_not() {
        assert!(!owner_is_gone(&this_process()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(owner_is_gone(&format!("{}:{pid}", hostname())));
        assert!(!owner_is_gone(&format!("some-other-host:{pid}")));
        assert!(!owner_is_gone("garbage"));
    }
}
