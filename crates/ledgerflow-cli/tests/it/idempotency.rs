//! Re-running never appends: the same day twice, and a backfill twice, give
//! identical tables; unchanged inputs are skipped; the ledger shows it all.

use ledgerflow_testkit::project::stdout;
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
