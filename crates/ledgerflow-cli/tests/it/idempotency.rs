//! Re-running never appends: the same day twice, and a backfill twice, give
//! identical tables; unchanged inputs are skipped; the ledger shows it all.

use ledgerflow_testkit::project::{stdout, Paused};
use ledgerflow_testkit::serving::{assert_dumps_eq, Serving};

use crate::{project, SINKS};

#[tokio::test]
async fn runs_and_backfills_are_idempotent() {
    for serving in SINKS {
        let p = project(serving).await;
        p.generate("2026-11-01", "2026-11-03", "0.005", &[], &[]);

        p.ok(&["run", "--date", "2026-11-02"]);
        let once = p.db.dump_metrics().await;
        assert!(once.iter().all(|t| !t.is_empty()));
        p.ok(&["run", "--date", "2026-11-02", "--force"]);
        assert_dumps_eq(&p.db.dump_metrics().await, &once, "forced re-run");

        // Unchanged inputs: skipped, tables untouched.
        let out = p.ok(&["run", "--date", "2026-11-02"]);
        assert_eq!(
            stdout(&out).matches("skipped").count(),
            3,
            "{}",
            stdout(&out)
        );

        p.ok(&["backfill", "--from", "2026-11-01", "--to", "2026-11-03"]);
        let week = p.db.dump_metrics().await;
        assert_eq!(week[0].len(), 3);
        p.ok(&[
            "backfill",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-03",
            "--force",
        ]);
        assert_dumps_eq(&p.db.dump_metrics().await, &week, "backfill twice");

        if serving == Serving::Postgres {
            // A day is replaced by swapping its partition: one per day, no strays.
            let parts = p.db.partitions("user_activity_agg").await;
            assert_eq!(
                parts,
                ["20261101", "20261102", "20261103"].map(|d| format!("user_activity_agg_p{d}")),
            );
        }

        // The dry run reports the plan and changes nothing.
        let out = p.ok(&[
            "backfill",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-04",
            "--dry-run",
        ]);
        let plan = stdout(&out);
        assert_eq!(plan.matches("skip (unchanged)").count(), 9, "{plan}");
        assert_eq!(
            plan.matches("error: no data for 2026-11-04").count(),
            3,
            "{plan}"
        );
        assert_dumps_eq(&p.db.dump_metrics().await, &week, "tables");

        let runs = p.db.runs().await;
        let count = |state: &str| runs.iter().filter(|r| r.2 == state).count();
        // day 2: run, forced run, 3 skips; backfill: 2 new days + day 2 skipped; forced: 9.
        assert_eq!(count("success"), 3 + 3 + 6 + 9, "{runs:?}");
        assert_eq!(count("skipped"), 3 + 3, "{runs:?}");
        assert_eq!(
            count("running") + count("failed") + count("pending"),
            0,
            "{runs:?}"
        );
        // `runs` filters the ledger and prints JSON.
        let out = p.ok(&["runs", "--state", "skipped", "--json"]);
        let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), 6);
        assert!(rows
            .iter()
            .all(|r| r["state"] == "skipped" && r["fingerprint"].is_string()));
        let out = p.ok(&["runs", "--model", "user_activity_agg", "--limit", "2"]);
        assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));
        p.expect(&["runs", "--state", "done"], 2);

        // Changing a model re-runs it and the models that read it
        // (block_daily_metrics reads user_activity_agg), not the others.
        let sql = p.path().join("models/user_activity_agg.sql");
        let text = std::fs::read_to_string(&sql).unwrap();
        std::fs::write(&sql, format!("{text}\n-- edited\n")).unwrap();
        let out = p.ok(&["run", "--date", "2026-11-02"]);
        let text = stdout(&out);
        assert_eq!(text.matches("skipped").count(), 1, "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("realtime_dashboard") && l.contains("skipped")),
            "{text}"
        );
        assert_dumps_eq(&p.db.dump_metrics().await, &week, "after the edit");
        p.drop_db().await;
    }
}

/// `engine.parallel_days = 2` (the default): while day 1 is held before a model's write,
/// day 2 has started (its ledger rows are there) but commits that model
/// only after day 1 has; every model's days commit oldest first; a SIGKILL
/// in the middle of overlapping days leaves whole (model, day)s that a rerun
/// completes to the same tables as a one-day-at-a-time backfill.
#[tokio::test]
async fn pipelined_days_commit_in_order_per_model() {
    let p = project(Serving::Postgres).await;
    p.set_config("# parallel_days = 2", "parallel_days = 2");
    p.generate("2026-11-01", "2026-11-04", "0.005", &[], &[]);
    let backfill = ["backfill", "--from", "2026-11-01", "--to", "2026-11-04"];
    let runs = || -> Vec<serde_json::Value> {
        serde_json::from_str(&stdout(&p.ok(&["runs", "--json", "--limit", "100"]))).unwrap()
    };
    let state = |rows: &[serde_json::Value], model: &str, day: &str| -> String {
        rows.iter()
            .find(|r| r["model"] == model && r["day"] == day)
            .map(|r| r["state"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };

    let held = Paused::start(&p, &backfill, "before_write:block_daily_metrics", &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = runs();
        for model in [
            "block_daily_metrics",
            "user_activity_agg",
            "realtime_dashboard",
        ] {
            if state(&rows, model, "2026-11-02") == "success" {
                assert_eq!(
                    state(&rows, model, "2026-11-01"),
                    "success",
                    "{model}: day 2 committed before day 1: {rows:?}"
                );
            }
        }
        assert_ne!(state(&rows, "block_daily_metrics", "2026-11-02"), "success");
        if rows.iter().any(|r| r["day"] == "2026-11-02") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "day 2 never started while day 1 was held: {rows:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    held.kill();
    p.ok(&backfill);
    let pipelined = p.db.dump_metrics().await;

    let mut by_model: std::collections::BTreeMap<
        String,
        Vec<(chrono::DateTime<chrono::FixedOffset>, String)>,
    > = Default::default();
    for r in runs().iter().filter(|r| r["state"] == "success") {
        by_model
            .entry(r["model"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                chrono::DateTime::parse_from_rfc3339(r["finished_at"].as_str().unwrap()).unwrap(),
                r["day"].as_str().unwrap().to_owned(),
            ));
    }
    assert_eq!(by_model.len(), 3, "{by_model:?}");
    for (model, mut commits) in by_model {
        commits.sort();
        let days: Vec<&str> = commits.iter().map(|(_, d)| d.as_str()).collect();
        let mut sorted = days.clone();
        sorted.sort();
        assert_eq!(days, sorted, "{model} committed out of day order");
    }

    p.set_config("parallel_days = 2", "parallel_days = 1");
    p.ok(&[&backfill[..], &["--force"]].concat());
    assert_dumps_eq(
        &p.db.dump_metrics().await,
        &pipelined,
        "one day at a time vs pipelined",
    );
    p.drop_db().await;
}
