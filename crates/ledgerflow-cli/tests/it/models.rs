//! Each default model against the independent reference computation, for a
//! batch day, a day present in both layers (counted once), and a speed day
//! with reorgs.

use std::process::Output;

use ledgerflow::generate::chain::GenParams;
use ledgerflow_testkit::project::{
    parquet_files, stderr, stdout, string_column, Paused, TestProject,
};
use ledgerflow_testkit::reference::{self, generated_day};
use ledgerflow_testkit::serving::{assert_daily_eq, assert_minutes_eq, Serving};

use crate::{d, project, SINKS};

/// The three days both suites load: day 1 batch only, day 2 in both
/// layers, day 3 speed only with reorgs (seed 42, scale 0.01).
pub(crate) const THREE_DAYS: [&str; 3] = ["2026-11-01", "2026-11-02", "2026-11-03"];

pub(crate) fn three_days_params() -> GenParams {
    GenParams {
        seed: 42,
        scale: 0.01,
        reorg_rate: 0.15,
        ..Default::default()
    }
}

/// Generates [`THREE_DAYS`]: a batch day, a day in both layers, a reorged
/// speed day.
pub(crate) fn generate_three_days(p: &TestProject) -> Vec<Output> {
    generate_three_days_with(p, &[])
}

/// [`generate_three_days`] with extra `generate` flags.
fn generate_three_days_with(p: &TestProject, flags: &[&str]) -> Vec<Output> {
    let [d1, d2, d3] = THREE_DAYS;
    let generate = |from: &str, to: &str, extra: &[&str]| {
        p.ok(&[
            &["generate", "--from", from, "--to", to, "--scale", "0.01"][..],
            &["--reorg-rate", "0.15"],
            extra,
            flags,
        ]
        .concat())
    };
    vec![
        generate(d1, d2, &["--speed-days", d2, "--also-batch"]),
        generate(d3, d3, &["--speed-days", d3]),
    ]
}

/// Generates [`THREE_DAYS`] into `p`'s layers and backfills them with
/// `backfill_flags`; checks each day read from its layer. Returns every
/// command's output.
pub(crate) fn load_three_days(p: &TestProject, backfill_flags: &[&str]) -> Vec<Output> {
    load_three_days_with(p, &[], backfill_flags)
}

fn load_three_days_with(
    p: &TestProject,
    gen_flags: &[&str],
    backfill_flags: &[&str],
) -> Vec<Output> {
    let [d1, _, d3] = THREE_DAYS;
    let mut outputs = generate_three_days_with(p, gen_flags);
    let out = p.ok(&[&["backfill", "--from", d1, "--to", d3][..], backfill_flags].concat());
    let text = stdout(&out);
    assert!(
        text.contains("2026-11-02 block_daily_metrics      batch"),
        "{text}"
    );
    assert!(
        text.contains("2026-11-03 block_daily_metrics      speed"),
        "{text}"
    );
    outputs.push(out);
    outputs
}

/// Every default model's table over [`THREE_DAYS`] equals the reference.
pub(crate) async fn assert_three_days_equal_the_reference(p: &TestProject) {
    let params = three_days_params();
    let daily = p.db.block_daily_metrics().await;
    assert_eq!(daily.len(), 3);
    let mut minutes_expected = Vec::new();
    for (i, day) in THREE_DAYS.iter().map(|s| d(s)).enumerate() {
        let (blocks, txs) = generated_day(&params, day, i > 0);
        let expected = reference::block_daily_metrics(day, &blocks, &txs).unwrap();
        assert_daily_eq(&daily[i], &expected);
        let users = p.db.user_activity(day).await;
        let expected_users = reference::user_activity(day, &blocks, &txs);
        assert_eq!(users.len(), expected_users.len(), "{day}");
        assert_eq!(users, expected_users, "{day}");
        minutes_expected.extend(reference::realtime_minutes(day, &blocks, &txs));
    }
    assert_minutes_eq(&p.db.realtime_minutes().await, &minutes_expected);
}

#[tokio::test]
async fn models_equal_the_reference_on_batch_both_and_speed_days() {
    let (blocks, _) = generated_day(&three_days_params(), d(THREE_DAYS[2]), true);
    assert!(
        blocks.iter().any(|b| !b.canonical),
        "the speed day must contain reorgs to test the rule"
    );
    for serving in SINKS {
        let p = project(serving).await;
        load_three_days(&p, &[]);
        assert_three_days_equal_the_reference(&p).await;
        p.drop_db().await;
    }
}

/// DataFusion skips a grouping's partial step when it keeps more than half
/// its rows as groups (ledgerflow's setting), which it decides only after
/// 100,000 rows, more than a test day has. Here every grouping skips it
/// after 100 rows, and the numbers stay the reference's.
#[tokio::test]
async fn models_equal_the_reference_when_partial_aggregation_is_skipped() {
    let p = project(ledgerflow_testkit::serving::Serving::Sqlite).await;
    p.append_config(
        "[engine.datafusion]\nexecution.skip_partial_aggregation_probe_rows_threshold = 100\n\
         execution.skip_partial_aggregation_probe_ratio_threshold = 0.0",
    );
    load_three_days(&p, &[]);
    assert_three_days_equal_the_reference(&p).await;
}

/// A check reading columns no model reads (the hashes): on a copied speed
/// day it reads them from the micro-batches, orphans dropped all the same.
const HASH_CHECK: &str = "-- model: block_daily_metrics
-- severity: error
SELECT m.day, m.tx_count, t.hashes AS tx_hashes, m.block_count, b.hashes AS block_hashes
FROM block_daily_metrics m
CROSS JOIN (SELECT count(DISTINCT hash) AS hashes FROM transactions
            WHERE block_timestamp >= $start AND block_timestamp < $end) t
CROSS JOIN (SELECT count(DISTINCT hash) AS hashes FROM blocks
            WHERE \"timestamp\" >= $start AND \"timestamp\" < $end) b
WHERE m.tx_count <> t.hashes OR m.block_count <> b.hashes
";

/// `run --date day --force` at info level, successful: its log.
fn rerun_logged(p: &TestProject, day: &str) -> String {
    let out = p
        .cmd(&["run", "--date", day, "--force"])
        .env("LEDGERFLOW_LOG", "info")
        .output()
        .unwrap();
    let log = ledgerflow_testkit::project::stderr(&out);
    assert!(out.status.success(), "{log}");
    log
}

/// A speed day of one block per micro-batch (~170 files, more than
/// `COPY_ABOVE_FILES`) is read through its one-run copy of the columns the
/// models read: the numbers are the reference's, reorgs included, a check
/// reading other columns passes, and the copy is gone after the run.
#[tokio::test]
async fn a_speed_day_of_many_micro_batches_is_read_through_a_copy() {
    for serving in SINKS {
        let p = project(serving).await;
        std::fs::write(p.path().join("checks/hashes_are_distinct.sql"), HASH_CHECK).unwrap();
        load_three_days_with(&p, &["--blocks-per-file", "1"], &[]);
        assert_three_days_equal_the_reference(&p).await;
        // The same day again, logged: it went through the copy.
        let log = rerun_logged(&p, THREE_DAYS[2]);
        assert!(log.contains("speed day copied for its models"), "{log}");
        assert!(log.contains("blocks 5/10 ("), "{log}");
        assert!(log.contains("transactions 7/13 ("), "{log}");
        // Orphans dropped, the canonical rows came in time order: the copy
        // was registered with that order (the numbers below are read
        // through it).
        assert!(log.contains("rows, in time order), transactions"), "{log}");
        assert!(log.contains("rows, in time order)\""), "{log}");
        assert_three_days_equal_the_reference(&p).await;

        // Data the generator never makes: the day's first transactions
        // arrive last. The copy sees it out of time order, says nothing of
        // an order, and the numbers are the same.
        let landing = p
            .path()
            .join(format!("data/landing/transactions/date={}", THREE_DAYS[2]));
        let files = parquet_files(&landing);
        let (first, last) = (&files[0], &files[files.len() - 1]);
        let aside = landing.join("aside.tmp");
        std::fs::rename(first, &aside).unwrap();
        std::fs::rename(last, first).unwrap();
        std::fs::rename(&aside, last).unwrap();
        let log = rerun_logged(&p, THREE_DAYS[2]);
        assert!(log.contains("transactions 7/13 ("), "{log}");
        assert!(!log.contains("rows, in time order)\""), "{log}");
        assert_three_days_equal_the_reference(&p).await;
        let spill = p.path().join(".ledgerflow/spill");
        let left: Vec<_> = std::fs::read_dir(&spill)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in the spill dir: {left:?}");
        p.drop_db().await;
    }
}

/// Regression: a micro-batch's transactions land before its blocks; a run
/// listing the day in between must not count transactions whose block it
/// has not seen (they were kept when only known orphans were filtered out).
#[tokio::test]
async fn transactions_of_blocks_not_yet_landed_are_not_counted() {
    let params = GenParams {
        seed: 42,
        scale: 0.01,
        reorg_rate: 0.0,
        ..Default::default()
    };
    let day = d("2026-11-04");
    let p = project(ledgerflow_testkit::serving::Serving::Sqlite).await;
    p.generate(
        "2026-11-04",
        "2026-11-04",
        "0.01",
        &["2026-11-04"],
        &["--reorg-rate", "0"],
    );
    let blocks_dir = p.path().join("data/landing/blocks/date=2026-11-04");
    let last = parquet_files(&blocks_dir).pop().unwrap();
    let unlanded = string_column(&last, "hash");
    std::fs::remove_file(&last).unwrap();
    p.ok(&[
        "run",
        "--date",
        "2026-11-04",
        "--model",
        "block_daily_metrics",
    ]);

    let (mut blocks, txs) = generated_day(&params, day, true);
    blocks.retain(|b| !unlanded.contains(&b.hash));
    let expected = reference::block_daily_metrics(day, &blocks, &txs).unwrap();
    let daily = p.db.block_daily_metrics().await;
    assert_daily_eq(&daily[0], &expected);
    let all_txs = reference::block_daily_metrics(day, &generated_day(&params, day, true).0, &txs)
        .unwrap()
        .tx_count;
    assert!(
        daily[0].tx_count < all_txs,
        "the unlanded block's transactions were counted"
    );
}

/// A model's write holds no query slot (`parallel_models = 1`): the model
/// others read (`user_activity_agg`) runs first, and while the database
/// takes its rows (paused mid-COPY here) `realtime_dashboard`'s query runs
/// and its day is written; `block_daily_metrics` has started on its
/// upstream's output (it does not wait for that write) but is written only
/// after it. The numbers still equal the reference.
#[tokio::test]
async fn the_next_query_runs_while_a_model_is_written() {
    let p = project(Serving::Postgres).await;
    let [d1, _, d3] = THREE_DAYS;
    generate_three_days(&p);
    let backfill = Paused::start(
        &p,
        &["backfill", "--from", d1, "--to", d3],
        "during_copy:user_activity_agg",
        &[],
    );
    let state = |runs: &[(String, chrono::NaiveDate, String)], model: &str| {
        runs.iter()
            .find(|(m, day, _)| m == model && *day == d(d1))
            .map(|(_, _, s)| s.clone())
    };
    let started = std::time::Instant::now();
    let runs = loop {
        let runs = p.db.runs().await;
        if state(&runs, "realtime_dashboard").as_deref() == Some("success") {
            break runs;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "realtime_dashboard did not run while user_activity_agg was written: {runs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        state(&runs, "user_activity_agg").as_deref(),
        Some("running"),
        "{runs:?}"
    );
    assert_eq!(
        state(&runs, "block_daily_metrics").as_deref(),
        Some("running"),
        "{runs:?}"
    );
    let out = backfill.release();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_three_days_equal_the_reference(&p).await;
    p.drop_db().await;
}

/// `explain` shows a model's plan for a day as a run plans it, from the
/// day's layer, its upstream computed inside it; `--analyze` runs it and
/// shows each operator's rows; nothing is written or recorded; an unknown
/// model or a day without data is an error naming it.
#[tokio::test]
async fn explain_shows_a_models_plan_and_writes_nothing() {
    let p = project(Serving::Sqlite).await;
    generate_three_days(&p);
    let [d1, _, d3] = THREE_DAYS;
    let text = stdout(&p.ok(&["explain", "user_activity_agg", "--date", d1]));
    assert!(
        text.starts_with(&format!(
            "user_activity_agg for {d1} (inputs from the batch layer)"
        )),
        "{text}"
    );
    assert!(
        text.contains("logical_plan:") && text.contains("physical_plan:"),
        "{text}"
    );
    assert!(text.contains("AggregateExec"), "{text}");
    assert!(
        text.contains(&format!("date={d1}")),
        "the day's files: {text}"
    );

    // A model reading another, on a speed day, analyzed: its upstream's
    // aggregation is inside its plan and every operator has its metrics.
    let json: serde_json::Value = serde_json::from_str(&stdout(&p.ok(&[
        "explain",
        "block_daily_metrics",
        "--date",
        d3,
        "--analyze",
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["layer"], "speed", "{json:#}");
    let plans = json["plans"].as_array().unwrap();
    let analyzed = plans
        .iter()
        .find(|p| p[0] == "Plan with Metrics")
        .unwrap_or_else(|| panic!("{json:#}"))[1]
        .as_str()
        .unwrap();
    assert!(analyzed.contains("output_rows="), "{analyzed}");
    assert!(
        analyzed.matches("AggregateExec").count() >= 2,
        "user_activity_agg computed inside: {analyzed}"
    );

    assert!(p.db.runs().await.is_empty(), "explain records no run");
    for table in ["user_activity_agg", "block_daily_metrics"] {
        assert!(!p.db.has_table(table).await, "explain writes no {table}");
    }

    let err = stderr(&p.expect(&["explain", "no_such_model", "--date", d1], 2));
    assert!(err.contains("unknown model `no_such_model`"), "{err}");
    let err = stderr(&p.expect(&["explain", "user_activity_agg", "--date", "2026-12-01"], 1));
    assert!(err.contains("no data for 2026-12-01"), "{err}");
}
