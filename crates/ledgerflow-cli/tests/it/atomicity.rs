//! A run killed with SIGKILL at any point leaves each table with the old day
//! or the new day, never a mix, never twice; the next run completes it.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use ledgerflow_testkit::serving::TestDb;

use crate::{project, SINKS};

async fn tables(db: &TestDb) -> [Vec<String>; 2] {
    [
        db.dump("block_daily_metrics", &[]).await,
        db.dump("user_activity_agg", &[]).await,
    ]
}

/// The two replace-day models, for the day under test.
const RUN_BOTH: [&str; 7] = [
    "run",
    "--date",
    "2026-11-05",
    "--model",
    "block_daily_metrics",
    "--model",
    "user_activity_agg",
];

#[tokio::test]
async fn sigkill_mid_run_leaves_old_or_new_day() {
    for serving in SINKS {
        let p = project(serving).await;
        p.generate("2026-11-05", "2026-11-05", "0.01", &[], &[]);
        p.ok(&RUN_BOTH);
        let old = tables(&p.db).await;

        // New data for the same day (another seed), then kill the re-run at
        // each point of the write protocol.
        p.generate("2026-11-05", "2026-11-05", "0.01", &[], &["--seed", "7"]);
        for (failpoint, model, expect_new_daily) in [
            ("during_copy", None, false),
            ("before_commit", None, false),
            // block_daily_metrics commits first; the kill hits the second model.
            ("before_commit", Some("user_activity_agg"), true),
        ] {
            let mut args = vec!["run", "--date", "2026-11-05", "--force"];
            match model {
                Some(m) => args.extend(["--model", "block_daily_metrics", "--model", m]),
                None => args.extend(["--model", "block_daily_metrics"]),
            }
            let mut cmd = p.cmd(&args);
            cmd.stderr(Stdio::piped()).stdout(Stdio::null());
            if model.is_some() {
                // Pause only in the second model: the first runs through.
                cmd.env(
                    "LEDGERFLOW_FAILPOINT",
                    format!("{failpoint}:user_activity_agg"),
                );
            } else {
                cmd.env("LEDGERFLOW_FAILPOINT", failpoint);
            }
            let mut child = cmd.spawn().unwrap();
            let stderr = BufReader::new(child.stderr.take().unwrap());
            let reached = stderr
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("reached"));
            assert!(reached, "{serving:?}: failpoint {failpoint} never reached");
            child.kill().unwrap();
            child.wait().unwrap();
            let now = tables(&p.db).await;
            assert_eq!(
                now[1], old[1],
                "{serving:?} {failpoint}: user_activity_agg changed"
            );
            if expect_new_daily {
                assert_ne!(
                    now[0], old[0],
                    "{serving:?}: first model should have committed"
                );
            } else {
                assert_eq!(
                    now[0], old[0],
                    "{serving:?} {failpoint}: block_daily_metrics changed"
                );
            }
        }
        // Each killed run left its row `running` until the next invocation
        // found its process gone and closed it as failed (abandoned).
        let runs = p.db.runs().await;
        let count = |state: &str| runs.iter().filter(|r| r.2 == state).count();
        assert_eq!((count("running"), count("failed")), (1, 2), "{runs:?}");
        assert_eq!(count("pending"), 0, "{runs:?}");
        // The next run completes: the new day, once.
        p.ok(&RUN_BOTH);
        let new = tables(&p.db).await;
        let runs = p.db.runs().await;
        let count = |state: &str| runs.iter().filter(|r| r.2 == state).count();
        assert_eq!((count("running"), count("failed")), (0, 3), "{runs:?}");
        assert_ne!(new[1], old[1]);
        assert_eq!(new[0].len(), 1);
        p.drop_db().await;
    }
}
