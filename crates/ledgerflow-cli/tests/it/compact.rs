//! `compact`: a speed day with reorgs becomes batch partitions; a compaction
//! killed between data and marker leaves the day on the speed layer with the
//! same numbers; every metric is identical before and after.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use ledgerflow_testkit::project::{parquet_files, stderr, stdout, TestProject};
use ledgerflow_testkit::serving::{assert_dumps_eq, Serving};
use serde_json::Value;

use crate::project;

const DAY: &str = "2026-11-05";

fn layer(p: &TestProject) -> String {
    let out = p.ok(&[
        "backfill",
        "--from",
        DAY,
        "--to",
        DAY,
        "--dry-run",
        "--json",
        "--model",
        "block_daily_metrics",
    ]);
    let plan: Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    plan["layer"].as_str().unwrap().to_owned()
}

/// `--force`: the day is generated alone, so no later block confirms it
/// (finality has a test of its own, in `chain.rs`).
fn compact(p: &TestProject, extra: &[&str]) -> Value {
    let out = p.ok(&[&["compact", "--date", DAY, "--json", "--force"], extra].concat());
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[tokio::test]
async fn compaction_keeps_every_metric_and_survives_a_kill_before_the_marker() {
    let p = project(Serving::Sqlite).await;
    p.generate(DAY, DAY, "0.005", &[DAY], &["--reorg-rate", "0.05"]);
    p.ok(&["run", "--date", DAY]);
    let before = p.db.dump_metrics().await;
    assert_eq!(layer(&p), "speed");

    // Killed after the blocks partition and the transactions data, before
    // the last marker: the day is not committed and reads as before.
    let mut cmd = p.cmd(&["compact", "--date", DAY, "--force"]);
    cmd.env(
        "LEDGERFLOW_FAILPOINT",
        format!("before_marker:transactions/date={DAY}"),
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let reached = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("failpoint before_marker reached"));
    assert!(reached);
    // Two compactions of a day never interleave: the second is refused.
    let second = p.expect(&["compact", "--date", DAY, "--force"], 1);
    assert!(
        stderr(&second).contains(&format!("holds the compaction of {DAY} lock")),
        "{}",
        stderr(&second)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(p
        .path()
        .join(format!("data/batch/blocks/date={DAY}/_SUCCESS"))
        .exists());
    assert!(!p
        .path()
        .join(format!("data/batch/transactions/date={DAY}/_SUCCESS"))
        .exists());
    assert_eq!(layer(&p), "speed");
    p.ok(&["run", "--date", DAY, "--force"]);
    assert_dumps_eq(
        &p.db.dump_metrics().await,
        &before,
        "after a killed compaction",
    );

    // The rerun commits it: canonical rows only, a single sorted file each.
    let report = compact(&p, &[]);
    assert_eq!(report["action"], "compacted");
    assert!(report["orphaned_blocks"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(layer(&p), "batch");
    for table in ["blocks", "transactions"] {
        assert_eq!(
            parquet_files(&p.path().join(format!("data/batch/{table}/date={DAY}"))).len(),
            1
        );
    }
    let out = p.ok(&["run", "--date", DAY]);
    assert!(stdout(&out).contains("batch"), "{}", stdout(&out));
    assert_dumps_eq(&p.db.dump_metrics().await, &before, "after compaction");

    // Idempotent; then the landing files can go, and nothing changes.
    assert_eq!(compact(&p, &[])["action"], "already committed");
    let removed = compact(&p, &["--remove-landing"]);
    assert!(
        removed["removed_landing_files"].as_u64().unwrap() > 0,
        "{removed}"
    );
    assert!(parquet_files(&p.path().join(format!("data/landing/blocks/date={DAY}"))).is_empty());
    p.ok(&["run", "--date", DAY, "--force"]);
    assert_dumps_eq(&p.db.dump_metrics().await, &before, "without landing files");

    // An open day is refused.
    let today = chrono::Utc::now().date_naive().to_string();
    let out = p.expect(&["compact", "--date", &today], 2);
    assert!(ledgerflow_testkit::project::stderr(&out).contains("still open"));
    p.drop_db().await;
}
