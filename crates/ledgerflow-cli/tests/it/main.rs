//! End-to-end tests: the real binary, real Parquet files, real PostgreSQL
//! (a schema per test) and SQLite. One test binary, so DataFusion is linked
//! once.

mod airflow;
mod atomicity;
mod bad_input;
#[cfg(feature = "ballista")]
mod ballista;
mod bench;
mod chain;
mod checks;
mod compact;
mod faults;
mod idempotency;
mod ingest;
mod ledger;
mod models;
mod mongo;
mod races;
mod realtime;
mod s3;
mod schedule;
mod serve;

use std::path::PathBuf;

use ledgerflow_testkit::project::TestProject;
use ledgerflow_testkit::serving::Serving;

/// The binary under test: Cargo's build of it, or `LEDGERFLOW_TEST_BIN` (a
/// copy, when another checkout sharing the target dir may rebuild Cargo's
/// while these tests run).
pub fn bin() -> PathBuf {
    std::env::var_os("LEDGERFLOW_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ledgerflow")))
}

/// Runs `ledgerflow ARGS --dir DIR` (a `bench*` command, which makes its
/// own project there) and returns its stdout, once it has succeeded.
pub fn bench_stdout(args: &[&str], dir: &std::path::Path) -> String {
    let out = std::process::Command::new(bin())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `2026-11-05` as a date.
pub fn d(s: &str) -> chrono::NaiveDate {
    s.parse().unwrap()
}

/// A day of November 2026, the month the tests use.
pub fn nov(n: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, n).unwrap()
}

/// Both sinks pass the same suite.
pub const SINKS: [Serving; 2] = [Serving::Sqlite, Serving::Postgres];

pub async fn project(serving: Serving) -> TestProject {
    let p = TestProject::new(&bin(), serving).await;
    if serving == Serving::Postgres {
        let schema = p.db.schema().to_string();
        p.set_config("schema = \"public\"", &format!("schema = \"{schema}\""));
    }
    p
}
