//! Named pause points for crash tests. With `LEDGERFLOW_FAILPOINT=<name>` (or
//! `<name>:<scope>`, e.g. `before_commit:user_activity_agg`) the process
//! announces `failpoint <name> reached` on stderr and sleeps, so a test can
//! SIGKILL it at exactly that point. Unset in production: one env lookup.

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
