//! `cargo build --workspace && cargo run -p ledgerflow-testkit --bin
//! kill-storm -- --kills 1000`: backfills a week under random SIGKILLs and
//! checks every day against the reference (see `ledgerflow_testkit::storm`).

use std::path::PathBuf;

use clap::Parser;
use ledgerflow_testkit::serving::Serving;
use ledgerflow_testkit::storm::{self, StormOptions};

#[derive(Parser)]
struct Args {
    /// Runs to kill.
    #[arg(long, default_value_t = 1000)]
    kills: usize,
    /// Seed of the kill delays.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Serve into PostgreSQL (LEDGERFLOW_TEST_PG_URL) instead of SQLite.
    #[arg(long)]
    postgres: bool,
    /// The ledgerflow binary. Default: the one built beside this one.
    #[arg(long)]
    bin: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let bin = args.bin.unwrap_or_else(|| {
        std::env::current_exe()
            .expect("this executable")
            .with_file_name("ledgerflow")
    });
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build --workspace), or pass --bin",
        bin.display()
    );
    let serving = if args.postgres {
        Serving::Postgres
    } else {
        Serving::Sqlite
    };
    let report = storm::run(
        &bin,
        &StormOptions {
            kills: args.kills,
            seed: args.seed,
            serving,
        },
    )
    .await;
    println!(
        "kill storm: {} kills, {} runs finished before their kill, {} days exact on {serving:?} (one clean backfill {:.2}s; {:.0}s in all)",
        report.kills,
        report.completed,
        storm::days().len(),
        report.backfill.as_secs_f64(),
        report.elapsed.as_secs_f64()
    );
}
