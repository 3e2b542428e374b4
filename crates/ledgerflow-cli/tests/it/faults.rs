//! The fault suite: one named scenario per test, each injecting a fault
//! into real processes and real servers and checking what must hold after
//! it: the tables equal a clean run (or the reference), no key twice, no
//! ledger row left running, and the ledger telling the truth. The other
//! scenarios (kills at each write, compaction, ingest, realtime and
//! scheduler failpoints, racing writers, reorgs, servers that go away) sit
//! with the capability they test; docs/reliability.md lists them all.

use std::time::Duration;

use ledgerflow::generate::chain::GenParams;
use ledgerflow_testkit::cluster::Cluster;
use ledgerflow_testkit::mongo::MongoServer;
use ledgerflow_testkit::project::{stderr, stdout, Background, Paused, TestProject};
use ledgerflow_testkit::reference::{self, generated_day};
use ledgerflow_testkit::serving::{assert_daily_eq, Serving, TestDb};

use crate::{d, project, SINKS};

const DAY: &str = "2026-11-05";

/// The daily tables, whole, for before/after comparisons.
async fn daily_tables(db: &TestDb) -> [Vec<String>; 3] {
    [
        db.dump("block_daily_metrics", &[]).await,
        db.dump("user_activity_agg", &[]).await,
        db.dump("realtime_dashboard", &["updated_at"]).await,
    ]
}

/// No ledger row claims to run (after an invocation has closed abandoned
/// ones).
async fn nothing_left_running(db: &TestDb) {
    let open: Vec<_> = db
        .runs()
        .await
        .into_iter()
        .filter(|r| r.2 == "running" || r.2 == "pending")
        .collect();
    assert!(open.is_empty(), "rows left open: {open:?}");
}

/// Checks the batch day `DAY` (seed 42, scale 0.01) against the reference.
async fn equals_reference(db: &TestDb) {
    let params = GenParams {
        seed: 42,
        scale: 0.01,
        ..Default::default()
    };
    let (blocks, txs) = generated_day(&params, d(DAY), false);
    let daily = db.block_daily_metrics().await;
    assert_eq!(daily.len(), 1);
    assert_daily_eq(
        &daily[0],
        &reference::block_daily_metrics(d(DAY), &blocks, &txs).unwrap(),
    );
    assert_eq!(
        db.user_activity(d(DAY)).await,
        reference::user_activity(d(DAY), &blocks, &txs)
    );
}

/// A marker that lists a data file that is gone: the day is refused, named,
/// and the tables keep what they had (never a day short of a file).
#[tokio::test]
async fn fault_marker_without_its_data_file() {
    for serving in SINKS {
        let p = project(serving).await;
        p.set_config("rows_per_file = 500000", "rows_per_file = 2000");
        p.generate(DAY, DAY, "0.01", &[], &[]);
        p.ok(&["run", "--date", DAY]);
        let before = daily_tables(&p.db).await;
        let dir = p.path().join(format!("data/batch/transactions/date={DAY}"));
        let files = ledgerflow_testkit::project::parquet_files(&dir);
        assert!(files.len() > 1, "{files:?}");
        std::fs::remove_file(&files[0]).unwrap();
        let out = p.expect(&["run", "--date", DAY, "--force"], 1);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(text.contains("part-00000.parquet"), "{text}");
        assert!(text.contains("transactions/date=2026-11-05"), "{text}");
        assert_eq!(daily_tables(&p.db).await, before);
        nothing_left_running(&p.db).await;
        p.drop_db().await;
    }
}

/// A data file without its marker (a partition written but never
/// committed) is not read: the day comes from the speed layer, whole.
#[tokio::test]
async fn fault_data_files_without_their_marker() {
    let p = project(Serving::Sqlite).await;
    p.generate(
        DAY,
        DAY,
        "0.01",
        &[DAY],
        &["--also-batch", "--reorg-rate", "0"],
    );
    std::fs::remove_file(
        p.path()
            .join(format!("data/batch/transactions/date={DAY}/_SUCCESS")),
    )
    .unwrap();
    let out = stdout(&p.ok(&["run", "--date", DAY]));
    assert!(out.contains("speed"), "{out}");
    equals_reference(&p.db).await;
}

/// SIGKILL on the second day of a backfill, between a model's write and its
/// commit: every table holds whole days; the rerun completes them, equal to
/// a clean run, nothing left running. One day at a time, so the first day
/// is over when the second is killed (with two in flight the first day's
/// last model may still be pending then: a kill among overlapping days is
/// `idempotency::pipelined_days_commit_in_order_per_model`).
#[tokio::test]
async fn fault_backfill_killed_on_its_second_day() {
    for serving in SINKS {
        let p = project(serving).await;
        p.set_config("# parallel_days = 2", "parallel_days = 1");
        p.generate("2026-11-04", "2026-11-06", "0.005", &[], &[]);
        let args = ["backfill", "--from", "2026-11-04", "--to", "2026-11-06"];
        Paused::start(&p, &args, "before_commit:user_activity_agg@2", &[]).kill();
        let days = p.db.block_daily_metrics().await;
        assert_eq!(days.len(), 1, "only the first day finished");
        p.ok(&args);
        nothing_left_running(&p.db).await;
        let after = daily_tables(&p.db).await;

        let clean = project(serving).await;
        clean.generate("2026-11-04", "2026-11-06", "0.005", &[], &[]);
        clean.ok(&args);
        assert_eq!(after, daily_tables(&clean.db).await);
        clean.drop_db().await;
        p.drop_db().await;
    }
}

/// A query past `engine.query_timeout`: the run fails (exit 1) naming the
/// limit, nothing is written, nothing is left running; with no limit
/// ("0s") the rerun equals the reference.
#[tokio::test]
async fn fault_query_past_its_timeout() {
    let p = project(Serving::Sqlite).await;
    p.generate(DAY, DAY, "0.01", &[], &[]);
    p.set_config("# query_timeout = \"1h\"", "query_timeout = \"1ms\"");
    let out = p.expect(&["run", "--date", DAY], 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("model `user_activity_agg` for 2026-11-05: the query ran longer than engine.query_timeout (1ms) here"),
        "{text}"
    );
    for table in ["user_activity_agg", "block_daily_metrics"] {
        assert!(!p.db.has_table(table).await, "{table} written: {text}");
    }
    let runs = p.db.runs().await;
    assert!(
        runs.iter()
            .any(|r| r.0 == "user_activity_agg" && r.2 == "failed")
            && runs
                .iter()
                .any(|r| r.0 == "block_daily_metrics" && r.2 == "skipped"),
        "{runs:?}"
    );
    nothing_left_running(&p.db).await;
    p.set_config("query_timeout = \"1ms\"", "query_timeout = \"0s\"");
    p.ok(&["run", "--date", DAY]);
    equals_reference(&p.db).await;
    p.drop_db().await;
}

/// A project serving into a PostgreSQL cluster of its own.
async fn on_cluster(cluster: &Cluster) -> TestProject {
    let p = project(Serving::Sqlite).await;
    p.set_config(
        "url = \"sqlite://serving.db\"",
        &format!("url = \"{}\"", cluster.url()),
    );
    p
}

/// The PostgreSQL server crashes while a run is in its COPY, and again
/// while it commits: the run fails (exit 1, transient), the tables keep the
/// old day, the next invocation closes the dead run's rows, and a rerun
/// writes the new day once.
#[tokio::test]
async fn fault_postgres_crashes_mid_copy_and_mid_commit() {
    let cluster = Cluster::start();
    let p = on_cluster(&cluster).await;
    p.generate(DAY, DAY, "0.01", &[], &["--seed", "7"]);
    p.ok(&["run", "--date", DAY]);
    let dump = |p: &TestProject| stdout(&p.ok(&["runs", "--json", "--limit", "1000"]));
    let old_runs = dump(&p);
    p.generate(DAY, DAY, "0.01", &[], &[]);
    for failpoint in [
        "during_copy:user_activity_agg",
        "before_commit:user_activity_agg",
    ] {
        let run = Paused::start(&p, &["run", "--date", DAY], failpoint, &[]);
        cluster.down();
        let out = run.release();
        assert_eq!(out.status.code(), Some(1), "{failpoint}: {out:?}");
        cluster.up();
    }
    assert_ne!(old_runs, dump(&p));
    p.ok(&["run", "--date", DAY]);
    nothing_left_running(&cluster_db(&cluster).await).await;
    equals_reference(&cluster_db(&cluster).await).await;
}

/// The serving tables of a project on `cluster` (schema `public`).
async fn cluster_db(cluster: &Cluster) -> TestDb {
    TestDb::Postgres {
        url: cluster.url(),
        schema: "public".into(),
        client: ledgerflow_testkit::serving::pg_connect(&cluster.url()).await,
    }
}

/// The PostgreSQL server restarts under a running realtime loop: the loop
/// waits (transient), then catches up; the table equals the reference.
#[tokio::test]
async fn fault_postgres_restarts_under_the_realtime_loop() {
    let cluster = Cluster::start();
    let p = on_cluster(&cluster).await;
    let day = "2026-11-12";
    let live = |n: &str| {
        p.ok(&[
            "generate",
            "--live",
            "--from",
            day,
            "--rate",
            "100000",
            "--blocks",
            n,
            "--scale",
            "0.01",
            "--reorg-rate",
            "0.2",
        ]);
    };
    live("10");
    let rt = Background::start(&p, &["realtime"], &[]);
    rt.wait_log("realtime: started", Duration::from_secs(60));
    cluster.down();
    live("30");
    rt.wait_log("realtime: waiting", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    cluster.up();
    live("40");
    let params = GenParams {
        seed: 42,
        scale: 0.01,
        reorg_rate: 0.2,
        ..Default::default()
    };
    let settled = ledgerflow::generate::live::settled_prefix(&params, d(day), 40);
    let (mut blocks, mut txs) = (Vec::new(), Vec::new());
    for g in ledgerflow::generate::chain::day_blocks(&params, d(day), true).take(settled as usize) {
        blocks.push(g.block);
        txs.extend(g.txs);
    }
    let want = reference::realtime_minutes(d(day), &blocks, &txs);
    let db = cluster_db(&cluster).await;
    let start = std::time::Instant::now();
    loop {
        if db.has_table("realtime_dashboard").await
            && ledgerflow_testkit::serving::minutes_eq(&db.realtime_minutes().await, &want)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "realtime did not catch up; log:\n{}",
            rt.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rt.stop();
}

/// A project reading `DAY` (seed 42, no reorgs) from a MongoDB speed layer.
async fn on_mongo(server: &MongoServer, serving: Serving) -> TestProject {
    let p = project(serving).await;
    crate::mongo::use_mongo(&p, &server.uri(), "ledger", "");
    p.generate(DAY, DAY, "0.01", &[DAY], &["--reorg-rate", "0"]);
    p
}

/// What is left of MongoDB days copied into the spill dir.
fn speed_copies(p: &TestProject) -> Vec<String> {
    std::fs::read_dir(p.path().join(".ledgerflow/spill"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("speed-day-"))
                .collect()
        })
        .unwrap_or_default()
}

/// SecantusDB killed while a run reads the day: the run fails (exit 1, the
/// source named), writes nothing and leaves no copy behind; once the server
/// is back, the rerun equals the reference.
#[tokio::test]
async fn fault_mongodb_killed_mid_day_read() {
    let mut server = MongoServer::start(true);
    let p = on_mongo(&server, Serving::Sqlite).await;
    let run = Paused::start(&p, &["run", "--date", DAY], "speed_read:blocks", &[]);
    server.kill();
    let out = run.release();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("unavailable"), "{text}");
    assert!(
        !p.db.has_table("block_daily_metrics").await || p.db.block_daily_metrics().await.is_empty()
    );
    assert!(speed_copies(&p).is_empty(), "{:?}", speed_copies(&p));
    server.start_again();
    p.ok(&["run", "--date", DAY]);
    equals_reference(&p.db).await;
    nothing_left_running(&p.db).await;
}

/// The spill dir is full (the process may write no file past 64 KiB,
/// `RLIMIT_FSIZE`): copying a MongoDB day into it fails, the run fails
/// (exit 1) naming the file, nothing is written, nothing left behind; with
/// room again, the rerun equals the reference.
#[tokio::test]
async fn fault_spill_dir_full() {
    use std::os::unix::process::CommandExt;
    let server = MongoServer::start(false);
    let p = on_mongo(&server, Serving::Postgres).await;
    let mut cmd = p.cmd(&["run", "--date", DAY]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64 * 1024,
                rlim_max: 64 * 1024,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            // Past the limit a write fails (EFBIG) instead of killing.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains(".ledgerflow/spill"), "{text}");
    assert!(!p.db.has_table("block_daily_metrics").await);
    assert!(speed_copies(&p).is_empty(), "{:?}", speed_copies(&p));
    nothing_left_running(&p.db).await;
    p.ok(&["run", "--date", DAY]);
    equals_reference(&p.db).await;
    p.drop_db().await;
}

/// The kill storm, small: a week backfilled under 50 random SIGKILLs ends
/// exact (the 1,000-kill version: `cargo run -p ledgerflow-testkit --bin
/// kill-storm`).
#[tokio::test]
async fn fault_kill_storm_of_50() {
    let report = ledgerflow_testkit::storm::run(
        &crate::bin(),
        &ledgerflow_testkit::storm::StormOptions {
            kills: 50,
            seed: 7,
            serving: Serving::Sqlite,
        },
    )
    .await;
    assert_eq!(report.kills, 50);
}
