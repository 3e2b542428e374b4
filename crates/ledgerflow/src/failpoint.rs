//! Named pause points for crash tests. With `LEDGERFLOW_FAILPOINT=<name>` (or
//! `<name>:<scope>`, e.g. `before_commit:user_activity_agg`) the process
//! logs `failpoint <name> reached` (a warning) and sleeps, so a test can
//! SIGKILL it at exactly that point. Unset in production: one env lookup.
//!
//! `model_error:<model>:<n>` instead makes the first `n` runs of `<model>`
//! in this process fail as if the connection was lost (transient: retried),
//! `model_bug:<model>:<n>` with a model error (permanent: not retried).
//!
//! A trailing `@k` pauses only at the k-th hit of the point in the process
//! (`before_commit:user_activity_agg@2`: the second day of a backfill).
//!
//! `LEDGERFLOW_FAILPOINT_RELEASE=<path>` makes a pause end when that file
//! exists instead of after 300 s, so a test can interleave two processes.

use std::time::Duration;

pub const ENV: &str = "LEDGERFLOW_FAILPOINT";

/// Whether this hit pauses. `name`, `name:scope`, or either with `@k`:
/// only the k-th hit in the process (e.g. the second day of a backfill).
fn armed(name: &str, scope: &str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static MATCHED: AtomicU64 = AtomicU64::new(0);
    let Ok(v) = std::env::var(ENV) else {
        return false;
    };
    let (spec, nth) = match v.rsplit_once('@') {
        Some((spec, k)) => match k.parse::<u64>() {
            Ok(k) => (spec, Some(k)),
            Err(_) => (v.as_str(), None),
        },
        None => (v.as_str(), None),
    };
    let matches = match spec.split_once(':') {
        Some((n, s)) => n == name && s == scope,
        None => spec == name,
    };
    matches && nth.is_none_or(|k| MATCHED.fetch_add(1, Ordering::SeqCst) + 1 == k)
}

/// Whether this hit of a counted failpoint (`name:scope:n`) fails: the
/// first `n` hits in the process do.
pub fn fail_now(name: &str, scope: &str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Ok(v) = std::env::var(ENV) else {
        return false;
    };
    let mut parts = v.splitn(3, ':');
    let (Some(n), Some(s), Some(count)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(count) = count.parse::<u64>() else {
        return false;
    };
    n == name && s == scope && HITS.fetch_add(1, Ordering::SeqCst) < count
}

const RELEASE_ENV: &str = "LEDGERFLOW_FAILPOINT_RELEASE";
const PAUSE: Duration = Duration::from_secs(300);
const RELEASE_POLL: Duration = Duration::from_millis(50);

/// Whether the release file (if one is named) exists.
fn released() -> Option<bool> {
    let path = std::env::var_os(RELEASE_ENV)?;
    Some(std::path::Path::new(&path).exists())
}

pub async fn hit(name: &str, scope: &str) {
    if armed(name, scope) {
        tracing::warn!("failpoint {name} reached");
        let until = std::time::Instant::now() + PAUSE;
        while std::time::Instant::now() < until && released() != Some(true) {
            tokio::time::sleep(RELEASE_POLL.min(PAUSE)).await;
        }
        tracing::warn!("failpoint {name} released");
    }
}

/// Blocking variant for code running on a blocking thread (SQLite).
pub fn hit_blocking(name: &str, scope: &str) {
    if armed(name, scope) {
        tracing::warn!("failpoint {name} reached");
        let until = std::time::Instant::now() + PAUSE;
        while std::time::Instant::now() < until && released() != Some(true) {
            std::thread::sleep(RELEASE_POLL);
        }
        tracing::warn!("failpoint {name} released");
    }
}
