//! Two writers of one (model, day) at once, forced with a failpoint that
//! pauses one between computing and writing: the run that read its inputs
//! earlier never commits over the one that read them later, and the ledger
//! tells which one the table holds.

use chrono::NaiveDate;
use ledgerflow::generate::chain::GenParams;
use ledgerflow_testkit::project::{stdout, Paused};
use ledgerflow_testkit::reference::{self, generated_day};
use ledgerflow_testkit::serving::assert_daily_eq;

use crate::{project, SINKS};

const DAY: &str = "2026-11-05";

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
        // A (e.g. a manual re-run) computes the day from the first inputs
        // and pauses before writing.
        let a = Paused::start(
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
            &[],
        );
        // The day is rewritten; B (e.g. the scheduler) reads it and commits.
        p.generate(DAY, DAY, "0.01", &[], &["--seed", "7"]);
        p.ok(&["run", "--date", DAY, "--model", "block_daily_metrics"]);
        assert_daily_eq(&p.db.block_daily_metrics().await[0], &expected);

        // A resumes: its older output is dropped, not written over B's.
        let out = a.release();
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
