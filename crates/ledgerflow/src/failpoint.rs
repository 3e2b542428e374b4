//! Named pause points for crash tests. With `LEDGERFLOW_FAILPOINT=<name>` the
//! process announces `failpoint <name> reached` on stderr and sleeps, so a
//! test can SIGKILL it at exactly that point of a run. Unset in production:
//! one env lookup per point.

use std::time::Duration;

pub const ENV: &str = "LEDGERFLOW_FAILPOINT";

pub async fn hit(name: &str) {
    if std::env::var(ENV).ok().as_deref() == Some(name) {
        eprintln!("failpoint {name} reached");
        tokio::time::sleep(Duration::from_secs(300)).await;
    }
}

/// Blocking variant for code running on a blocking thread (SQLite).
pub fn hit_blocking(name: &str) {
    if std::env::var(ENV).ok().as_deref() == Some(name) {
        eprintln!("failpoint {name} reached");
        std::thread::sleep(Duration::from_secs(300));
    }
}
