//! `ingest`, `schemas` and `generate --partner-dumps` through the binary:
//! drift, reconciliation, load-once, SIGKILL mid-merge, retries, hostile
//! archives, and the core catalog reading what ingest wrote.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::NaiveDate;
use ledgerflow::catalog::batch::BatchLayer;
use ledgerflow::config::Config;
use ledgerflow_testkit::project::{stderr, stdout, TestProject};
use ledgerflow_testkit::serving::Serving;
use serde_json::Value;

use crate::project;

use crate::nov as day;

/// Partner dumps for 2026-11-01..=`last` in `<project>/dumps`.
pub(crate) fn dumps(p: &TestProject, last: &str, rows: &str) -> PathBuf {
    p.ok(&[
        "generate",
        "--from",
        "2026-11-01",
        "--to",
        last,
        "--partner-dumps",
        "dumps",
        "--rows-per-batch",
        rows,
    ]);
    p.path().join("dumps")
}

/// The path of 2026-11-01's `n`-th partner archive in `dir`.
pub(crate) fn archive(dir: &Path, n: u32) -> String {
    dir.join(format!("partner_2026-11-01_{n:04}.tar.gz"))
        .display()
        .to_string()
}

fn ingest_json(p: &TestProject, args: &[&str], code: i32) -> Value {
    let mut all = vec!["ingest", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&stdout(&p.expect(&all, code))).unwrap()
}

fn table<'a>(report: &'a Value, t: &str, d: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["table"] == t && x["day"] == d)
        .unwrap_or_else(|| panic!("no {t} {d} in {report:#}"))
}

fn actions(report: &Value) -> Vec<String> {
    report["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect()
}

fn batch(p: &TestProject) -> BatchLayer {
    BatchLayer::open(&Config::load(&p.config_path()).unwrap()).unwrap()
}

async fn rows_in(b: &BatchLayer, t: &str, d: NaiveDate) -> u64 {
    let mut rows = 0;
    for m in b.list_day(t, d).await.unwrap() {
        rows += b.files.row_count(&m).await.unwrap();
    }
    rows
}

#[tokio::test]
async fn drift_over_days_reconciles_and_the_catalog_reads_it() {
    let p = project(Serving::Sqlite).await;
    let dir = dumps(&p, "2026-11-05", "1300");
    let dir_s = dir.display().to_string();
    for d in 1..=5 {
        let date = day(d).to_string();
        let code = if d == 5 { 1 } else { 0 };
        let r = ingest_json(&p, &[&dir_s, "--date", &date], code);
        assert_eq!(r["reconciled"], true, "{r:#}");
        // The other days' archives are left alone (or known), not refused.
        let acts = actions(&r);
        let count = |what: &[&str]| acts.iter().filter(|a| what.contains(&a.as_str())).count();
        let n = d as usize;
        assert_eq!(
            (
                count(&["loaded", "partial"]),
                count(&["unchanged"]),
                count(&["other_day"])
            ),
            (2, 2 * (n - 1), 10 - 2 * n),
            "{acts:?}"
        );
        for t in ["transfers", "prices"] {
            let tr = table(&r, t, &date);
            assert_eq!(tr["state"], "committed");
            assert_eq!(tr["rows_read"], 2600);
            assert_eq!(
                tr["rows_read"].as_u64().unwrap(),
                tr["rows_written"].as_u64().unwrap() + tr["rows_quarantined"].as_u64().unwrap()
            );
            assert_eq!(tr["rows_on_disk"], tr["rows_written"]);
        }
        // Rows 1007 and 1257 of each transfers batch are bad.
        assert_eq!(table(&r, "transfers", &date)["rows_quarantined"], 4);
    }
    let schemas: Value = serde_json::from_str(&stdout(&p.ok(&["schemas", "--json"]))).unwrap();
    let versions: Vec<(String, usize)> = schemas
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["versions"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("balances".into(), 1),
            ("prices".into(), 2),
            ("transfers".into(), 4)
        ]
    );
    let text = stdout(&p.ok(&["schemas", "transfers"]));
    assert!(
        text.contains("widened block_time date -> timestamp"),
        "{text}"
    );
    p.expect(&["schemas", "nope"], 2);

    // The core catalog: committed markers, readable footers, and a query.
    let config = Config::load(&p.config_path()).unwrap();
    let b = batch(&p);
    assert!(b.is_committed("transfers", day(3)).await.unwrap());
    assert!(!b.is_committed("balances", day(5)).await.unwrap());
    let files = b.list_day("transfers", day(3)).await.unwrap();
    assert!(!files.is_empty());
    for f in &files {
        b.files.file_schema(f).await.unwrap();
    }
    let ctx = ledgerflow::engine::session(&config).unwrap();
    let urls: Vec<String> = files.iter().map(|f| b.files.url(&f.location)).collect();
    ctx.register_parquet(
        "t",
        urls[0].clone(),
        datafusion::prelude::ParquetReadOptions::default(),
    )
    .await
    .unwrap();
    let batches = ctx
        .sql("SELECT count(*) AS n, count(memo) AS m, max(block_time) AS t FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n as u64, b.files.row_count(&files[0]).await.unwrap());
    assert!(n > 0);
}

#[tokio::test]
async fn the_same_archives_twice_load_once_and_dry_run_writes_nothing() {
    let p = project(Serving::Sqlite).await;
    let dir = dumps(&p, "2026-11-01", "300");
    let dir_s = dir.display().to_string();
    let dry = ingest_json(&p, &[&dir_s, "--dry-run"], 0);
    assert_eq!(actions(&dry), ["would_load", "would_load"]);
    assert!(!p.path().join("data/batch/transfers").exists());
    let first = ingest_json(&p, &[&dir_s], 0);
    assert_eq!(actions(&first), ["loaded", "loaded"]);
    let b = batch(&p);
    let before = rows_in(&b, "transfers", day(1)).await;
    assert_eq!(before, 600);
    let again = ingest_json(&p, &[&dir_s], 0);
    assert_eq!(actions(&again), ["unchanged", "unchanged"]);
    assert_eq!(rows_in(&b, "transfers", day(1)).await, before);
    assert_eq!(
        ingest_json(&p, &[&dir_s, "--dry-run"], 0)["archives"][0]["action"],
        "unchanged"
    );
}

/// Starts `ingest` with a failpoint armed, waits until it is reached, and
/// SIGKILLs it.
fn kill_at(p: &TestProject, failpoint: &str, args: &[&str]) {
    let mut all = vec!["ingest"];
    all.extend_from_slice(args);
    let mut cmd = p.cmd(&all);
    cmd.env("LEDGERFLOW_FAILPOINT", failpoint)
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let reached = stderr
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("reached"));
    assert!(reached, "failpoint {failpoint} never reached");
    child.kill().unwrap();
    child.wait().unwrap();
}

fn data_files(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".parquet") && !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn sigkill_mid_merge_commits_nothing_partial_and_the_rerun_completes() {
    let p = project(Serving::Sqlite).await;
    let dir = dumps(&p, "2026-11-01", "20000");
    let (a0, a1) = (archive(&dir, 0), archive(&dir, 1));
    let part = p.path().join("data/batch/transfers/date=2026-11-01");
    let b = batch(&p);

    // 1. Killed while writing the first archive: never committed, no data
    //    file visible.
    kill_at(&p, "ingest_mid_merge:transfers", &[&a0]);
    assert!(!b.is_committed("transfers", day(1)).await.unwrap());
    assert!(data_files(&part).is_empty(), "{:?}", data_files(&part));
    let r = ingest_json(&p, &[&a0], 0);
    assert_eq!(actions(&r), ["loaded"]);
    let one = rows_in(&b, "transfers", day(1)).await;
    assert_eq!(
        one,
        table(&r, "transfers", "2026-11-01")["rows_written"]
            .as_u64()
            .unwrap()
    );
    let committed_files = data_files(&part);

    // 2. Killed after the second archive's files were renamed in, before
    //    the marker: the partition is uncommitted (readers fall back), and
    //    the next ingest rolls the half-done archive back.
    kill_at(&p, "ingest_before_marker:transfers", &[&a1]);
    assert!(!b.is_committed("transfers", day(1)).await.unwrap());
    assert!(data_files(&part).len() > committed_files.len());
    // A no-op ingest (the first archive again) is enough to roll back.
    let r = ingest_json(&p, &[&a0], 0);
    assert_eq!(actions(&r), ["unchanged"]);
    assert!(b.is_committed("transfers", day(1)).await.unwrap());
    assert_eq!(data_files(&part), committed_files);
    assert_eq!(rows_in(&b, "transfers", day(1)).await, one);

    // 3. The rerun completes: both archives, each once.
    let r = ingest_json(&p, &[&a0, &a1], 0);
    assert_eq!(actions(&r), ["unchanged", "loaded"]);
    let two = rows_in(&b, "transfers", day(1)).await;
    assert_eq!(two, 2 * one);
    assert!(b.is_committed("transfers", day(1)).await.unwrap());
    assert!(
        std::fs::read_dir(&part).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".ingest-tmp")),
        "temporary files left behind"
    );
}

/// Killed after its data and manifest committed, before the run ledger:
/// the next ingest (once the record has settled for `ledger.lease`) writes
/// the missing steps from the manifest, once.
#[tokio::test]
async fn a_load_that_never_reached_the_ledger_is_recorded_by_the_next_ingest() {
    let p = project(Serving::Sqlite).await;
    p.append_config("[ledger]\nlease = \"1s\"");
    let dir = dumps(&p, "2026-11-01", "300");
    let (a0, a1) = (archive(&dir, 0), archive(&dir, 1));
    let merges = |p: &TestProject| -> Vec<Value> {
        let out = p.ok(&["runs", "--json", "--limit", "1000"]);
        let rows: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
        rows.into_iter()
            .filter(|r| {
                r["model"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("ingest:merge:"))
            })
            .collect()
    };
    kill_at(&p, "ingest_before_ledger", &[&a0]);
    let b = batch(&p);
    let loaded = rows_in(&b, "transfers", day(1)).await;
    assert!(loaded > 0, "the data committed");
    assert!(merges(&p).is_empty(), "no ledger row yet");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The same archive again (as a retry would) beside a new one: the
    // first is unchanged, and its steps are recorded from the manifest.
    let r = ingest_json(&p, &[&a0, &a1], 0);
    assert_eq!(actions(&r), ["unchanged", "loaded"]);
    let rows = merges(&p);
    let reconciled: Vec<&Value> = rows
        .iter()
        .filter(|r| r["trigger"] == "reconcile")
        .collect();
    assert!(!reconciled.is_empty(), "{rows:#?}");
    let transfers: i64 = reconciled
        .iter()
        .filter(|r| r["model"] == "ingest:merge:transfers")
        .map(|r| r["rows_written"].as_i64().unwrap())
        .sum();
    assert_eq!(transfers as u64, loaded, "{reconciled:#?}");
    // The second archive's own steps, and nothing recorded twice.
    assert!(rows.iter().any(|r| r["trigger"] == "ingest"));
    ingest_json(&p, &[&a0, &a1], 0);
    let again = merges(&p);
    assert_eq!(
        again.iter().filter(|r| r["trigger"] == "reconcile").count(),
        reconciled.len()
    );
}

#[tokio::test]
async fn retry_failed_reruns_only_the_failed_table() {
    let p = project(Serving::Sqlite).await;
    let dir = dumps(&p, "2026-11-05", "200");
    let only5: Vec<String> = ["0000", "0001"]
        .iter()
        .map(|n| {
            dir.join(format!("partner_2026-11-05_{n}.tar.gz"))
                .display()
                .to_string()
        })
        .collect();
    // Day 4 registers balances.as_of as a date; day 5 sends integers.
    ingest_json(&p, &[&dir.display().to_string(), "--date", "2026-11-04"], 0);
    let r = ingest_json(&p, &[&only5[0], &only5[1]], 1);
    assert_eq!(actions(&r), ["partial", "partial"]);
    assert_eq!(table(&r, "balances", "2026-11-05")["state"], "failed");
    let transfers = p.path().join("data/batch/transfers/date=2026-11-05");
    let stamp = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().modified().unwrap())
            })
            .collect::<Vec<_>>()
    };
    let before = stamp(&transfers);
    // Without --retry-failed a partial archive is not re-read.
    assert_eq!(actions(&ingest_json(&p, &[&only5[0]], 0)), ["unchanged"]);
    // The partner's integers are accepted as bad rows now.
    p.set_config("[engine]", "[ingest]\nmax_bad_rows_ratio = 1.0\n\n[engine]");
    let r = ingest_json(&p, &["--retry-failed", "--date", "2026-11-05"], 0);
    assert_eq!(actions(&r), ["loaded", "loaded"]);
    let tables: Vec<&str> = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["balances"]);
    assert_eq!(table(&r, "balances", "2026-11-05")["rows_quarantined"], 400);
    assert_eq!(stamp(&transfers), before, "a finished table was touched");
    // The ledger has each step; the balances merge failed once, then passed.
    let runs = stdout(&p.ok(&["runs", "--json", "--limit", "200"]));
    let runs: Value = serde_json::from_str(&runs).unwrap();
    let merges: Vec<(String, i64)> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["model"] == "ingest:merge:balances" && r["day"] == "2026-11-05")
        .map(|r| {
            (
                r["state"].as_str().unwrap().to_string(),
                r["attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        merges,
        [("success".to_string(), 2), ("failed".to_string(), 1)]
    );
    let models: std::collections::BTreeSet<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    for m in [
        "ingest:set_date",
        "ingest:extract",
        "ingest:summary",
        "ingest:check",
    ] {
        assert!(models.contains(m), "{models:?}");
    }
    assert!(batch(&p).is_committed("balances", day(5)).await.unwrap());
}

#[tokio::test]
async fn hostile_archives_exit_1_and_write_nothing() {
    let p = project(Serving::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let mut hostile = ledgerflow::generate::partner::hostile_archives(
        dir.path(),
        &ledgerflow::generate::partner::HostileParams {
            bomb_bytes: 20 << 20,
            huge_line_bytes: 2 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    hostile.sort();
    p.set_config("[engine]", "[ingest]\nmax_line = \"1 MiB\"\n\n[engine]");
    let r = ingest_json(&p, &[&dir.path().display().to_string()], 1);
    let archives = r["archives"].as_array().unwrap();
    assert_eq!(archives.len(), hostile.len());
    for (a, (path, why)) in archives.iter().zip(&hostile) {
        assert_eq!(a["action"], "rejected", "{}", path.display());
        assert!(a["reason"].as_str().unwrap().contains(why), "{a}");
    }
    let root = p.path().join("data/batch");
    let names: Vec<String> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["_ingest"], "{names:?}");
    p.expect(&["ingest"], 2);
}

#[tokio::test]
async fn readiness_skips_with_99_or_waits_for_the_missing_batches() {
    let p = project(Serving::Sqlite).await;
    let dir = dumps(&p, "2026-11-01", "100");
    p.set_config(
        "[engine]",
        "[ingest]\npoll_seconds = 1\n[ingest.expected]\ntransfers = 2\nprices = 2\n\n[engine]",
    );
    let late = dir.join("partner_2026-11-01_0001.tar.gz");
    let aside = p.path().join("late.tar.gz");
    std::fs::rename(&late, &aside).unwrap();
    let dir_s = dir.display().to_string();
    let out = p.expect(&["ingest", &dir_s, "--date", "2026-11-01"], 99);
    let text = stdout(&out);
    assert!(text.contains("transfers: 1 of 2 batches"), "{text}");
    assert!(!p.path().join("data/batch/transfers").exists());
    let started = std::time::Instant::now();
    let r = ingest_json(
        &p,
        &[&dir_s, "--date", "2026-11-01", "--wait", "--timeout", "2s"],
        99,
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(r["skipped"], true);
    assert_eq!(r["readiness"]["present"]["prices"], 1);
    let runs = stdout(&p.ok(&["runs", "--json", "--model", "ingest:wait_for_sources"]));
    let runs: Value = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs[0]["state"], "skipped");
    assert!(runs[0]["error"]
        .as_str()
        .unwrap()
        .contains("transfers: 1 of 2"));
    p.expect(&["ingest", &dir_s, "--wait"], 2);

    // The late archive lands while ingest waits: the day loads whole.
    let mut child = p
        .cmd(&[
            "ingest",
            &dir_s,
            "--date",
            "2026-11-01",
            "--wait",
            "--timeout",
            "60s",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "ingest did not wait");
    std::fs::rename(&aside, &late).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(rows_in(&batch(&p), "transfers", day(1)).await, 200);
    // Once loaded, the manifest's batch list keeps the day ready.
    p.ok(&["ingest", &dir_s, "--date", "2026-11-01"]);
}

#[test]
fn bench_ingest_splits_its_data_over_archives_and_loads_them_all() {
    let work = tempfile::tempdir().unwrap();
    let args = ["bench-ingest", "--mb", "2", "--archives", "3"];
    let text = crate::bench_stdout(&args, work.path());
    let archives = std::fs::read_dir(work.path().join("dumps"))
        .unwrap()
        .count();
    assert_eq!(archives, 3);
    // The measured row: archives, then ~2 MB of uncompressed data.
    let row: Vec<&str> = text
        .lines()
        .last()
        .unwrap()
        .split('|')
        .map(str::trim)
        .collect();
    assert_eq!(row[1], "3", "{text}");
    let mb: f64 = row[2].parse().unwrap();
    assert!((1.5..=2.5).contains(&mb), "{text}");
    // Per core is the wall rate shared by the cores.
    let num = |i: usize| -> f64 { row[i].parse().unwrap() };
    let (wall, per_core, cores) = (num(6), num(7), num(9));
    assert!(cores >= 1.0 && wall > 0.0, "{text}");
    assert!((per_core * cores - wall).abs() <= 0.1 * cores, "{text}");
    // The run recorded all three in the manifest.
    let batch = work.path().join("project/data/batch");
    let manifest = std::fs::read_dir(batch.join("_ingest/archives"))
        .unwrap()
        .count();
    assert_eq!(manifest, 3);
}

/// `[ingest.checks]` on a partner column with out-of-range values: as an
/// `error` the table fails and nothing of it is committed (the other
/// tables are); as a `warn`, retried, each out-of-range row is quarantined
/// naming the check, and every committed amount is in range.
#[tokio::test]
async fn partner_row_checks_quarantine_or_fail_the_table() {
    let p = project(Serving::Sqlite).await;
    let (url, alerts) = crate::schedule::webhook_server();
    p.append_config(&format!("[scheduler]\nwebhook = \"{url}\""));
    let dir = dumps(&p, "2026-11-01", "400");
    // A check partner rows cannot take is a configuration error naming the
    // key, the table and the check; nothing is read.
    p.set_config(
        "[engine]",
        "[ingest]\nmax_bad_rows_ratio = 1.0\n\n[ingest.checks]\ntransfers = [\"unique(tx_hash)\"]\nprices = [\"accepted_values(symbol, ['ETH', 'BTC', 'USDC', 'DAI'])\"]\n\n[engine]",
    );
    let err = stderr(&p.expect(&["ingest", &archive(&dir, 0)], 2));
    assert!(
        err.contains("`ingest.checks`: transfers: `unique(tx_hash)`")
            && err.contains("ledgerflow.toml"),
        "{err}"
    );
    assert!(!batch(&p).is_committed("transfers", day(1)).await.unwrap());
    let check = "range(amount, 0, 500000)";
    p.set_config("[\"unique(tx_hash)\"]", &format!("[\"{check}\"]"));
    let r = ingest_json(&p, &[&archive(&dir, 0)], 1);
    let t = table(&r, "transfers", "2026-11-01");
    assert_eq!(t["state"], "failed", "{t:#}");
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains(&format!("fails check `{check}`")),
        "{t:#}"
    );
    let b = batch(&p);
    assert!(!b.is_committed("transfers", day(1)).await.unwrap());
    assert!(b.is_committed("prices", day(1)).await.unwrap());
    // Every check's result is in `ledgerflow_checks`, under the table's
    // merge step and linked to its ledger row: the failure (the first
    // failing row stops the table) and the passing check of `prices`.
    let merge_run = |table: &str| {
        let runs: Value = serde_json::from_str(&stdout(&p.ok(&[
            "runs",
            "--json",
            "--model",
            &format!("ingest:merge:{table}"),
        ])))
        .unwrap();
        runs[0]["id"].as_i64().unwrap()
    };
    let failed = crate::checks::checks(&p, &["--model", "ingest:merge:transfers"]);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let f = &failed[0];
    assert_eq!(
        (
            &f["check"],
            &f["severity"],
            &f["status"],
            &f["failing_rows"]
        ),
        (
            &Value::from(check),
            &Value::from("error"),
            &Value::from("fail"),
            &Value::from(1)
        ),
        "{f:#}"
    );
    assert_eq!(f["day"], "2026-11-01");
    assert_eq!(f["run_id"].as_i64(), Some(merge_run("transfers")), "{f:#}");
    assert!(
        f["sample"]
            .as_str()
            .unwrap()
            .contains("transfers_2026-11-01_"),
        "the sample names the file and line: {f:#}"
    );
    // Alerted as a model's check is: once for the check and day.
    let alerted: Vec<Value> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(alerted.len(), 1, "{alerted:#?}");
    assert_eq!(
        (
            &alerted[0]["kind"],
            &alerted[0]["model"],
            &alerted[0]["check"]
        ),
        (
            &Value::from("check_failed"),
            &Value::from("ingest:merge:transfers"),
            &Value::from(check)
        ),
    );
    let passed = crate::checks::checks(&p, &["--model", "ingest:merge:prices"]);
    assert_eq!(passed.len(), 1, "{passed:#?}");
    assert_eq!(passed[0]["status"], "pass", "{passed:#?}");
    assert_eq!(passed[0]["failing_rows"], 0);
    assert_eq!(passed[0]["run_id"].as_i64(), Some(merge_run("prices")));
    let prices = table(&r, "prices", "2026-11-01");
    assert_eq!(
        prices["checks"][0]["rows_checked"].as_u64().unwrap(),
        prices["rows_read"].as_u64().unwrap() - prices["rows_quarantined"].as_u64().unwrap(),
        "every row that reached the checks passed: {prices:#}"
    );

    p.set_config(&format!("[\"{check}\"]"), &format!("[\"{check} warn\"]"));
    let r = ingest_json(&p, &["--retry-failed", "--date", "2026-11-01"], 0);
    let t = table(&r, "transfers", "2026-11-01");
    assert_eq!(t["state"], "committed", "{t:#}");
    let quarantine = p
        .path()
        .join("data/batch/_quarantine/transfers/date=2026-11-01");
    let mut by_check = 0;
    for f in std::fs::read_dir(&quarantine).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            if row["reason"] == format!("check `{check}`") {
                by_check += 1;
                assert_eq!(row["column"], "amount");
                // Checks judge the text before it is parsed: the
                // generator's `twelve` is out of range too.
                let raw: Vec<String> = serde_json::from_str(row["raw"].as_str().unwrap()).unwrap();
                let field = raw[4].clone();
                match field.parse::<u64>() {
                    Ok(amount) => assert!(amount > 500_000, "{row}"),
                    Err(_) => assert_eq!(field, "twelve", "{row}"),
                }
            }
        }
    }
    assert!(by_check > 100, "about half of 400 rows: {by_check}");
    // The report and the check history count the same rows.
    assert_eq!(
        t["checks"][0]["failing_rows"].as_u64(),
        Some(by_check),
        "{t:#}"
    );
    let warned: Vec<Value> = crate::checks::checks(&p, &["--model", "ingest:merge:transfers"])
        .into_iter()
        .filter(|c| c["status"] == "warn")
        .collect();
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert_eq!(warned[0]["failing_rows"].as_u64(), Some(by_check));
    assert_eq!(warned[0]["run_id"].as_i64(), Some(merge_run("transfers")));
    assert_eq!(
        alerts.lock().unwrap().len(),
        1,
        "the check had failed on this day already: no second alert"
    );
    let failing = crate::checks::checks(&p, &["--failed"]);
    assert!(
        failing
            .iter()
            .all(|c| c["model"] == "ingest:merge:transfers")
            && failing.len() == 2,
        "{failing:#?}"
    );
    let ctx = datafusion::prelude::SessionContext::new();
    let files: Vec<String> = b
        .list_day("transfers", day(1))
        .await
        .unwrap()
        .iter()
        .map(|m| b.files.url(&m.location))
        .collect();
    let stats = ctx
        .read_parquet(files, Default::default())
        .await
        .unwrap()
        .aggregate(
            vec![],
            vec![
                datafusion::functions_aggregate::expr_fn::max(datafusion::prelude::col("amount")),
                datafusion::functions_aggregate::expr_fn::count(datafusion::prelude::lit(1)),
            ],
        )
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&stats)
        .unwrap()
        .to_string();
    let max: u64 = text
        .lines()
        .nth(3)
        .unwrap()
        .split('|')
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(max <= 500_000, "{text}");
    assert_eq!(
        t["rows_written"].as_u64().unwrap() + t["rows_quarantined"].as_u64().unwrap(),
        t["rows_read"].as_u64().unwrap(),
        "{t:#}"
    );
}
