//! End-to-end tests: the real binary, real Parquet files, real PostgreSQL
//! (a schema per test) and SQLite. One test binary, so DataFusion is linked
//! once.

mod atomicity;
mod bad_input;
mod compact;
mod idempotency;
mod models;
mod schedule;

use std::path::Path;

use ledgerflow_testkit::project::TestProject;
use ledgerflow_testkit::serving::Serving;

pub const BIN: &str = env!("CARGO_BIN_EXE_ledgerflow");

/// Both sinks pass the same suite.
pub const SINKS: [Serving; 2] = [Serving::Sqlite, Serving::Postgres];

pub async fn project(serving: Serving) -> TestProject {
    let p = TestProject::new(Path::new(BIN), serving).await;
    if serving == Serving::Postgres {
        let schema = p.db.schema().to_string();
        p.set_config("schema = \"public\"", &format!("schema = \"{schema}\""));
    }
    p
}
