//! `generate --live`: appends blocks to the speed layer as they "happen",
//! one micro-batch per block (its transactions first), at a multiple of
//! mainnet's rate (one block per 12 s), reorgs included. Blocks come from
//! the deterministic day sequence, so a test can compute what was written;
//! a restart continues after the blocks already in the speed layer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use chrono::NaiveDate;

use super::chain::{self, GenParams};
use super::{flush_micro_batch, GenerateSummary};
use crate::catalog::schema::Entity;
use crate::catalog::speed::landing::LandingLayer;
use crate::catalog::speed::mongo::MongoLayer;
use crate::catalog::speed::SpeedLayer;
use crate::error::Result;

/// Mainnet's block interval.
pub const MAINNET_BLOCK: Duration = Duration::from_secs(12);

#[derive(Clone)]
pub struct LiveOptions {
    /// Multiple of mainnet's rate (1.0 = a block every 12 s).
    pub rate: f64,
    /// Stop after at least this many blocks (at a settled tip, see
    /// [`settled_prefix`]).
    pub max_blocks: Option<u64>,
    pub stop: Arc<AtomicBool>,
    /// Called with each block's number once it is in the speed layer.
    pub on_block: Option<Arc<dyn Fn(i64, Instant) + Send + Sync>>,
}

/// How many blocks of `day`'s arrival sequence to write so that at least
/// `min_blocks` are written and the last one written is the canonical tip
/// (no fork left open), so the speed layer's canonical chain equals the
/// generator's truth.
pub fn settled_prefix(params: &GenParams, day: NaiveDate, min_blocks: u64) -> u64 {
    let mut highest = i64::MIN;
    let mut n = 0u64;
    for g in chain::day_blocks(params, day, true) {
        n += 1;
        highest = highest.max(g.block.number);
        if n >= min_blocks && g.block.canonical && g.block.number == highest {
            return n;
        }
    }
    n
}

/// Blocks of `day` already in the speed layer, and the next landing seq.
async fn already_written(speed: &SpeedLayer, day: NaiveDate) -> Result<(u64, u64)> {
    match speed {
        SpeedLayer::Landing(l) => {
            let files = l.list_day(Entity::Blocks.name(), day).await?;
            let headers = l.headers(&files).await?;
            let next_seq = LandingLayer::next_seq(&files);
            Ok((headers.len() as u64, next_seq))
        }
        SpeedLayer::Mongo(m) => {
            let (start, end) = crate::day::bounds(day);
            let mut hashes = Vec::new();
            for batch in m
                .read_all(
                    Entity::Blocks,
                    MongoLayer::window_filter(Entity::Blocks, start, end),
                )
                .await?
            {
                let col = batch.column(1).as_string::<i32>();
                hashes.extend(col.iter().flatten().map(str::to_string));
            }
            // A block's transactions are inserted before it: those of a
            // block a killed writer never inserted are removed, so the
            // rewrite does not double them.
            let mut orphaned = MongoLayer::window_filter(Entity::Transactions, start, end);
            orphaned.insert("block_hash", mongodb::bson::doc! {"$nin": &hashes});
            m.database()
                .await?
                .collection::<mongodb::bson::Document>(m.collection_name(Entity::Transactions))
                .delete_many(orphaned)
                .await
                .map_err(|e| m.classify(e, "removing a partial block's transactions"))?;
            Ok((hashes.len() as u64, 0))
        }
    }
}

pub async fn live(
    speed: &SpeedLayer,
    params: &GenParams,
    first_day: NaiveDate,
    opts: &LiveOptions,
) -> Result<GenerateSummary> {
    let interval = MAINNET_BLOCK.div_f64(opts.rate.max(1e-6));
    let mut summary = GenerateSummary::default();
    let mut day = first_day;
    let mut next = Instant::now();
    let target = opts
        .max_blocks
        .map(|n| settled_prefix(params, first_day, n));
    loop {
        let (skip, mut seq) = already_written(speed, day).await?;
        summary.days += 1;
        for generated in chain::day_blocks(params, day, true).skip(skip as usize) {
            if opts.stop.load(Ordering::SeqCst) {
                return Ok(summary);
            }
            if let Some(target) = target {
                if day == first_day && skip + summary.blocks >= target {
                    return Ok(summary);
                }
            }
            tokio::time::sleep_until(next.into()).await;
            next += interval;
            let number = generated.block.number;
            summary.count(&generated.block, generated.txs.len());
            let mut blocks = vec![generated.block];
            let mut txs = generated.txs;
            flush_micro_batch(speed, day, seq, &mut blocks, &mut txs).await?;
            seq += 1;
            summary.files += 2;
            if let Some(f) = &opts.on_block {
                f(number, Instant::now());
            }
        }
        if target.is_some() {
            return Ok(summary);
        }
        day = day.succ_opt().expect("dates run on");
    }
}
