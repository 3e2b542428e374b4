//! Both layers on S3 (a real SeaweedFS server per test): the models equal
//! the reference as on local disk, compaction and a rewritten partition are
//! seen, realtime follows an S3 landing prefix, every fault is named and
//! leaves nothing half done, and no credential appears in any output.

use std::time::Duration;

use ledgerflow::generate::chain::GenParams;
use ledgerflow_testkit::project::{stderr, stdout, Background, Paused, TestProject};
use ledgerflow_testkit::reference::{self, generated_day};
use ledgerflow_testkit::s3::S3Server;
use ledgerflow_testkit::serving::{assert_daily_eq, assert_dumps_eq, Serving};

use crate::{d, project};

/// A project whose batch layer and landing dir are prefixes of bucket
/// `ledger` on `server`, with its credentials in the environment only.
pub(crate) async fn on_s3(server: &S3Server, serving: Serving) -> TestProject {
    let mut p = project(serving).await;
    p.set_config("url = \"data/batch\"", "url = \"s3://ledger/lake/batch\"");
    p.set_config(
        "url = \"data/landing\"",
        "url = \"s3://ledger/lake/landing\"",
    );
    p.append_config(&server.config_section());
    p.env = server.env();
    p
}

fn output(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

#[tokio::test]
async fn models_on_s3_equal_the_reference_through_compaction_and_rewrites() {
    let server = S3Server::start(&["ledger"]);
    let p = on_s3(&server, Serving::Postgres).await;
    let mut seen: Vec<String> = crate::models::load_three_days(&p, &["-vv"])
        .iter()
        .map(output)
        .collect();
    assert!(
        !p.path().join("data/batch").exists() && !p.path().join("data/landing").exists(),
        "nothing may be written to local disk"
    );
    crate::models::assert_three_days_equal_the_reference(&p).await;
    let before = p.db.dump_metrics().await;

    // The reorged speed day compacted onto S3: same numbers from the batch
    // layer, the landing files removed.
    let out = p.ok(&[
        "compact",
        "--date",
        "2026-11-03",
        "--force",
        "--remove-landing",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["action"], "compacted", "{report}");
    assert!(
        report["removed_landing_files"].as_u64().unwrap() > 0,
        "{report}"
    );
    seen.push(output(&out));
    let out = p.ok(&[
        "backfill",
        "--from",
        "2026-11-03",
        "--to",
        "2026-11-03",
        "--force",
    ]);
    assert!(stdout(&out).contains("2026-11-03 block_daily_metrics      batch"));
    assert_dumps_eq(
        &p.db.dump_metrics().await,
        &before,
        "after compaction on S3",
    );

    // Day 1 rewritten under the same object names with other rows: the
    // run sees the change (etag, size) and loads the new numbers.
    p.ok(&[
        "generate",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-01",
        "--scale",
        "0.01",
        "--seed",
        "7",
    ]);
    let out = p.ok(&[
        "run",
        "--date",
        "2026-11-01",
        "--model",
        "block_daily_metrics",
    ]);
    assert!(!stdout(&out).contains("unchanged"), "{}", stdout(&out));
    let reseeded = GenParams {
        seed: 7,
        ..crate::models::three_days_params()
    };
    let day1 = d("2026-11-01");
    let (blocks, txs) = generated_day(&reseeded, day1, false);
    assert_daily_eq(
        &p.db.block_daily_metrics().await[0],
        &reference::block_daily_metrics(day1, &blocks, &txs).unwrap(),
    );

    for args in [
        &["runs", "--json"][..],
        &["status"],
        &["schemas"],
        &[
            "backfill",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-03",
            "--dry-run",
            "--json",
        ],
        // A day with no data: its error names where it looked.
        &["run", "--date", "2026-10-01", "-vv"],
    ] {
        seen.push(output(&p.cmd(args).output().unwrap()));
    }
    seen.extend(p.db.dump("ledgerflow_runs", &[]).await);
    assert_no_secret(&server, &seen);
    p.drop_db().await;
}

fn assert_no_secret(server: &S3Server, seen: &[String]) {
    assert!(
        seen.iter().any(|s| s.contains("s3://ledger")),
        "outputs name the bucket"
    );
    for text in seen {
        assert!(
            !text.contains(server.secret()),
            "a credential was printed:\n{text}"
        );
    }
}

#[tokio::test]
async fn realtime_follows_an_s3_landing_prefix() {
    let server = S3Server::start(&["ledger"]);
    let p = on_s3(&server, Serving::Sqlite).await;
    let day = d("2026-11-06");
    // Blocks land before the loop starts and while it follows.
    let mut rt = None;
    for blocks in [30, 80] {
        let n = crate::realtime::live(&p, day, blocks, "100000");
        let rt = rt.get_or_insert_with(|| Background::start(&p, &["realtime"], &[]));
        let want = crate::realtime::expected(&[(day, n)]);
        crate::realtime::wait_for(&p, &want, rt, Duration::from_secs(90)).await;
    }
    let rt = rt.expect("started");
    assert!(!rt.log().contains(server.secret()));
    rt.stop();
}

/// Bucket missing, wrong credentials, server down at start: each run
/// fails with exit 1 naming the bucket and prefix, nothing written.
#[tokio::test]
async fn store_unreachable_or_refusing_is_named_and_writes_nothing() {
    let mut server = S3Server::start(&["ledger"]);
    let mut p = on_s3(&server, Serving::Sqlite).await;
    p.generate("2026-11-05", "2026-11-05", "0.005", &[], &[]);

    p.set_config("s3://ledger/lake/batch", "s3://no-such-bucket/lake/batch");
    let out = output(&p.expect(&["run", "--date", "2026-11-05"], 1));
    assert!(out.contains("s3://no-such-bucket/lake/batch"), "{out}");
    p.set_config("s3://no-such-bucket/lake/batch", "s3://ledger/lake/batch");

    let good = p.env.clone();
    p.env = good
        .iter()
        .map(|(k, v)| match k.as_str() {
            "AWS_SECRET_ACCESS_KEY" => (k.clone(), "wrong-secret".to_string()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let out = output(&p.expect(&["run", "--date", "2026-11-05"], 1));
    assert!(out.contains("s3://ledger/lake/batch"), "{out}");
    assert!(
        out.contains("403") || out.to_lowercase().contains("denied") || out.contains("Forbidden"),
        "{out}"
    );
    p.env = good;

    server.stop();
    let out = output(&p.expect(&["run", "--date", "2026-11-05"], 1));
    assert!(out.contains("s3://ledger/lake/batch"), "{out}");
    assert!(
        !p.db.has_table("block_daily_metrics").await
            || p.db.count("block_daily_metrics").await == 0
    );
    server.start_again();
    p.ok(&["run", "--date", "2026-11-05"]);
    assert_eq!(p.db.count("block_daily_metrics").await, 1);
}

/// The server stopped in the middle of a run (the models' reads fail: the
/// day commits nothing) and in the middle of `compact` (no committed
/// partial partition); once it is back, the reruns complete and equal the
/// reference.
#[tokio::test]
async fn server_stopped_mid_run_and_mid_compact_then_reruns_complete() {
    let mut server = S3Server::start(&["ledger"]);
    let p = on_s3(&server, Serving::Postgres).await;
    p.append_config("[run]\ncommit = \"day\"\n[ledger]\nlease = \"2s\"");
    p.set_config("# parallel_models = 1", "parallel_models = 1");
    let day = "2026-11-05";
    p.generate(day, day, "0.005", &[day], &["--reorg-rate", "0.1"]);

    let run = Paused::start(
        &p,
        &["run", "--date", day],
        "before_write:realtime_dashboard",
        &[],
    );
    server.stop();
    let out = run.release();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(
        output(&out).contains("s3://ledger/lake/landing"),
        "{}",
        output(&out)
    );
    assert!(
        !p.db.has_table("block_daily_metrics").await
            || p.db.count("block_daily_metrics").await == 0
    );
    server.start_again();
    p.ok(&["run", "--date", day]);
    let before = p.db.dump_metrics().await;

    let compact = Paused::start(
        &p,
        &["compact", "--date", day, "--force"],
        &format!("before_marker:transactions/date={day}"),
        &[],
    );
    server.stop();
    let out = compact.release();
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    server.start_again();
    assert_still_read_from_speed(&p, day);
    // The failed compaction could not release its lock (the server was
    // down): the rerun takes it over once its lease has run out.
    std::thread::sleep(Duration::from_secs(3));
    let out = p.ok(&["compact", "--date", day, "--force", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["action"], "compacted");
    p.ok(&["run", "--date", day, "--force"]);
    assert_dumps_eq(
        &p.db.dump_metrics().await,
        &before,
        "after the compaction's rerun",
    );
    let params = GenParams {
        seed: 42,
        scale: 0.005,
        reorg_rate: 0.1,
        ..Default::default()
    };
    let (blocks, txs) = generated_day(&params, d(day), true);
    assert_daily_eq(
        &p.db.block_daily_metrics().await[0],
        &reference::block_daily_metrics(d(day), &blocks, &txs).unwrap(),
    );
    p.drop_db().await;
}

/// Half a compaction must not commit: the day still plans from the speed
/// layer.
fn assert_still_read_from_speed(p: &TestProject, day: &str) {
    let plan = stdout(&p.ok(&[
        "backfill",
        "--from",
        day,
        "--to",
        day,
        "--dry-run",
        "--json",
        "--model",
        "block_daily_metrics",
    ]));
    assert!(
        plan.contains("\"speed\""),
        "half a compaction must not commit: {plan}"
    );
}

/// Object names under `prefix` in the server's bucket `ledger`.
async fn objects(server: &S3Server, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let client = server.client("ledger");
    let prefix = object_store::path::Path::from(prefix);
    let mut names: Vec<String> = client
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    names
}

async fn exists(server: &S3Server, path: &str) -> bool {
    use object_store::ObjectStoreExt;
    let client = server.client("ledger");
    client
        .head(&object_store::path::Path::from(path))
        .await
        .is_ok()
}

/// Partner archives ingested onto S3: counts reconcile, quarantine and
/// manifest live in the bucket, the same archives load once; a second
/// ingest is refused while the lock is held; an ingest SIGKILLed mid-merge
/// leaves nothing committed and its lock is taken over once its lease
/// expired, and the rerun completes; so does the server stopped
/// mid-ingest.
#[tokio::test]
async fn ingest_onto_s3_reconciles_locks_and_survives_a_kill() {
    let mut server = S3Server::start(&["ledger"]);
    let p = on_s3(&server, Serving::Sqlite).await;
    p.append_config("[ledger]\nlease = \"2s\"");
    let dir = crate::ingest::dumps(&p, "2026-11-01", "1300");
    let archive = |n: u32| crate::ingest::archive(&dir, n);
    let ingest = |args: &[&str], code: i32| -> serde_json::Value {
        let out = p.expect(&[&["ingest", "--json"][..], args].concat(), code);
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let r = ingest(&[&archive(0)], 0);
    assert_eq!(r["reconciled"], true, "{r:#}");
    for t in r["tables"].as_array().unwrap() {
        assert_eq!(t["state"], "committed", "{t}");
        assert_eq!(t["rows_on_disk"], t["rows_written"], "{t}");
    }
    let quarantined: u64 = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows_quarantined"].as_u64().unwrap())
        .sum();
    assert!(quarantined > 0, "{r:#}");
    let stored = objects(&server, "lake/batch").await;
    for want in [
        "lake/batch/transfers/date=2026-11-01/_SUCCESS",
        "lake/batch/_ingest/archives/",
        "lake/batch/_quarantine/transfers/date=2026-11-01/bad-",
        "lake/batch/_schemas/transfers.json",
    ] {
        assert!(
            stored.iter().any(|o| o.starts_with(want)),
            "no {want} in {stored:#?}"
        );
    }
    assert!(
        !stored.iter().any(|o| o.ends_with("_ingest/lock")),
        "the lock is released"
    );
    assert!(!p.path().join("data/batch").exists());
    let again = ingest(&[&archive(0)], 0);
    assert_eq!(again["archives"][0]["action"], "unchanged", "{again:#}");
    let parts = |files: &[String]| -> Vec<String> {
        files
            .iter()
            .filter(|f| f.ends_with(".parquet") && !f.contains("/."))
            .cloned()
            .collect()
    };
    let committed = parts(&objects(&server, "lake/batch/transfers/date=2026-11-01/").await);
    let schemas: serde_json::Value =
        serde_json::from_str(&stdout(&p.ok(&["schemas", "--json"]))).unwrap();
    assert!(
        schemas
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["table"] == "transfers"),
        "{schemas}"
    );

    // Held: a second ingest is refused, naming the lock.
    let held = Paused::start(
        &p,
        &["ingest", &archive(1)],
        "ingest_mid_merge:transfers",
        &[],
    );
    // Exit 1, as a local lock: the same command succeeds once it is free.
    let out = output(&p.expect(&["ingest", &archive(0)], 1));
    assert!(
        out.contains("lock") && out.contains("s3://ledger/lake/batch/_ingest/lock"),
        "{out}"
    );
    // Killed mid-merge: nothing of archive 1 is committed, the lock stays
    // until its lease expires, then the next ingest takes it over.
    held.kill();
    let files = objects(&server, "lake/batch/transfers/date=2026-11-01/").await;
    assert_eq!(
        parts(&files),
        committed,
        "only archive 0's parts: {files:#?}"
    );
    assert!(
        exists(&server, "lake/batch/_ingest/lock").await,
        "a dead holder's lock stays"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let r = ingest(&[&archive(0), &archive(1)], 0);
    assert_eq!(r["archives"][1]["action"], "loaded", "{r:#}");
    assert_eq!(r["reconciled"], true, "{r:#}");
    let files = objects(&server, "lake/batch/transfers/date=2026-11-01/").await;
    assert!(
        !files.iter().any(|f| f.contains("/.ingest-tmp")),
        "temporaries left: {files:#?}"
    );
    assert!(parts(&files).len() > committed.len(), "{files:#?}");
    assert!(
        !exists(&server, "lake/batch/_ingest/lock").await,
        "released"
    );

    // The server stopped in the middle of an ingest: it fails naming the
    // store and commits nothing of the archive; once the server is back
    // (and the lock it could not release has run out its lease) the rerun
    // loads it whole.
    crate::ingest::dumps(&p, "2026-11-02", "1300");
    let next = dir
        .join("partner_2026-11-02_0000.tar.gz")
        .display()
        .to_string();
    let stopped = Paused::start(&p, &["ingest", &next], "ingest_mid_merge:transfers", &[]);
    server.stop();
    let out = stopped.release();
    assert_ne!(out.status.code(), Some(0), "{}", output(&out));
    assert!(
        output(&out).contains("s3://ledger/lake"),
        "{}",
        output(&out)
    );
    server.start_again();
    let day2 = objects(&server, "lake/batch/transfers/date=2026-11-02/").await;
    assert!(!day2.iter().any(|f| f.ends_with("_SUCCESS")), "{day2:#?}");
    std::thread::sleep(Duration::from_millis(2500));
    let r = ingest(&[&next], 0);
    assert_eq!(r["archives"][0]["action"], "loaded", "{r:#}");
    assert_eq!(r["reconciled"], true, "{r:#}");
    let day2 = objects(&server, "lake/batch/transfers/date=2026-11-02/").await;
    assert!(day2.iter().any(|f| f.ends_with("_SUCCESS")), "{day2:#?}");
}

/// Partner archives kept on S3: `generate --partner-dumps s3://...`
/// uploads what it writes locally byte for byte, `ingest s3://.../` loads
/// the archives one level under the prefix (not `hostile/`), the report and
/// manifest name the objects, a single object is then unchanged, and a
/// missing one is named.
#[tokio::test]
async fn ingest_reads_archives_from_s3() {
    let server = S3Server::start(&["ledger"]);
    let p = on_s3(&server, Serving::Sqlite).await;
    let generate = |dir: &str| {
        p.ok(&[
            "generate",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-01",
            "--partner-dumps",
            dir,
            "--rows-per-batch",
            "700",
        ])
    };
    generate("local-dumps");
    let out = stdout(&generate("s3://ledger/dumps"));
    assert!(out.contains("s3://ledger/dumps"), "{out}");
    let uploaded = objects(&server, "dumps/").await;
    let mut local = Vec::new();
    for dir in ["local-dumps", "local-dumps/hostile"] {
        for e in std::fs::read_dir(p.path().join(dir)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                let rel = e
                    .path()
                    .strip_prefix(p.path().join("local-dumps"))
                    .unwrap()
                    .display()
                    .to_string();
                local.push((format!("dumps/{rel}"), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    local.sort();
    assert_eq!(
        uploaded,
        local.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    let client = server.client("ledger");
    for (name, bytes) in &local {
        use object_store::ObjectStoreExt;
        let got = client
            .get(&object_store::path::Path::from(name.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), &bytes[..], "{name} differs");
    }

    let out = p.ok(&["ingest", "--json", "s3://ledger/dumps/"]);
    let r: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let archives = r["archives"].as_array().unwrap();
    let names: Vec<&str> = archives
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "s3://ledger/dumps/partner_2026-11-01_0000.tar.gz",
            "s3://ledger/dumps/partner_2026-11-01_0001.tar.gz"
        ],
        "{r:#}"
    );
    assert!(archives.iter().all(|a| a["action"] == "loaded"), "{r:#}");
    assert_eq!(r["reconciled"], true, "{r:#}");
    let manifest = objects(&server, "lake/batch/_ingest/archives/").await;
    assert_eq!(manifest.len(), 2, "{manifest:#?}");
    use object_store::ObjectStoreExt;
    let record = client
        .get(&object_store::path::Path::from(manifest[0].as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(
        record["path"], "s3://ledger/dumps/partner_2026-11-01_0000.tar.gz",
        "{record:#}"
    );

    let out = p.ok(&[
        "ingest",
        "--json",
        "s3://ledger/dumps/partner_2026-11-01_0001.tar.gz",
    ]);
    let again: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(again["archives"][0]["action"], "unchanged", "{again:#}");

    let out = output(&p.expect(
        &["ingest", "s3://ledger/dumps/partner_2026-11-09_0000.tar.gz"],
        1,
    ));
    assert!(
        out.contains("s3://ledger/dumps/partner_2026-11-09_0000.tar.gz")
            && out.contains("no such object"),
        "{out}"
    );
    assert_no_secret(&server, &[out]);
}

/// `compact` SIGKILLed between two uploads of a partition (a day split into
/// many files): no marker, so the day is still read from the speed layer;
/// the rerun compacts it whole, its stray uploads replaced, and the numbers
/// are the same.
#[tokio::test]
async fn compact_killed_between_uploads_commits_nothing_and_the_rerun_completes() {
    let server = S3Server::start(&["ledger"]);
    let p = on_s3(&server, Serving::Sqlite).await;
    p.set_config("rows_per_file = 500000", "rows_per_file = 400");
    p.append_config("[ledger]\nlease = \"2s\"");
    let day = "2026-11-05";
    p.generate(day, day, "0.005", &[day], &["--reorg-rate", "0.1"]);
    p.ok(&["run", "--date", day]);
    let before = p.db.dump_metrics().await;

    let compact = Paused::start(
        &p,
        &["compact", "--date", day, "--force"],
        &format!("after_part:transactions/date={day}"),
        &[],
    );
    // The day's compaction lock is held (and renewed past its lease): a
    // second compaction of the day is refused (exit 1), naming the lock.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let second = p.expect(&["compact", "--date", day, "--force"], 1);
    let said = stderr(&second);
    assert!(
        said.contains(&format!("compaction of {day} lock")) && said.contains("_compact/"),
        "{said}"
    );
    compact.kill();
    // Killed, its lock document stays until the lease runs out; then the
    // rerun takes it over.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let prefix = format!("lake/batch/transactions/date={day}/");
    let left = objects(&server, &prefix).await;
    assert!(
        left.iter().any(|o| o.ends_with(".parquet")),
        "killed after an upload: {left:#?}"
    );
    assert!(!left.iter().any(|o| o.ends_with("_SUCCESS")), "{left:#?}");
    assert_still_read_from_speed(&p, day);

    let out = p.ok(&["compact", "--date", day, "--force", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["action"], "compacted");
    let files = objects(&server, &prefix).await;
    let parts = files.iter().filter(|o| o.ends_with(".parquet")).count();
    let transactions = report["transactions"].as_u64().unwrap() as usize;
    assert_eq!(parts, transactions.div_ceil(400), "{files:#?}");
    assert!(files.iter().any(|o| o.ends_with("_SUCCESS")));
    p.ok(&["run", "--date", day, "--force"]);
    assert_dumps_eq(&p.db.dump_metrics().await, &before, "after the rerun");
    p.drop_db().await;
}

/// A server that accepts connections and never answers: with short
/// `timeout`/`max_retries`, a run fails naming the bucket within the
/// configured budget instead of hanging, and writes nothing.
#[tokio::test]
async fn a_server_that_never_answers_times_out_as_configured() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    let mut p = project(Serving::Sqlite).await;
    p.set_config("url = \"data/batch\"", "url = \"s3://ledger/lake/batch\"");
    p.append_config(&format!(
        "[batch.s3]\nendpoint = \"http://{addr}\"\nallow_http = true\ntimeout = \"1s\"\nconnect_timeout = \"1s\"\nmax_retries = 1\nretry_timeout = \"2s\"\n"
    ));
    p.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "k".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "s".into()),
    ];
    let started = std::time::Instant::now();
    let out = p.expect(&["run", "--date", "2026-11-05"], 1);
    let waited = started.elapsed();
    let text = output(&out);
    assert!(text.contains("s3://ledger/lake/batch"), "{text}");
    assert!(
        text.to_lowercase().contains("timed out") || text.contains("timeout"),
        "{text}"
    );
    assert!(waited < Duration::from_secs(60), "took {waited:?}: {text}");
    assert!(!held.lock().unwrap().is_empty(), "the server was asked");
    assert!(!p.db.has_table("block_daily_metrics").await);
    p.drop_db().await;
}
