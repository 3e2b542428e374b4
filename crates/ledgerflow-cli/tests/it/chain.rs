//! One canonical chain across days: a fork stamped at the end of a day that
//! the next day's blocks orphan, 100-deep reorgs, and compaction waiting
//! for finality. The generator's truth (which blocks are canonical) is the
//! reference; a day judged alone would count the fork at its end.

use chrono::NaiveDate;
use ledgerflow::generate::chain::{Block, GenParams};
use ledgerflow_testkit::mongo::MongoServer;
use ledgerflow_testkit::project::{parquet_files, stderr, string_column, TestProject};
use ledgerflow_testkit::reference::{self, generated_day};
use ledgerflow_testkit::serving::{assert_daily_eq, assert_minutes_eq, Serving};

use crate::{d, project, SINKS};

/// The longest run of orphans that arrived one after another.
fn deepest_fork(blocks: &[Block]) -> usize {
    let (mut deepest, mut run) = (0, 0);
    for b in blocks {
        run = if b.canonical { 0 } else { run + 1 };
        deepest = deepest.max(run);
    }
    deepest
}

/// Orphans stamped on the day above its last canonical height.
fn past_the_end(blocks: &[Block]) -> usize {
    let last = blocks
        .iter()
        .filter(|b| b.canonical)
        .map(|b| b.number)
        .max()
        .unwrap();
    blocks.iter().filter(|b| b.number > last).count()
}

/// Runs `days` but the last (which has no successor yet) and checks them
/// against the reference.
async fn check_days(p: &TestProject, params: &GenParams, days: &[NaiveDate]) {
    let judged = &days[..days.len() - 1];
    let (from, to) = (judged[0].to_string(), judged[judged.len() - 1].to_string());
    p.ok(&["backfill", "--from", &from, "--to", &to]);
    let daily = p.db.block_daily_metrics().await;
    assert_eq!(daily.len(), judged.len());
    let mut minutes = Vec::new();
    for (i, day) in judged.iter().enumerate() {
        let (blocks, txs) = generated_day(params, *day, true);
        assert!(past_the_end(&blocks) > 0, "{day} must end with a fork");
        assert_daily_eq(
            &daily[i],
            &reference::block_daily_metrics(*day, &blocks, &txs).unwrap(),
        );
        assert_eq!(
            p.db.user_activity(*day).await,
            reference::user_activity(*day, &blocks, &txs),
            "{day}"
        );
        minutes.extend(reference::realtime_minutes(*day, &blocks, &txs));
    }
    assert_minutes_eq(&p.db.realtime_minutes().await, &minutes);
}

#[tokio::test]
async fn forks_across_midnight_and_100_deep_reorgs_count_the_canonical_chain_only() {
    let params = GenParams {
        seed: 42,
        scale: 0.02,
        reorg_rate: 0.01,
        reorg_depth: Some(100),
        boundary_forks: true,
    };
    let days = [d("2026-11-01"), d("2026-11-02"), d("2026-11-03")];
    let deepest = days
        .iter()
        .map(|day| deepest_fork(&generated_day(&params, *day, true).0))
        .max()
        .unwrap();
    assert!(deepest >= 100, "needs a 100-deep fork, deepest {deepest}");
    let flags = [
        "--reorg-rate",
        "0.01",
        "--reorg-depth",
        "100",
        "--boundary-forks",
    ];
    let names: Vec<String> = days.iter().map(ToString::to_string).collect();
    let speed: Vec<&str> = names.iter().map(String::as_str).collect();
    for serving in SINKS {
        let p = project(serving).await;
        p.generate(speed[0], speed[2], "0.02", &speed, &flags);
        check_days(&p, &params, &days).await;
        let before = p.db.dump_metrics().await;

        // The last day has no successor: it is not final, compaction waits.
        let out = p.expect(&["compact", "--date", speed[2]], 2);
        assert!(stderr(&out).contains("not final"), "{}", stderr(&out));
        assert!(stderr(&out).contains("speed.finality_blocks = 64"));

        // The first day is final (144 blocks follow it): its batch partition
        // holds the canonical chain only, and every number stays.
        p.ok(&["compact", "--date", speed[0]]);
        let (blocks, _) = generated_day(&params, days[0], true);
        let dir = p
            .path()
            .join(format!("data/batch/blocks/date={}", speed[0]));
        let mut frozen: Vec<String> = parquet_files(&dir)
            .iter()
            .flat_map(|f| string_column(f, "hash"))
            .collect();
        frozen.sort();
        let mut canonical: Vec<String> = blocks
            .iter()
            .filter(|b| b.canonical)
            .map(|b| b.hash.clone())
            .collect();
        canonical.sort();
        assert_eq!(frozen, canonical);
        // The second day is now judged against the batch layer's first.
        p.ok(&["backfill", "--from", speed[0], "--to", speed[1], "--force"]);
        ledgerflow_testkit::serving::assert_dumps_eq(
            &p.db.dump_metrics().await,
            &before,
            "after compacting the first day",
        );
        p.drop_db().await;
    }
}

#[tokio::test]
async fn a_mongodb_day_is_judged_with_the_next_days_blocks() {
    let server = MongoServer::start(false);
    let params = GenParams {
        seed: 42,
        scale: 0.01,
        reorg_rate: 0.02,
        reorg_depth: Some(10),
        boundary_forks: true,
    };
    let days = [d("2026-11-05"), d("2026-11-06")];
    let p = project(Serving::Postgres).await;
    crate::mongo::use_mongo(&p, &server.uri(), "ledger", "");
    let flags = [
        "--reorg-rate",
        "0.02",
        "--reorg-depth",
        "10",
        "--boundary-forks",
    ];
    p.generate(
        "2026-11-05",
        "2026-11-06",
        "0.01",
        &["2026-11-05", "2026-11-06"],
        &flags,
    );
    check_days(&p, &params, &days).await;
    p.drop_db().await;
}
