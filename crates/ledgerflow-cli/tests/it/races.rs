//! Two writers of one (model, day) at once, forced with a failpoint that
//! pauses one between computing and writing: the run that read its inputs
//! earlier never commits over the one that read them later, and the ledger
//! tells which one the table holds.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chrono::NaiveDate;
use ledgerflow::generate::chain::GenParams;
use ledgerflow_testkit::project::{stdout, TestProject};
use ledgerflow_testkit::reference::{self, generated_day};
use ledgerflow_testkit::serving::assert_daily_eq;

use crate::{project, SINKS};

const DAY: &str = "2026-11-05";

/// Starts `args` paused at `failpoint` until `release` exists; returns once
/// the pause is reached.
fn paused(p: &TestProject, args: &[&str], failpoint: &str, release: &std::path::Path) -> Child {
    let mut cmd = p.cmd(args);
    cmd.env("LEDGERFLOW_FAILPOINT", failpoint)
        .env("LEDGERFLOW_FAILPOINT_RELEASE", release)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("reached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the failpoint is reached");
    child
}

#[tokio::test]
async fn a_run_that_read_older_inputs_is_superseded_never_committed() {
    let day: NaiveDate = DAY.parse().unwrap();
    let newer = GenParams {
        seed: 7,
        scale: 0.01,
        ..Default::default()
    };
    let (blocks, txs) = generated_day(&newer, day, false);
    let expected = reference::block_daily_metrics(day, &blocks, &txs).unwrap();
    for serving in SINKS {
        let p = project(serving).await;
        p.generate(DAY, DAY, "0.01", &[], &[]);
        let release = p.path().join("release");
        // A (e.g. a manual re-run) computes the day from the first inputs
        // and pauses before writing.
        let a = paused(
            &p,
            &[
                "run",
                "--date",
                DAY,
                "--force",
                "--model",
                "block_daily_metrics",
            ],
            "before_write:block_daily_metrics",
            &release,
        );
        // The day is rewritten; B (e.g. the scheduler) reads it and commits.
        p.generate(DAY, DAY, "0.01", &[], &["--seed", "7"]);
        p.ok(&["run", "--date", DAY, "--model", "block_daily_metrics"]);
        assert_daily_eq(&p.db.block_daily_metrics().await[0], &expected);

        // A resumes: its older output is dropped, not written over B's.
        std::fs::write(&release, "").unwrap();
        let out = a.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(stdout(&out).contains("superseded"), "{}", stdout(&out));
        assert_daily_eq(&p.db.block_daily_metrics().await[0], &expected);
        let runs: Vec<serde_json::Value> =
            serde_json::from_str(&stdout(&p.ok(&["runs", "--json"]))).unwrap();
        let states: Vec<&str> = runs
            .iter()
            .filter(|r| r["model"] == "block_daily_metrics")
            .map(|r| r["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, vec!["success", "superseded"], "{runs:#?}");
        // The latest success is B's: an unchanged day is skipped.
        let again = stdout(&p.ok(&["run", "--date", DAY, "--model", "block_daily_metrics"]));
        assert!(again.contains("skipped"), "{again}");
        p.drop_db().await;
    }
}
