//! Named pause points for crash tests. With `LEDGERFLOW_FAILPOINT=<name>` (or
//! `<name>:<scope>`, e.g. `before_commit:user_activity_agg`) the process
//! announces `failpoint <name> reached` on stderr and sleeps, so a test can
//! SIGKILL it at exactly that point. Unset in production: one env lookup.
//!
//! `model_error:<model>:<n>` instead makes the first `n` runs of `<model>`
//! in this process fail with a model error (retry tests).

use std::time::Duration;

pub const ENV: &str = "LEDGERFLOW_FAILPOINT";

fn armed(name: &str, scope: &str) -> bool {
    match std::env::var(ENV) {
        Ok(v) => match v.split_once(':') {
            Some((n, s)) => n == name && s == scope,
            None => v == name,
        },
        Err(_) => false,
    }
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

pub async fn hit(name: &str, scope: &str) {
    if armed(name, scope) {
        eprintln!("failpoint {name} reached");
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
}

/// Blocking variant for code running on a blocking thread (SQLite).
pub fn hit_blocking(name: &str, scope: &str) {
    if armed(name, scope) {
        eprintln!("failpoint {name} reached");
        std::thread::sleep(Duration::from_secs(300));
    }
}
