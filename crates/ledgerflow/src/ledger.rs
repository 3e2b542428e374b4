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

/// A step already over (ingest's steps), recorded as one closed row.
#[derive(Debug, Clone)]
pub struct Step {
    pub model: String,
    pub day: NaiveDate,
    pub state: RunState,
    pub rows: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub model: Option<String>,
    pub state: Option<RunState>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub limit: Option<i64>,
}

/// Who runs a ledger row: `host:pid:start:boot:pidns`. The process start
/// time (clock ticks since boot) tells a reused PID from the original; the
/// boot id and PID namespace tell whether this host can check the PID at
/// all (another machine or container with the same hostname cannot be).
pub fn this_process() -> String {
    static ME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id();
        format!(
            "{}:{pid}:{}:{}:{}",
            hostname(),
            start_ticks(&pid.to_string()).unwrap_or(0),
            boot_id(),
            pid_namespace()
        )
    })
    .clone()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The first 8 hex digits of this boot's id.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().replace('-', "").chars().take(8).collect())
        .unwrap_or_else(|_| "0".into())
}

/// The inode of this process's PID namespace.
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("pid:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "0".into())
}

/// Field 22 of `/proc/<pid>/stat`: when the process started.
fn start_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `owner` names a process that this host can see is gone: same
/// host, boot and PID namespace, and no process with that PID and start
/// time. A process elsewhere cannot be checked from here and counts as
/// alive (its heartbeat decides, see [`crate::runner::Runner::close_abandoned`]).
/// Rows written before owners carried a start time (`host:pid`) are judged
/// by PID alone.
pub fn owner_is_gone(owner: &str) -> bool {
    let parts: Vec<&str> = owner.split(':').collect();
    let (host, pid, identity) = match parts.as_slice() {
        [host, pid] => (*host, *pid, None),
        [host, pid, start, boot, ns] => (*host, *pid, Some((*start, *boot, *ns))),
        _ => return false,
    };
    let Ok(pid_n) = pid.parse::<libc::pid_t>() else {
        return false;
    };
    if host != hostname() || pid_n <= 0 {
        return false;
    }
    if let Some((start, boot, ns)) = identity {
        if boot != boot_id() || ns != pid_namespace() {
            return false;
        }
        // An unreadable stat (procfs hidepid, another user) proves nothing:
        // then only a PID that does not exist at all counts as gone.
        if let Some(ticks) = start_ticks(pid) {
            return ticks.to_string() != start;
        }
    }
    // Signal 0 checks existence; EPERM means it exists under another user.
    // SAFETY: kill with signal 0 sends nothing.
    let alive = unsafe { libc::kill(pid_n, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_local_process_is_gone_a_live_or_remote_one_is_not() {
        let me = this_process();
        assert!(!owner_is_gone(&me));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // Old `host:pid` rows.
        assert!(owner_is_gone(&format!("{}:{pid}", hostname())));
        assert!(!owner_is_gone(&format!("some-other-host:{pid}")));
        assert!(!owner_is_gone("garbage"));
        let parts: Vec<&str> = me.split(':').collect();
        let with = |i: usize, v: &str| {
            let mut p = parts.clone();
            p[i] = v;
            p.join(":")
        };
        // A dead PID on this host, boot and namespace is gone.
        assert!(owner_is_gone(&with(1, &pid.to_string())));
        // This PID with another start time: the PID was reused.
        assert!(owner_is_gone(&with(2, "1")));
        // Another boot or PID namespace (another machine or container with
        // this hostname): cannot be judged from here.
        assert!(!owner_is_gone(&with(3, "deadbeef")));
        assert!(!owner_is_gone(&with(4, "1")));
        assert!(!owner_is_gone(
            &with(1, &pid.to_string()).replace(parts[0], "elsewhere")
        ));
    }
}
