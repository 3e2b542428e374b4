//! Data-quality checks end to end: each kind catches a planted defect and
//! passes on clean data, on both sinks; an error check writes nothing of
//! the day and leaves the previous rows; a warn check writes and records;
//! the history keeps passes; bad check syntax is a configuration error.

use ledgerflow_testkit::project::{stderr, stdout, TestProject};
use ledgerflow_testkit::serving::Serving;

use crate::{project, SINKS};

pub(crate) fn checks(p: &TestProject, args: &[&str]) -> Vec<serde_json::Value> {
    let out = p.ok(&[&["checks", "--json", "--limit", "1000"][..], args].concat());
    serde_json::from_str::<serde_json::Value>(&stdout(&out))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn edit(p: &TestProject, file: &str, from: &str, to: &str) {
    let path = p.path().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// The default reconciliation catches a model that double counts: the day
/// fails naming the check, nothing of it is written (the earlier rows
/// stay), the dependents' rows are untouched, and the failure is in the
/// history, `checks --failed` and `status`; the passes are kept too.
#[tokio::test]
async fn a_double_counting_model_fails_its_reconciliation_and_writes_nothing() {
    for serving in SINKS {
        let p = project(serving).await;
        p.generate("2026-11-01", "2026-11-02", "0.005", &[], &[]);
        p.ok(&["backfill", "--from", "2026-11-01", "--to", "2026-11-02"]);
        let history = checks(&p, &[]);
        // Per day: three declared on block_daily_metrics and two SQL
        // checks guarding it, three declared on user_activity_agg.
        assert_eq!(history.len(), 16, "{serving:?}: {history:#?}");
        assert!(
            history.iter().all(|c| c["status"] == "pass"),
            "{serving:?}: {history:#?}"
        );
        let before = p.db.dump("block_daily_metrics", &[]).await;

        edit(
            &p,
            "models/block_daily_metrics.sql",
            "coalesce(sum(tx_sent), 0) AS tx_count,",
            "2 * coalesce(sum(tx_sent), 0) AS tx_count,",
        );
        let out = p.expect(&["run", "--date", "2026-11-02"], 1);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            text.contains("block_daily_metrics_counts_match_inputs"),
            "{serving:?}: {text}"
        );
        assert_eq!(
            p.db.dump("block_daily_metrics", &[]).await,
            before,
            "{serving:?}: the day's earlier row stays"
        );
        let runs = p.db.runs().await;
        let last = runs
            .iter()
            .rfind(|(m, _, _)| m == "block_daily_metrics")
            .unwrap();
        assert_eq!(last.2, "failed", "{serving:?}: {runs:?}");
        let failed = checks(&p, &["--failed"]);
        assert_eq!(failed.len(), 1, "{serving:?}: {failed:#?}");
        let f = &failed[0];
        assert_eq!(f["check"], "block_daily_metrics_counts_match_inputs");
        assert_eq!(
            (f["status"].as_str(), f["day"].as_str()),
            (Some("fail"), Some("2026-11-02"))
        );
        assert_eq!(f["failing_rows"], 1);
        assert!(f["sample"].as_str().unwrap().contains("tx_count="), "{f}");
        assert!(f["run_id"].is_i64(), "{f}");
        let status = stdout(&p.ok(&["status"]));
        assert!(
            status.contains("checks that did not pass")
                && status.contains("block_daily_metrics_counts_match_inputs"),
            "{serving:?}: {status}"
        );
        // The passes of this run are history too (user_activity_agg was
        // skipped as unchanged: its checks did not run again).
        assert_eq!(checks(&p, &[]).len(), 16 + 5, "{serving:?}");
        p.drop_db().await;
    }
}

const ODD_MODEL: &str =
    "-- Rows our generator never makes: a NULL, an unknown kind, a value out of range.
--
-- key: day, k
-- grain: day
-- write: replace_day
-- check: not_null(v)
-- check: accepted_values(kind, ['a', 'b'])
-- check: range(n, 0, 10)
-- check: unique(v)
-- check: row_count(1, 2)
-- check: expression(n < 11 OR kind = 'a')
SELECT CAST($day AS DATE) AS day, k, v, kind, n
FROM (VALUES (1, 'x', 'a', 5), (2, NULL, 'c', 11), (3, 'x', 'b', 0)) AS t(k, v, kind, n)
";

/// The same shape with rows every check accepts.
const CLEAN_ROWS: &str = "(VALUES (1, 'x', 'a', 5), (2, 'y', 'b', 10)) AS t(k, v, kind, n)";

/// Reads `odd_rows`: skipped when a check fails it.
const ODD_TOTAL: &str = "-- key: day
-- grain: day
-- write: replace_day
-- depends_on: odd_rows
SELECT day, CAST(sum(n) AS BIGINT) AS total FROM odd_rows GROUP BY day
";

/// A SQL check guarding `odd_rows` on one day only.
const ODD_SQL_CHECK: &str = "-- model: odd_rows, odd_total
-- days: 2026-11-01
SELECT k FROM odd_rows WHERE k > 2
";

/// Each declared kind and a SQL check on planted rows: as errors the day
/// fails listing every failing check with a sample key, the ledger row
/// names them, no table is written and the dependent is skipped; as
/// warnings the rows are written and the results recorded; on clean rows
/// every check passes and the dependent is written.
#[tokio::test]
async fn declared_checks_catch_planted_rows_as_errors_or_warnings() {
    for serving in SINKS {
        let p = project(serving).await;
        p.generate("2026-11-01", "2026-11-01", "0.002", &[], &[]);
        std::fs::write(p.path().join("models/odd_rows.sql"), ODD_MODEL).unwrap();
        std::fs::write(p.path().join("models/odd_total.sql"), ODD_TOTAL).unwrap();
        std::fs::write(p.path().join("checks/odd_keys.sql"), ODD_SQL_CHECK).unwrap();
        let run = [
            "run",
            "--date",
            "2026-11-01",
            "--model",
            "odd_rows",
            "--model",
            "odd_total",
        ];
        let out = p.expect(&run, 1);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        for check in [
            "not_null(v)` fail: 1 failing row(s); e.g. day=2026-11-01, k=2",
            "accepted_values(kind, ['a', 'b'])` fail: 1 failing row(s)",
            "range(n, 0, 10)` fail: 1 failing row(s)",
            "unique(v)` fail: 2 failing row(s); e.g. v=x",
            "row_count(1, 2)` fail (observed 3, expected 1..2)",
            "expression(n < 11 OR kind = 'a')` fail: 1 failing row(s)",
            "odd_keys` fail: 1 failing row(s) (observed 1 rows, expected no rows); e.g. k=3",
        ] {
            assert!(text.contains(check), "{serving:?} `{check}`:\n{text}");
        }
        assert!(!p.db.has_table("odd_rows").await, "{serving:?}");
        assert!(!p.db.has_table("odd_total").await, "{serving:?}");
        let ledger: Vec<serde_json::Value> =
            serde_json::from_str(&stdout(&p.ok(&["runs", "--json"]))).unwrap();
        let row = |model: &str| {
            ledger
                .iter()
                .find(|r| r["model"] == model)
                .unwrap_or_else(|| panic!("no {model} in {ledger:#?}"))
                .clone()
        };
        let failed = row("odd_rows");
        assert_eq!(failed["state"], "failed", "{failed:#}");
        let error = failed["error"].as_str().unwrap();
        assert!(
            error.contains("odd_keys")
                && error.contains("range(n, 0, 10)")
                && error.contains("1 failing row"),
            "the ledger names each failing check and its count: {error}"
        );
        assert_eq!(
            row("odd_total")["state"],
            "skipped",
            "{serving:?}: {ledger:#?}"
        );

        edit(
            &p,
            "models/odd_rows.sql",
            "-- check: not_null(v)",
            "-- check: not_null(v) warn",
        );
        for kind in [
            "accepted_values(kind, ['a', 'b'])",
            "range(n, 0, 10)",
            "unique(v)",
            "row_count(1, 2)",
            "expression(n < 11 OR kind = 'a')",
        ] {
            edit(
                &p,
                "models/odd_rows.sql",
                &format!("-- check: {kind}\n"),
                &format!("-- check: {kind} warn\n"),
            );
        }
        edit(
            &p,
            "checks/odd_keys.sql",
            "-- days:",
            "-- severity: warn\n-- days:",
        );
        let out = p.ok(&run);
        assert!(
            stderr(&out).contains("not_null(v)` warn"),
            "{}",
            stderr(&out)
        );
        assert_eq!(p.db.count("odd_rows").await, 3, "{serving:?}");
        let results = checks(&p, &["--model", "odd_rows"]);
        let statuses: Vec<&str> = results[..7]
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["warn"; 7], "{serving:?}: {results:#?}");
        assert_eq!(results.len(), 14, "both runs are history");
        // The SQL check guards odd_total too, in its own session.
        let total = checks(&p, &["--model", "odd_total"]);
        assert_eq!(total.len(), 1, "{total:#?}");
        assert_eq!(total[0]["status"], "warn", "{total:#?}");

        // Clean rows: every check passes (errors again), the dependent is
        // written; on another day the SQL check does not run.
        let text = std::fs::read_to_string(p.path().join("models/odd_rows.sql")).unwrap();
        let (head, _) = text.split_once("FROM (VALUES").unwrap();
        let clean = format!("{}FROM {CLEAN_ROWS}\n", head.replace(" warn\n", "\n"));
        std::fs::write(p.path().join("models/odd_rows.sql"), clean).unwrap();
        p.ok(&run);
        let results = checks(&p, &["--model", "odd_rows"]);
        let statuses: Vec<&str> = results[..7]
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["pass"; 7], "{serving:?}: {results:#?}");
        assert_eq!(p.db.count("odd_rows").await, 2, "{serving:?}");
        assert_eq!(p.db.count("odd_total").await, 1, "{serving:?}");
        p.generate("2026-11-02", "2026-11-02", "0.002", &[], &[]);
        p.ok(&["run", "--date", "2026-11-02", "--model", "odd_rows"]);
        let on_day_two: Vec<serde_json::Value> = checks(&p, &["--model", "odd_rows"])
            .into_iter()
            .filter(|c| c["day"] == "2026-11-02")
            .collect();
        assert_eq!(
            on_day_two.len(),
            6,
            "odd_keys guards 2026-11-01 only: {on_day_two:#?}"
        );
        assert!(on_day_two.iter().all(|c| c["check"] != "odd_keys"));
        p.drop_db().await;
    }
}

/// `volume` against the median of the recent days in the ledger: a day
/// with ~90% fewer rows is flagged (warn: it is still written); the days
/// before it, with too little history or a normal volume, pass.
#[tokio::test]
async fn volume_flags_a_day_that_collapsed() {
    for serving in SINKS {
        volume_on(serving).await;
    }
}

async fn volume_on(serving: Serving) {
    let p = project(serving).await;
    p.generate("2026-11-01", "2026-11-04", "0.004", &[], &[]);
    p.generate("2026-11-05", "2026-11-05", "0.0004", &[], &[]);
    let out = p.ok(&["backfill", "--from", "2026-11-01", "--to", "2026-11-05"]);
    assert!(
        stderr(&out).contains("volume(change <= 50%"),
        "{}",
        stderr(&out)
    );
    let failed = checks(&p, &["--failed"]);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let f = &failed[0];
    assert_eq!(
        (f["model"].as_str(), f["day"].as_str(), f["status"].as_str()),
        (Some("user_activity_agg"), Some("2026-11-05"), Some("warn"))
    );
    let volume: Vec<serde_json::Value> = checks(&p, &["--model", "user_activity_agg"])
        .into_iter()
        .filter(|c| c["check"].as_str().unwrap().starts_with("volume"))
        .collect();
    assert_eq!(volume.len(), 5);
    assert!(volume[0]["observed"]
        .as_str()
        .unwrap()
        .contains("% from the median"));
    let written = p.db.user_activity(crate::d("2026-11-05")).await;
    assert!(!written.is_empty(), "a warning writes the day");
    p.drop_db().await;
}

/// A check that does not parse is a configuration error naming the file
/// and line (exit 2), in a model header and in a SQL check.
#[tokio::test]
async fn bad_check_syntax_names_the_file_and_line() {
    let p = project(Serving::Sqlite).await;
    p.generate("2026-11-01", "2026-11-01", "0.002", &[], &[]);
    std::fs::write(
        p.path().join("models/odd_rows.sql"),
        ODD_MODEL.replace("not_null(v)", "not_nul(v)"),
    )
    .unwrap();
    let err = stderr(&p.expect(&["run", "--date", "2026-11-01"], 2));
    assert!(
        err.contains("odd_rows.sql:6") && err.contains("unknown check `not_nul`"),
        "{err}"
    );
    std::fs::remove_file(p.path().join("models/odd_rows.sql")).unwrap();
    std::fs::write(
        p.path().join("checks/bad.sql"),
        "-- model: block_daily_metrics\n-- severity: fatal\nSELECT 1",
    )
    .unwrap();
    let err = stderr(&p.expect(&["run", "--date", "2026-11-01"], 2));
    assert!(
        err.contains("bad.sql:2") && err.contains("severity `fatal`"),
        "{err}"
    );
    std::fs::write(
        p.path().join("checks/bad.sql"),
        "-- model: no_such_model\nSELECT 1",
    )
    .unwrap();
    let err = stderr(&p.expect(&["run", "--date", "2026-11-01"], 2));
    assert!(
        err.contains("bad.sql:1") && err.contains("no_such_model"),
        "{err}"
    );
    p.drop_db().await;
}

/// `check` on demand: clean days pass (their checks, the serving tables
/// against a recomputation, the two layers of a day held in both); a
/// manual UPDATE of a served row is found by `--deep`, naming the key and
/// column; a landing file lost after the day's compaction makes the layers
/// disagree. Exit 1 on a failure, and nothing is written but the
/// results.
#[tokio::test]
async fn check_on_demand_finds_a_manual_edit_and_a_lost_landing_file() {
    for serving in SINKS {
        let p = project(serving).await;
        p.generate("2026-11-01", "2026-11-02", "0.005", &["2026-11-02"], &[]);
        // Compacted, its landing files kept: the day is in both layers.
        p.ok(&["compact", "--date", "2026-11-02", "--force"]);
        p.ok(&["backfill", "--from", "2026-11-01", "--to", "2026-11-02"]);
        let run = |args: &[&str], code: i32| -> Vec<serde_json::Value> {
            let out = p.expect(&[&["check", "--json"][..], args].concat(), code);
            serde_json::from_str::<serde_json::Value>(&stdout(&out))
                .unwrap()
                .as_array()
                .unwrap()
                .clone()
        };
        let clean = run(&["--from", "2026-11-01", "--to", "2026-11-02", "--deep"], 0);
        assert!(
            clean.iter().all(|r| r["status"] == "pass"),
            "{serving:?}: {clean:#?}"
        );
        let names: Vec<(&str, &str)> = clean
            .iter()
            .map(|r| (r["model"].as_str().unwrap(), r["check"].as_str().unwrap()))
            .filter(|(_, c)| *c == "matches_serving" || *c == "layers_agree")
            .collect();
        assert_eq!(
            names,
            [
                ("user_activity_agg", "matches_serving"),
                ("block_daily_metrics", "matches_serving"),
                ("user_activity_agg", "matches_serving"),
                ("block_daily_metrics", "matches_serving"),
                ("_inputs", "layers_agree"),
            ],
            "{serving:?}"
        );
        let before = p.db.dump("user_activity_agg", &[]).await;

        p.db.execute(
            "UPDATE user_activity_agg SET tx_sent = tx_sent + 1 WHERE day = '2026-11-02' \
             AND address = (SELECT min(address) FROM user_activity_agg WHERE day = '2026-11-02')",
        )
        .await;
        let found = run(&["--date", "2026-11-02", "--deep"], 1);
        let bad: Vec<&serde_json::Value> = found.iter().filter(|r| r["status"] != "pass").collect();
        assert_eq!(bad.len(), 1, "{serving:?}: {bad:#?}");
        assert_eq!(
            (
                bad[0]["model"].as_str(),
                bad[0]["check"].as_str(),
                bad[0]["failing_rows"].as_i64()
            ),
            (Some("user_activity_agg"), Some("matches_serving"), Some(1))
        );
        let sample = bad[0]["sample"].as_str().unwrap();
        assert!(
            sample.contains("address=") && sample.contains("tx_sent: served "),
            "{sample}"
        );
        // Without --deep the edit is not looked for.
        run(&["--date", "2026-11-02"], 0);

        let landing = p.path().join("data/landing/transactions/date=2026-11-02");
        let mut files: Vec<_> = std::fs::read_dir(&landing)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        std::fs::remove_file(&files[0]).unwrap();
        let found = run(&["--date", "2026-11-02"], 1);
        let layers = found.iter().find(|r| r["check"] == "layers_agree").unwrap();
        assert_eq!(layers["status"], "fail", "{serving:?}: {layers:#}");
        assert!(
            layers["observed"]
                .as_str()
                .unwrap()
                .starts_with("speed layer: "),
            "{layers}"
        );
        // Checking wrote no model rows.
        let after = p.db.dump("user_activity_agg", &[]).await;
        assert_eq!(after.len(), before.len(), "{serving:?}");
        p.drop_db().await;
    }
}

/// A check that does not pass posts one alert to `scheduler.webhook` per
/// check and day, however often the day is run again.
#[tokio::test]
async fn a_failed_check_alerts_once_per_check_and_day() {
    let (url, bodies) = crate::schedule::webhook_server();
    let p = project(Serving::Sqlite).await;
    p.append_config(&format!(
        "[scheduler]\nwebhook = \"{url}\"\nwebhook_attempts = 2"
    ));
    p.generate("2026-11-01", "2026-11-02", "0.002", &[], &[]);
    std::fs::write(p.path().join("models/odd_rows.sql"), ODD_MODEL).unwrap();
    let run = |day: &str| p.expect(&["run", "--date", day, "--model", "odd_rows"], 1);
    run("2026-11-01");
    run("2026-11-01");
    let alerts: Vec<serde_json::Value> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let mut checks: Vec<&str> = alerts
        .iter()
        .map(|a| a["check"].as_str().unwrap())
        .collect();
    checks.sort();
    assert_eq!(
        checks,
        [
            "accepted_values(kind, ['a', 'b'])",
            "expression(n < 11 OR kind = 'a')",
            "not_null(v)",
            "range(n, 0, 10)",
            "row_count(1, 2)",
            "unique(v)"
        ],
        "{alerts:#?}"
    );
    assert!(alerts.iter().all(|a| a["kind"] == "check_failed"
        && a["model"] == "odd_rows"
        && a["day"] == "2026-11-01"));
    run("2026-11-02");
    assert_eq!(bodies.lock().unwrap().len(), 12, "a new day alerts again");
    // `check` finding what a run already alerted stays quiet; on a day no
    // run saw, `check` alerts first and the run after it stays quiet.
    let check = |day: &str| p.expect(&["check", "--date", day, "--model", "odd_rows"], 1);
    check("2026-11-02");
    assert_eq!(bodies.lock().unwrap().len(), 12, "already alerted");
    p.generate("2026-11-03", "2026-11-03", "0.002", &[], &[]);
    check("2026-11-03");
    assert_eq!(
        bodies.lock().unwrap().len(),
        18,
        "check alerts a new failure"
    );
    run("2026-11-03");
    assert_eq!(bodies.lock().unwrap().len(), 18, "once per check and day");
    p.drop_db().await;
}

/// Freshness: after `realtime` caught up, `check` finds the realtime
/// tables current; blocks that land while it is not running put them
/// behind the speed layer by more than `speed.max_lag_blocks` and `check`
/// fails, naming both block numbers.
#[tokio::test]
async fn freshness_fails_when_realtime_falls_behind() {
    let p = project(Serving::Sqlite).await;
    let day = crate::d("2026-11-10");
    crate::realtime::live(&p, day, 20, "100000");
    p.ok(&["realtime", "--exit-when-idle"]);
    let fresh = |code: i32| -> serde_json::Value {
        let out = p.expect(&["check", "--json", "--date", "2026-11-10"], code);
        let all: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
        all.into_iter()
            .find(|r| r["check"] == "realtime_fresh")
            .expect("a freshness result")
    };
    let r = fresh(0);
    assert_eq!(r["status"], "pass", "{r:#}");
    assert!(
        r["observed"]
            .as_str()
            .unwrap()
            .contains(" 0 block(s) behind"),
        "{r:#}"
    );
    crate::realtime::live(&p, day, 60, "100000");
    let r = fresh(1);
    assert_eq!(r["status"], "fail", "{r:#}");
    assert!(
        r["expected"].as_str().unwrap().contains("at most 25"),
        "{r:#}"
    );
    p.ok(&["realtime", "--exit-when-idle"]);
    assert_eq!(fresh(0)["status"], "pass");
    p.drop_db().await;
}
