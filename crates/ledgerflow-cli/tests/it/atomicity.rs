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
        // Each kill leaves a snapshot; every snapshot must hold, per table,
        // the old day or the new one (known after the final run), whole.
        let mut snapshots = Vec::new();
        for (failpoint, model) in [
            ("during_copy", None),
            ("before_commit", None),
            // Pause only the second model: the first may commit meanwhile
            // (writes overlap other models' work), or not yet.
            ("before_commit", Some("user_activity_agg")),
        ] {
            let mut args = vec!["run", "--date", "2026-11-05", "--force"];
            match model {
                Some(m) => args.extend(["--model", "block_daily_metrics", "--model", m]),
                None => args.extend(["--model", "block_daily_metrics"]),
            }
            let mut cmd = p.cmd(&args);
            cmd.stderr(Stdio::piped()).stdout(Stdio::null());
            if model.is_some() {
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
            if model.is_none() {
                assert_eq!(
                    now[0], old[0],
                    "{serving:?} {failpoint}: block_daily_metrics changed"
                );
            }
            snapshots.push((failpoint, now));
        }
        // Each killed run left its rows open until the next invocation found
        // its process gone and closed them as failed (abandoned).
        let runs = p.db.runs().await;
        let count = |state: &str| runs.iter().filter(|r| r.2 == state).count();
        assert_eq!(count("failed"), 2, "{runs:?}");
        assert!(count("running") + count("pending") >= 1, "{runs:?}");
        // The next run completes: the new day, once.
        p.ok(&RUN_BOTH);
        let new = tables(&p.db).await;
        let runs = p.db.runs().await;
        let count = |state: &str| runs.iter().filter(|r| r.2 == state).count();
        assert_eq!(count("running") + count("pending"), 0, "{runs:?}");
        assert!(count("failed") >= 3, "{runs:?}");
        assert_ne!(new[1], old[1]);
        assert_ne!(new[0], old[0]);
        assert_eq!(new[0].len(), 1);
        for (failpoint, snap) in &snapshots {
            assert!(
                snap[0] == old[0] || snap[0] == new[0],
                "{serving:?} {failpoint}: block_daily_metrics is neither the old nor the new day"
            );
        }
        p.drop_db().await;
    }
}

async fn day_tables(db: &TestDb) -> [Vec<String>; 3] {
    [
        db.dump("block_daily_metrics", &[]).await,
        db.dump("user_activity_agg", &[]).await,
        db.dump("realtime_dashboard", &["updated_at"]).await,
    ]
}

/// `run.commit = "day"`: a day's models commit in one transaction. A model
/// that fails leaves every table's old day (the others computed but were
/// not written); a kill before the commit leaves every old day; the next
/// run switches all tables at once.
#[tokio::test]
async fn a_day_committed_together_switches_every_table_or_none() {
    for serving in SINKS {
        let p = project(serving).await;
        p.append_config("[run]\ncommit = \"day\"");
        p.generate("2026-11-05", "2026-11-05", "0.01", &[], &[]);
        p.ok(&["run", "--date", "2026-11-05"]);
        let old = day_tables(&p.db).await;
        p.generate("2026-11-05", "2026-11-05", "0.01", &[], &["--seed", "7"]);

        // One model fails: nothing of the day is written.
        let out = p
            .cmd(&["run", "--date", "2026-11-05"])
            .env("LEDGERFLOW_FAILPOINT", "model_bug:user_activity_agg:1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let text = ledgerflow_testkit::project::stdout(&out);
        assert!(text.contains("not written"), "{text}");
        assert_eq!(day_tables(&p.db).await, old, "{serving:?}: a table changed");

        // Killed before the one commit: nothing of the day is written.
        ledgerflow_testkit::project::Paused::start(
            &p,
            &["run", "--date", "2026-11-05"],
            "before_commit:realtime_dashboard",
            &[],
        )
        .kill();
        assert_eq!(day_tables(&p.db).await, old, "{serving:?}: a table changed");

        // Then every table switches at once.
        p.ok(&["run", "--date", "2026-11-05"]);
        let new = day_tables(&p.db).await;
        for (i, table) in [
            "block_daily_metrics",
            "user_activity_agg",
            "realtime_dashboard",
        ]
        .iter()
        .enumerate()
        {
            assert_ne!(new[i], old[i], "{serving:?}: {table} kept its old day");
        }
        p.drop_db().await;
    }
}
