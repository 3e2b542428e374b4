//! The kill storm: a week backfilled again and again (`--force`, so every
//! run rewrites every day) under random SIGKILLs, then run to completion
//! and checked day by day against the reference: whatever moment a process
//! dies at, the serving tables end up exact, with no row left running.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use ledgerflow::generate::chain::GenParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::project::TestProject;
use crate::reference::{self, generated_day};
use crate::serving::{assert_daily_eq, assert_minutes_eq, Serving};

#[derive(Debug, Clone)]
pub struct StormOptions {
    /// How many runs to kill.
    pub kills: usize,
    pub seed: u64,
    pub serving: Serving,
}

#[derive(Debug, Clone, Default)]
pub struct StormReport {
    pub kills: usize,
    /// Runs that finished before their kill came.
    pub completed: usize,
    /// One clean backfill of the week, which bounds the kill delays.
    pub backfill: Duration,
    pub elapsed: Duration,
}

const FROM: &str = "2026-11-01";
const TO: &str = "2026-11-07";
/// The last two days come from the speed layer, with reorgs.
const SPEED_DAYS: [&str; 2] = ["2026-11-06", "2026-11-07"];
const SCALE: &str = "0.005";
const REORGS: &str = "0.05";

fn params() -> GenParams {
    GenParams {
        seed: 42,
        scale: 0.005,
        reorg_rate: 0.05,
        ..Default::default()
    }
}

/// Runs the storm with the binary at `bin`; panics (naming the day and
/// table) if the tables end up anything but exact.
pub async fn run(bin: &Path, opts: &StormOptions) -> StormReport {
    let started = Instant::now();
    let p = TestProject::new(bin, opts.serving).await;
    if opts.serving == Serving::Postgres {
        let schema = p.db.schema().to_string();
        p.set_config("schema = \"public\"", &format!("schema = \"{schema}\""));
    }
    p.generate(FROM, TO, SCALE, &SPEED_DAYS, &["--reorg-rate", REORGS]);
    let args = ["backfill", "--from", FROM, "--to", TO, "--force"];
    let clean = Instant::now();
    p.ok(&args);
    let mut report = StormReport {
        backfill: clean.elapsed(),
        ..StormReport::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let max_delay = report.backfill.as_millis().max(1) as u64;
    while report.kills < opts.kills {
        let mut child = p
            .cmd(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ledgerflow");
        std::thread::sleep(Duration::from_millis(rng.random_range(0..max_delay)));
        match child.try_wait().expect("wait") {
            Some(_) => report.completed += 1,
            None => {
                child.kill().expect("kill");
                child.wait().expect("wait");
                report.kills += 1;
            }
        }
    }
    // Without --force: whatever the kills left done is skipped, the rest
    // is run; then every day must be exact.
    p.ok(&["backfill", "--from", FROM, "--to", TO]);
    check(&p).await;
    p.drop_db().await;
    report.elapsed = started.elapsed();
    report
}

async fn check(p: &TestProject) {
    let open: Vec<_> =
        p.db.runs()
            .await
            .into_iter()
            .filter(|r| r.2 == "running" || r.2 == "pending")
            .collect();
    assert!(open.is_empty(), "rows left open: {open:?}");
    let days = ledgerflow::day::range(FROM.parse().unwrap(), TO.parse().unwrap());
    let daily = p.db.block_daily_metrics().await;
    assert_eq!(daily.len(), days.len());
    let mut minutes = Vec::new();
    for (i, day) in days.iter().enumerate() {
        let speed = SPEED_DAYS.contains(&day.to_string().as_str());
        let (blocks, txs) = generated_day(&params(), *day, speed);
        assert_daily_eq(
            &daily[i],
            &reference::block_daily_metrics(*day, &blocks, &txs).expect("a day with blocks"),
        );
        assert_eq!(
            p.db.user_activity(*day).await,
            reference::user_activity(*day, &blocks, &txs),
            "user_activity_agg {day}"
        );
        minutes.extend(reference::realtime_minutes(*day, &blocks, &txs));
    }
    assert_minutes_eq(&p.db.realtime_minutes().await, &minutes);
}

/// The days the storm backfills.
pub fn days() -> Vec<NaiveDate> {
    ledgerflow::day::range(FROM.parse().unwrap(), TO.parse().unwrap())
}
