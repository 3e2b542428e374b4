//! `realtime` over live blocks with reorgs, from the landing dir and from
//! MongoDB (change streams, polling), checked against the reference over
//! exactly the blocks written; killed and restarted (SIGKILL) it loses and
//! doubles nothing; the MongoDB server killed mid-stream, it reconnects and
//! catches up; SIGTERM keeps the checkpoint and exits 0.

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use ledgerflow::generate::chain::{day_blocks, Block, GenParams, Tx};
use ledgerflow::generate::live::settled_prefix;
use ledgerflow_testkit::mongo::MongoServer;
use ledgerflow_testkit::project::{Background, TestProject};
use ledgerflow_testkit::reference::{self, RealtimeMinute};
use ledgerflow_testkit::serving::{assert_minutes_eq, minutes_eq, Serving};

use crate::mongo::use_mongo;
use crate::{d, project};

const SCALE: &str = "0.01";
const REORGS: &str = "0.2";

fn params() -> GenParams {
    GenParams {
        seed: 42,
        scale: 0.01,
        reorg_rate: 0.2,
        ..Default::default()
    }
}

/// The first `n` arrivals of `day` (with their transactions).
fn prefix(day: NaiveDate, n: u64) -> (Vec<Block>, Vec<Tx>) {
    let mut blocks = Vec::new();
    let mut txs = Vec::new();
    for g in day_blocks(&params(), day, true).take(n as usize) {
        blocks.push(g.block);
        txs.extend(g.txs);
    }
    (blocks, txs)
}

/// What realtime_dashboard must hold once the first `written[i]` blocks of
/// each day are in the speed layer.
pub(crate) fn expected(days: &[(NaiveDate, u64)]) -> Vec<RealtimeMinute> {
    days.iter()
        .flat_map(|&(day, n)| {
            let (b, t) = prefix(day, n);
            reference::realtime_minutes(day, &b, &t)
        })
        .collect()
}

/// Appends blocks of `day` until at least `blocks` (at a settled tip).
pub(crate) fn live(p: &TestProject, day: NaiveDate, blocks: u64, rate: &str) -> u64 {
    let day_s = day.to_string();
    let n = blocks.to_string();
    p.ok(&[
        "generate",
        "--live",
        "--from",
        &day_s,
        "--rate",
        rate,
        "--blocks",
        &n,
        "--scale",
        SCALE,
        "--reorg-rate",
        REORGS,
    ]);
    settled_prefix(&params(), day, blocks)
}

pub(crate) async fn wait_for(
    p: &TestProject,
    want: &[RealtimeMinute],
    bg: &Background,
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        // Equal, not just as long: a fork's orphan and its replacement
        // share a height, so only the whole rows tell them apart.
        let got = if p.db.has_table("realtime_dashboard").await {
            p.db.realtime_minutes().await
        } else {
            Vec::new()
        };
        if minutes_eq(&got, want) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "realtime did not catch up within {timeout:?}: {} of {} minutes; log:\n{}",
            got.len(),
            want.len(),
            bg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Forks 100 blocks deep, far past the restart window of 64 heights: one
/// arrives while the loop follows, another while it is down (killed). Both
/// are repaired: the table equals the reference over exactly the blocks
/// written.
#[tokio::test]
async fn reorgs_100_deep_while_following_and_while_down_are_repaired() {
    let params = GenParams {
        seed: 13,
        scale: 0.05,
        reorg_rate: 0.02,
        reorg_depth: Some(100),
        boundary_forks: false,
    };
    let day = d("2026-11-14");
    let deep = |n: u64| -> bool {
        let mut run = 0;
        day_blocks(&params, day, true).take(n as usize).any(|g| {
            run = if g.block.canonical { 0 } else { run + 1 };
            run >= 100
        })
    };
    let want = |n: u64| {
        let (mut blocks, mut txs) = (Vec::new(), Vec::new());
        for g in day_blocks(&params, day, true).take(n as usize) {
            blocks.push(g.block);
            txs.extend(g.txs);
        }
        reference::realtime_minutes(day, &blocks, &txs)
    };
    let p = project(Serving::Postgres).await;
    let write = |blocks: u64| {
        let n = blocks.to_string();
        p.ok(&[
            "generate",
            "--live",
            "--from",
            "2026-11-14",
            "--rate",
            "100000",
            "--blocks",
            &n,
            "--scale",
            "0.05",
            "--seed",
            "13",
            "--reorg-rate",
            "0.02",
            "--reorg-depth",
            "100",
        ]);
        settled_prefix(&params, day, blocks)
    };
    // (A loop over an empty landing dir follows today: the day must exist.)
    write(3);
    let rt = Background::start(&p, &["realtime"], &[]);
    let n1 = write(120);
    assert!(deep(n1), "needs a 100-deep fork in the first {n1} arrivals");
    wait_for(&p, &want(n1), &rt, Duration::from_secs(90)).await;
    rt.kill();
    let n2 = write(10_000);
    assert!(
        day_blocks(&params, day, true)
            .skip(n1 as usize)
            .take((n2 - n1) as usize)
            .scan(0, |run, g| {
                *run = if g.block.canonical { 0 } else { *run + 1 };
                Some(*run)
            })
            .any(|run| run >= 100),
        "needs a 100-deep fork while the loop is down"
    );
    let rt = Background::start(&p, &["realtime"], &[]);
    wait_for(&p, &want(n2), &rt, Duration::from_secs(90)).await;
    rt.stop();
    p.drop_db().await;
}

/// Forks that arrive before the blocks that replace them, seen while the
/// loop follows at a fast pace (one block every 400 ms here: at 120 ms a
/// debug build's pass under CI load saw a fork and its replacement in one
/// pass, so no reorg while following), are
/// listed on the realtime page at heights where the generator made an
/// orphan; the page draws the last hour's freshness, `/metrics` the lag.
#[tokio::test]
async fn reorgs_seen_while_following_are_on_the_realtime_page() {
    let p = project(Serving::Postgres).await;
    p.set_config(
        "url = \"data/landing\"",
        "url = \"data/landing\"\npoll_interval = \"20ms\"",
    );
    let day = d("2026-11-15");
    live(&p, day, 3, "100000");
    let rt = Background::start(&p, &["realtime"], &[]);
    let n = live(&p, day, 40, "30");
    let orphan_heights: std::collections::BTreeSet<i64> = day_blocks(&params(), day, true)
        .take(n as usize)
        .filter(|g| !g.block.canonical)
        .map(|g| g.block.number)
        .collect();
    assert!(!orphan_heights.is_empty(), "the sequence has forks");
    wait_for(&p, &expected(&[(day, n)]), &rt, Duration::from_secs(60)).await;

    let (serve, base) = crate::serve::start(&p, &[], &[]);
    // The checkpoint (and the journal in it) rides on a pass's last write.
    let deadline = Instant::now() + Duration::from_secs(30);
    let html = loop {
        let (status, html) = crate::serve::get(&format!("{base}/realtime"), &[]);
        assert_eq!(status, 200, "{html}");
        if html.contains("<table id=\"reorgs\">") {
            break html;
        }
        assert!(
            Instant::now() < deadline,
            "no reorg listed: {html}\n{}",
            rt.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let rows = html
        .split("<table id=\"reorgs\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap();
    for row in rows.split("<tr><td>").skip(1) {
        let cells: Vec<&str> = row.split("</td><td>").collect();
        let from: i64 = cells[1].parse().unwrap();
        let depth: u64 = cells[2].split('<').next().unwrap().parse().unwrap();
        assert!(depth >= 1, "{row}");
        assert!(
            orphan_heights.contains(&from),
            "a reorg at {from}, where no orphan was made ({orphan_heights:?})"
        );
    }
    assert!(html.contains("<div id=\"history\"><svg"), "{html}");
    let (_, metrics) = crate::serve::get(&format!("{base}/metrics"), &[]);
    assert!(
        metrics.contains("ledgerflow_realtime_lag_seconds "),
        "{metrics}"
    );
    serve.stop();
    rt.stop();
    p.drop_db().await;
}

/// A failure no wait can fix (here a constraint the table gained that the
/// model's rows break) ends the loop with exit 1 naming it; it is not
/// waited out like a database that is down.
#[tokio::test]
async fn a_permanent_write_error_ends_the_loop_naming_it() {
    let p = project(Serving::Postgres).await;
    let day = d("2026-11-12");
    live(&p, day, 10, "100000");
    p.ok(&["realtime", "--exit-when-idle"]);
    p.db.execute(
        "ALTER TABLE realtime_dashboard ADD COLUMN note text NOT NULL DEFAULT 'x'; \
         ALTER TABLE realtime_dashboard ALTER COLUMN note DROP DEFAULT",
    )
    .await;
    live(&p, day, 20, "100000");
    let mut child = p
        .cmd(&["realtime"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("realtime kept waiting on a permanent error");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("note"), "{err}");
    p.drop_db().await;
}

/// Landing dir: live blocks with reorgs, a SIGKILL mid-stream, a restart,
/// a day rollover; every state checked against the reference.
#[tokio::test]
async fn realtime_from_the_landing_dir_equals_the_reference_across_kill_and_rollover() {
    let p = project(Serving::Postgres).await;
    let (d1, d2) = (d("2026-11-10"), d("2026-11-11"));
    let n1 = live(&p, d1, 20, "100000");
    let rt = Background::start(&p, &["realtime"], &[]);
    wait_for(&p, &expected(&[(d1, n1)]), &rt, Duration::from_secs(60)).await;
    assert_minutes_eq(&p.db.realtime_minutes().await, &expected(&[(d1, n1)]));

    // More blocks while it follows; then a crash.
    let n1 = live(&p, d1, 45, "3000");
    wait_for(&p, &expected(&[(d1, n1)]), &rt, Duration::from_secs(60)).await;
    assert_minutes_eq(&p.db.realtime_minutes().await, &expected(&[(d1, n1)]));
    rt.kill();

    // Blocks land while it is down, including the rest of the day and the
    // start of the next one.
    let n1 = live(&p, d1, 10_000, "100000");
    let n2 = live(&p, d2, 15, "100000");
    let rt = Background::start(&p, &["realtime"], &[]);
    let want = expected(&[(d1, n1), (d2, n2)]);
    wait_for(&p, &want, &rt, Duration::from_secs(60)).await;
    assert_minutes_eq(&p.db.realtime_minutes().await, &want);
    // SIGTERM: exit 0, the checkpoint kept; a catch-up run finds nothing
    // to change.
    rt.stop();
    assert_eq!(
        p.db.count("ledgerflow_realtime").await,
        1,
        "checkpoint kept"
    );
    let before = p.db.dump("realtime_dashboard", &["updated_at"]).await;
    p.ok(&["realtime", "--exit-when-idle"]);
    assert_eq!(
        p.db.dump("realtime_dashboard", &["updated_at"]).await,
        before
    );
    assert_minutes_eq(&p.db.realtime_minutes().await, &want);
    p.drop_db().await;
}

/// MongoDB with change streams: live blocks with reorgs, the loop killed
/// and restarted (resume token), the server killed and restarted under a
/// running loop (it reconnects and catches up).
#[tokio::test]
async fn realtime_from_mongodb_change_streams_survives_kills_of_itself_and_the_server() {
    let mut server = MongoServer::start(true);
    let p = project(Serving::Postgres).await;
    use_mongo(&p, &server.uri(), "ledger", "connect_timeout = \"2s\"");
    let day = d("2026-11-12");
    let n = live(&p, day, 10, "100000");
    let rt = Background::start(&p, &["realtime"], &[]);
    wait_for(&p, &expected(&[(day, n)]), &rt, Duration::from_secs(90)).await;
    rt.wait_log("realtime: started", Duration::from_secs(5));

    let n = live(&p, day, 25, "100000");
    wait_for(&p, &expected(&[(day, n)]), &rt, Duration::from_secs(90)).await;
    assert_minutes_eq(&p.db.realtime_minutes().await, &expected(&[(day, n)]));
    rt.kill();

    let n = live(&p, day, 35, "100000");
    let rt = Background::start(&p, &["realtime"], &[]);
    wait_for(&p, &expected(&[(day, n)]), &rt, Duration::from_secs(90)).await;
    assert_minutes_eq(&p.db.realtime_minutes().await, &expected(&[(day, n)]));

    // The server goes away under the running loop, and comes back.
    server.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.start_again();
    let n = live(&p, day, 50, "100000");
    wait_for(&p, &expected(&[(day, n)]), &rt, Duration::from_secs(120)).await;
    assert_minutes_eq(&p.db.realtime_minutes().await, &expected(&[(day, n)]));
    assert!(rt.log().contains("realtime: waiting"), "{}", rt.log());
    rt.stop();
    p.drop_db().await;
}

/// MongoDB followed by polling block numbers (servers without change
/// streams): the same numbers.
#[tokio::test]
async fn realtime_from_mongodb_by_polling_equals_the_reference() {
    let server = MongoServer::start(false);
    let p = project(Serving::Sqlite).await;
    use_mongo(&p, &server.uri(), "ledger", "follow = \"poll\"");
    let day = d("2026-11-13");
    let n = live(&p, day, 20, "100000");
    p.ok(&["realtime", "--exit-when-idle"]);
    assert_minutes_eq(&p.db.realtime_minutes().await, &expected(&[(day, n)]));
    let rt = Background::start(&p, &["realtime"], &[]);
    let n = live(&p, day, 40, "2000");
    wait_for(&p, &expected(&[(day, n)]), &rt, Duration::from_secs(90)).await;
    assert_minutes_eq(&p.db.realtime_minutes().await, &expected(&[(day, n)]));
    rt.stop();
}

/// A stored resume token older than the server's history (error 286):
/// the loop starts a new stream, reloads the day and gets it right.
#[tokio::test]
async fn a_resume_token_past_the_oplog_is_recovered_from() {
    let server = MongoServer::start_with(false, &["--oplog-max-entries", "100"]);
    let p = project(Serving::Sqlite).await;
    use_mongo(&p, &server.uri(), "ledger", "");
    let day = d("2026-11-14");
    let n = live(&p, day, 8, "100000");
    p.ok(&["realtime", "--exit-when-idle"]);
    assert_minutes_eq(&p.db.realtime_minutes().await, &expected(&[(day, n)]));
    let n = live(&p, day, 30, "100000");
    let client = ledgerflow::mongodb::Client::with_uri_str(server.uri())
        .await
        .unwrap();
    client
        .database("admin")
        .run_command(ledgerflow::mongodb::bson::doc! {"secantusAdmin.pruneOplog": 1})
        .await
        .unwrap();
    let out = p.ok(&["realtime", "--exit-when-idle"]);
    let log = ledgerflow_testkit::project::stderr(&out);
    assert!(log.contains("older than the server's history"), "{log}");
    assert_minutes_eq(&p.db.realtime_minutes().await, &expected(&[(day, n)]));
}

/// A speed layer that is down when `realtime` starts is waited for, and
/// followed once it is up.
#[tokio::test]
async fn realtime_waits_for_a_source_that_is_down_at_start() {
    let mut server = MongoServer::start(false);
    let p = project(Serving::Sqlite).await;
    use_mongo(&p, &server.uri(), "ledger", "connect_timeout = \"1s\"");
    server.stop();
    let rt = Background::start(&p, &["realtime"], &[]);
    rt.wait_log("realtime: waiting", Duration::from_secs(30));
    server.start_again();
    let day = d("2026-11-15");
    let n = live(&p, day, 12, "100000");
    wait_for(&p, &expected(&[(day, n)]), &rt, Duration::from_secs(90)).await;
    rt.stop();
}
