//! `realtime`, `generate --live` and `bench-realtime`: signals in, the
//! library's loop and live generator, figures out.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ledgerflow::catalog::speed::SpeedLayer;
use ledgerflow::config::Config;
use ledgerflow::generate::{chain, live};
use ledgerflow::realtime::{self, Committed, RealtimeOptions};

use crate::cli::{BenchRealtimeArgs, GenerateArgs, RealtimeArgs};

/// SIGTERM or SIGINT sets the flag: the current pass finishes (its write
/// and checkpoint commit), then the command exits 0.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    crate::signals::on_shutdown("stopping after the current pass", move || {
        flag.store(true, Ordering::SeqCst)
    })?;
    Ok(stop)
}

pub async fn realtime(config: &Path, args: RealtimeArgs) -> anyhow::Result<u8> {
    let config = crate::commands::load(config)?;
    crate::serve::spawn_metrics(args.metrics_listen, &config).await?;
    let opts = RealtimeOptions {
        exit_when_idle: args.exit_when_idle,
        stop: stop_on_signals()?,
        on_commit: Some(Arc::new(|c: &Committed| {
            tracing::info!(
                minutes = c.minutes,
                rows = c.rows,
                highest_block = c.highest_block,
                "realtime: committed"
            );
        })),
    };
    let summary = realtime::run(&config, opts).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "realtime stopped: {} passes, {} minutes and {} rows written, highest block {}",
            summary.passes,
            summary.minutes_written,
            summary.rows_written,
            summary
                .highest_block
                .map_or("none".to_string(), |n| n.to_string())
        );
    }
    Ok(0)
}

pub async fn generate_live(config: &Config, args: &GenerateArgs) -> anyhow::Result<u8> {
    if !(args.rate > 0.0 && args.rate <= 100_000.0) {
        return Err(ledgerflow::Error::Usage("--rate must be in (0, 100000]".into()).into());
    }
    let speed = SpeedLayer::open(config)?;
    let params = chain::GenParams {
        seed: args.seed,
        scale: args.scale,
        reorg_rate: args.reorg_rate,
        reorg_depth: args.reorg_depth,
        boundary_forks: args.boundary_forks,
    };
    let day = args.from.unwrap_or_else(ledgerflow::day::today);
    let opts = live::LiveOptions {
        rate: args.rate,
        max_blocks: args.blocks,
        stop: stop_on_signals()?,
        on_block: None,
    };
    tracing::info!(%day, rate = args.rate, speed = speed.kind(), "generating live blocks");
    let s = live::live(&speed, &params, day, &opts).await?;
    println!(
        "appended {} blocks ({} orphaned), {} transactions",
        s.blocks, s.orphaned_blocks, s.transactions
    );
    Ok(0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A fresh project for one measurement: a temp dir, the default models,
/// the given speed layer (a MongoDB database of its own) and serving DB.
fn bench_project(dir: &Path, args: &BenchRealtimeArgs, label: &str) -> anyhow::Result<Config> {
    ledgerflow::project::init(dir)?;
    let mut config = Config::load(&dir.join(ledgerflow::project::CONFIG_FILE))?;
    if args.speed != "landing" {
        config.speed.url = args.speed.clone().into();
        config.speed.mongodb = Some(ledgerflow::config::MongoSettings {
            database: format!("ledgerflow_bench_{}_{label}", std::process::id()),
            ..Default::default()
        });
    }
    if let Some(s) = &args.serving {
        config.serving.url = s.clone().into();
        if s.starts_with("postgres") {
            config.serving.schema = format!("ledgerflow_bench_{}_{label}", std::process::id());
        }
    }
    config.speed.poll_interval = std::time::Duration::from_millis(50);
    config.validate()?;
    Ok(config)
}

pub async fn bench(args: BenchRealtimeArgs) -> anyhow::Result<u8> {
    if args.blocks < 2 {
        return Err(ledgerflow::Error::Usage("--blocks must be at least 2".into()).into());
    }
    let tmp = tempfile::tempdir()?;
    let day = ledgerflow::day::today();
    println!(
        "freshness: block landed in the speed layer ({}) -> its minute's row committed in the serving database",
        if args.speed == "landing" { "landing dir" } else { "MongoDB" }
    );
    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>10} {:>9}",
        "rate", "heights", "p50 ms", "p99 ms", "max ms", "passes"
    );
    for (i, &rate) in args.rates.iter().enumerate() {
        let dir = tmp.path().join(format!("rate{i}"));
        let config = bench_project(&dir, &args, &i.to_string())?;
        let landed: Arc<Mutex<BTreeMap<i64, Instant>>> = Default::default();
        let commits: Arc<Mutex<Vec<Committed>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let loop_opts = RealtimeOptions {
            exit_when_idle: false,
            stop: stop.clone(),
            on_commit: Some({
                let commits = commits.clone();
                Arc::new(move |c: &Committed| commits.lock().unwrap().push(c.clone()))
            }),
        };
        let loop_config = config.clone();
        let follower = tokio::spawn(async move { realtime::run(&loop_config, loop_opts).await });
        // Give the loop its start (an empty speed layer) before blocks land.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let speed = SpeedLayer::open(&config)?;
        let params = chain::GenParams {
            seed: 42 + i as u64,
            scale: 1.0,
            reorg_rate: 0.01,
            ..Default::default()
        };
        let gen_opts = live::LiveOptions {
            rate,
            max_blocks: Some(args.blocks),
            stop: Arc::new(AtomicBool::new(false)),
            on_block: Some({
                let landed = landed.clone();
                Arc::new(move |n, at| {
                    landed.lock().unwrap().insert(n, at);
                })
            }),
        };
        live::live(&speed, &params, day, &gen_opts).await?;
        // Wait until the last block is visible (or 30 s).
        let last = *landed
            .lock()
            .unwrap()
            .keys()
            .next_back()
            .expect("blocks landed");
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while Instant::now() < deadline
            && commits
                .lock()
                .unwrap()
                .last()
                .is_none_or(|c| c.highest_block < last)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::SeqCst);
        follower.await??;
        let commits = commits.lock().unwrap();
        let mut latencies: Vec<f64> = landed
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(&n, &at)| {
                let c = commits
                    .iter()
                    .find(|c| c.highest_block >= n && c.at >= at)?;
                Some((c.at - at).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        println!(
            "{:>7}x {:>8} {:>10.1} {:>10.1} {:>10.1} {:>9}",
            rate,
            latencies.len(),
            percentile(&latencies, 50.0),
            percentile(&latencies, 99.0),
            latencies.last().copied().unwrap_or(f64::NAN),
            commits.len()
        );
    }
    if args.day_blocks > 0 && args.speed != "landing" {
        mongo_day_read(&args, tmp.path()).await?;
    }
    Ok(0)
}

/// Documents/s of reading a MongoDB day into the engine, and the share of
/// it that is the server: the same documents drained raw, undecoded.
async fn mongo_day_read(args: &BenchRealtimeArgs, tmp: &Path) -> anyhow::Result<()> {
    use ledgerflow::catalog::schema::Entity;
    use ledgerflow::catalog::speed::mongo::MongoLayer;
    let config = bench_project(&tmp.join("day"), args, "day")?;
    let speed = SpeedLayer::open(&config)?;
    let day = ledgerflow::day::today();
    let params = chain::GenParams {
        seed: 42,
        scale: args.day_blocks as f64 / 7200.0,
        reorg_rate: 0.01,
        ..Default::default()
    };
    let written = ledgerflow::generate::write_speed_day(&speed, &params, day, 50, &|_| {}).await?;
    let docs = written.blocks + written.transactions;
    let catalog = ledgerflow::catalog::unified::Catalog::open(&config)?;
    // The first read also creates the time indexes; the second is the
    // steady state.
    let started = Instant::now();
    drop(catalog.plan_day(day).await?);
    let first = started.elapsed().as_secs_f64();
    let started = Instant::now();
    drop(catalog.plan_day(day).await?);
    let full = started.elapsed().as_secs_f64();
    let SpeedLayer::Mongo(mongo) = &speed else {
        unreachable!("checked by the caller")
    };
    let started = Instant::now();
    let (start, end) = ledgerflow::day::bounds(day);
    for entity in Entity::ALL {
        let coll = mongo.collection(entity).await?;
        let mut cursor = coll
            .find(MongoLayer::window_filter(entity, start, end))
            .projection(ledgerflow::catalog::speed::bson_arrow::projection(
                &entity.schema(),
            ))
            .batch_size(5000)
            .await?;
        while cursor.advance().await? {}
    }
    let raw = started.elapsed().as_secs_f64();
    println!(
        "MongoDB day read: {docs} documents in {full:.2} s = {:.0} documents/s into Parquet \
         (first read, creating the indexes: {first:.2} s); the server alone (the same \
         queries drained raw, undecoded) {raw:.2} s = {:.0}% of it",
        docs as f64 / full,
        100.0 * raw / full
    );
    mongo
        .database()
        .await?
        .drop()
        .await
        .map_err(|e| mongo.classify(e, "dropping the bench database"))?;
    Ok(())
}
