//! Each default model against the independent reference computation, for a
//! batch day, a day present in both layers (counted once), and a speed day
//! with reorgs.

use ledgerflow::generate::chain::GenParams;
use ledgerflow_testkit::project::{parquet_files, string_column};
use ledgerflow_testkit::reference::{self, generated_day};
use ledgerflow_testkit::serving::{assert_daily_eq, assert_minutes_eq};

use crate::{d, project, SINKS};

#[tokio::test]
async fn models_equal_the_reference_on_batch_both_and_speed_days() {
    let params = GenParams {
        seed: 42,
        scale: 0.01,
        reorg_rate: 0.15,
        ..Default::default()
    };
    // Day 1 batch only; day 2 in both layers; day 3 speed only, with reorgs.
    let days = [d("2026-11-01"), d("2026-11-02"), d("2026-11-03")];
    let data: Vec<_> = days
        .iter()
        .enumerate()
        .map(|(i, day)| generated_day(&params, *day, i > 0))
        .collect();
    let orphans = data[2].0.iter().filter(|b| !b.canonical).count();
    assert!(
        orphans > 0,
        "the speed day must contain reorgs to test the rule"
    );

    for serving in SINKS {
        let p = project(serving).await;
        let reorgs = ["--reorg-rate", "0.15"];
        p.generate(
            "2026-11-01",
            "2026-11-02",
            "0.01",
            &["2026-11-02"],
            &[&reorgs[..], &["--also-batch"]].concat(),
        );
        p.generate("2026-11-03", "2026-11-03", "0.01", &["2026-11-03"], &reorgs);
        let out = p.ok(&["backfill", "--from", "2026-11-01", "--to", "2026-11-03"]);
        let text = ledgerflow_testkit::project::stdout(&out);
        assert!(
            text.contains("2026-11-02 block_daily_metrics      batch"),
            "{text}"
        );
        assert!(
            text.contains("2026-11-03 block_daily_metrics      speed"),
            "{text}"
        );

        let daily = p.db.block_daily_metrics().await;
        assert_eq!(daily.len(), 3, "{serving:?}");
        let mut minutes_expected = Vec::new();
        for (i, day) in days.iter().enumerate() {
            let (blocks, txs) = &data[i];
            let expected = reference::block_daily_metrics(*day, blocks, txs).unwrap();
            assert_daily_eq(&daily[i], &expected);
            let users = p.db.user_activity(*day).await;
            let expected_users = reference::user_activity(*day, blocks, txs);
            assert_eq!(users.len(), expected_users.len(), "{serving:?} {day}");
            assert_eq!(users, expected_users, "{serving:?} {day}");
            minutes_expected.extend(reference::realtime_minutes(*day, blocks, txs));
        }
        assert_minutes_eq(&p.db.realtime_minutes().await, &minutes_expected);
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
