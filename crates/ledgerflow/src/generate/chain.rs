//! A deterministic, lazy model of an ethereum-like chain, one UTC day at a time.
//!
//! A day's rows depend only on (seed, scale, day, with_reorgs), so any day can
//! be regenerated alone. Forks draw from their own random stream, so the
//! canonical rows are identical with and without reorgs: a pipeline run over
//! reorged data must give the same metrics as one over clean data.

use std::collections::VecDeque;

use chrono::{Datelike, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Distinct addresses that may appear, per unit of scale.
const ADDRESS_POOL_PER_DAY: f64 = 1_000_000.0;

pub const GAS_LIMIT: i64 = 30_000_000;
const GWEI: i64 = 1_000_000_000;
const DAY_MICROS: i64 = 86_400_000_000;
const MINERS: f64 = 50.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub number: i64,
    pub hash: String,
    pub parent_hash: String,
    pub timestamp_micros: i64,
    pub miner: String,
    pub size: i64,
    pub gas_limit: i64,
    pub gas_used: i64,
    pub base_fee_per_gas: Option<i64>,
    pub transaction_count: i64,
    /// false for blocks orphaned by a reorg (truth known to the generator; not written to files)
    pub canonical: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tx {
    pub hash: String,
    pub block_number: i64,
    pub block_hash: String,
    pub block_timestamp_micros: i64,
    pub transaction_index: i64,
    pub from_address: String,
    pub to_address: Option<String>,
    pub value: i128,
    pub gas: i64,
    pub gas_price: i64,
    pub receipt_gas_used: i64,
    pub receipt_status: Option<i64>,
    pub transaction_type: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct GeneratedBlock {
    pub block: Block,
    pub txs: Vec<Tx>,
}

#[derive(Debug, Clone, Copy)]
pub struct GenParams {
    pub seed: u64,
    pub scale: f64,
    pub reorg_rate: f64,
    /// Every fork exactly this many blocks deep (as far as the day has
    /// room); `None`: 1 deep, a quarter of them 2.
    pub reorg_depth: Option<u32>,
    /// Each speed day ends with a fork past its last height, stamped on
    /// the day and orphaned by the next day's chain (`reorg_depth` deep,
    /// default 1): the day alone cannot tell it is not canonical.
    pub boundary_forks: bool,
}

impl Default for GenParams {
    fn default() -> Self {
        Self {
            seed: 42,
            scale: 1.0,
            reorg_rate: 0.0,
            reorg_depth: None,
            boundary_forks: false,
        }
    }
}

/// Variants of boundary-fork blocks start here, apart from in-day forks'.
const BOUNDARY_VARIANT: u64 = 1_000;

/// Timestamps are whole milliseconds at every scale: a MongoDB speed layer
/// stores BSON dates, which hold milliseconds (at scale 0.002 a spacing of
/// 86,400 s / 14 blocks was refused as 1793583774428571 µs).
fn whole_ms(micros: i64) -> i64 {
    micros - micros.rem_euclid(1000)
}

pub fn blocks_per_day(scale: f64) -> i64 {
    ((7200.0 * scale).round() as i64).max(2)
}

pub fn first_block_number(day: NaiveDate, scale: f64) -> i64 {
    let epoch = NaiveDate::from_ymd_opt(2023, 1, 1).expect("valid date");
    18_000_000 + (day - epoch).num_days() * blocks_per_day(scale)
}

/// The blocks of `day` in arrival order: at a forked height the orphans come
/// first, then the canonical chain resumes.
pub fn day_blocks(
    params: &GenParams,
    day: NaiveDate,
    with_reorgs: bool,
) -> impl Iterator<Item = GeneratedBlock> {
    let count = blocks_per_day(params.scale);
    let spacing = whole_ms(DAY_MICROS / count);
    let day_seed = params.seed ^ mix(day.num_days_from_ce() as u64);
    let start = crate::day::bounds(day).0.timestamp_micros();
    DayBlocks {
        shape: Shape {
            seed: params.seed,
            first: first_block_number(day, params.scale),
            // Under one spacing, so the last block stays strictly inside the day.
            start: start + (3_000_000).min(whole_ms(spacing / 2)),
            spacing,
            // With the u^4 skew of `address`, a pool of 1 M addresses per
            // mainnet day gives ~680 k active addresses a day, close to
            // Ethereum's 0.5-0.7 M (a 3 M pool gave 1.1 M: too many).
            pool: (ADDRESS_POOL_PER_DAY * params.scale).round().max(1000.0),
        },
        count,
        height: 0,
        reorg_rate: if with_reorgs { params.reorg_rate } else { 0.0 },
        reorg_depth: params.reorg_depth,
        boundary_fork: with_reorgs && params.boundary_forks,
        canon_rng: ChaCha8Rng::seed_from_u64(day_seed),
        fork_rng: ChaCha8Rng::seed_from_u64(mix(day_seed ^ 0x0F0F_F0F0_5A5A_A5A5)),
        queue: VecDeque::new(),
    }
}

struct DayBlocks {
    shape: Shape,
    count: i64,
    height: i64,
    reorg_rate: f64,
    reorg_depth: Option<u32>,
    /// Still to emit at the end of the day.
    boundary_fork: bool,
    canon_rng: ChaCha8Rng,
    fork_rng: ChaCha8Rng,
    queue: VecDeque<GeneratedBlock>,
}

impl Iterator for DayBlocks {
    type Item = GeneratedBlock;

    fn next(&mut self) -> Option<GeneratedBlock> {
        if let Some(b) = self.queue.pop_front() {
            return Some(b);
        }
        if self.height >= self.count {
            if std::mem::take(&mut self.boundary_fork) {
                self.fork_at_the_boundary();
                return self.queue.pop_front();
            }
            return None;
        }
        let (i, last, s) = (self.height, self.count - 1, self.shape);
        self.height += 1;
        let number = s.first + i;
        if i < last && self.reorg_rate > 0.0 && self.fork_rng.random::<f64>() < self.reorg_rate {
            let depth = match self.reorg_depth {
                Some(d) => i64::from(d.max(1)).min(last - i),
                None if i + 1 < last && self.fork_rng.random::<f64>() < 0.25 => 2,
                None => 1,
            };
            let mut parent = block_hash(s.seed, number - 1, 0);
            for k in 0..depth {
                let orphan = s.block(&mut self.fork_rng, i + k, 1 + k as u64, parent);
                parent = orphan.block.hash.clone();
                self.queue.push_back(orphan);
            }
        }
        let parent = block_hash(s.seed, number - 1, 0);
        self.queue
            .push_back(s.block(&mut self.canon_rng, i, 0, parent));
        self.queue.pop_front()
    }
}

impl DayBlocks {
    /// A branch of `reorg_depth` blocks (default 1) whose top is one height
    /// past the day's last block, stamped on this day, arriving after it.
    /// The next day's first block builds on the canonical last block, so
    /// the whole branch is orphaned, by a block of another day.
    fn fork_at_the_boundary(&mut self) {
        let (last, s) = (self.count - 1, self.shape);
        let depth = i64::from(self.reorg_depth.unwrap_or(1).max(1)).min(self.count);
        let mut parent = block_hash(s.seed, s.first + last - depth + 1, 0);
        for k in 0..depth {
            let i = last - depth + 1 + k;
            let mut orphan = s.block(
                &mut self.fork_rng,
                i + 1,
                BOUNDARY_VARIANT + k as u64,
                parent,
            );
            if i + 1 > last {
                // Past the last height, yet still inside the day.
                let ts = s.start + last * s.spacing + whole_ms(s.spacing / 4);
                orphan.block.timestamp_micros = ts;
                for t in &mut orphan.txs {
                    t.block_timestamp_micros = ts;
                }
            }
            parent = orphan.block.hash.clone();
            self.queue.push_back(orphan);
        }
    }
}

#[derive(Clone, Copy)]
struct Shape {
    seed: u64,
    first: i64,
    start: i64,
    spacing: i64,
    pool: f64,
}

impl Shape {
    /// Block at height `i` of the day; variant 0 is canonical, others orphans.
    fn block(
        &self,
        rng: &mut ChaCha8Rng,
        i: i64,
        variant: u64,
        parent_hash: String,
    ) -> GeneratedBlock {
        let number = self.first + i;
        let hash = block_hash(self.seed, number, variant);
        let ts = self.start + i * self.spacing;
        let base_fee = base_fee(number);
        let target: i64 = rng.random_range(100..=240);
        let mut txs = Vec::with_capacity(target as usize);
        let mut gas_used = 0;
        for index in 0..target {
            let gas = if rng.random::<f64>() < 0.4 {
                21_000
            } else {
                21_000 + (479_000.0 * rng.random::<f64>().powi(3)) as i64
            };
            let receipt_gas_used = ((gas as f64 * rng.random_range(0.4..=1.0)) as i64).max(21_000);
            if gas_used + receipt_gas_used > GAS_LIMIT {
                break;
            }
            gas_used += receipt_gas_used;
            let from_address = address(self.pick(rng));
            let kind = rng.random::<f64>();
            let to_address = if kind < 0.005 {
                None
            } else if kind < 0.008 {
                Some(from_address.clone())
            } else {
                Some(address(self.pick(rng)))
            };
            let v = rng.random::<f64>();
            let value = if v < 0.3 {
                0
            } else if v < 0.302 {
                10f64.powf(rng.random_range(25.0..27.0)) as i128
            } else {
                10f64.powf(rng.random_range(12.0..24.0)) as i128
            };
            let failed = rng.random::<f64>() < 0.03;
            let legacy = rng.random::<f64>() < 0.15;
            txs.push(Tx {
                hash: hex_id(
                    digest(&[TX_TAG, self.seed, number as u64, variant, index as u64]),
                    64,
                ),
                block_number: number,
                block_hash: hash.clone(),
                block_timestamp_micros: ts,
                transaction_index: index,
                from_address,
                to_address,
                value,
                gas,
                gas_price: base_fee + rng.random_range(0..=5 * GWEI),
                receipt_gas_used,
                receipt_status: Some(if failed { 0 } else { 1 }),
                transaction_type: Some(if legacy { 0 } else { 2 }),
            });
        }
        let miner_idx = (MINERS * rng.random::<f64>().powi(2)) as u64;
        let block = Block {
            number,
            hash,
            parent_hash,
            timestamp_micros: ts,
            miner: hex_id(digest(&[MINER_TAG, miner_idx]), 40),
            size: 600 + 110 * txs.len() as i64,
            gas_limit: GAS_LIMIT,
            gas_used,
            base_fee_per_gas: Some(base_fee),
            transaction_count: txs.len() as i64,
            canonical: variant == 0,
        };
        GeneratedBlock { block, txs }
    }

    /// A heavily skewed index into the address pool: a few addresses are
    /// in a large share of transactions, most appear rarely.
    fn pick(&self, rng: &mut ChaCha8Rng) -> u64 {
        ((self.pool * rng.random::<f64>().powi(4)) as u64).min(self.pool as u64 - 1)
    }
}

/// 5..80 gwei, a function of the height alone so it varies slowly and
/// continuously across day boundaries.
fn base_fee(number: i64) -> i64 {
    let n = number as f64;
    let wave = 0.5 + 0.35 * (n / 1_800.0).sin() + 0.15 * (n / 211.0).sin();
    ((5.0 + 75.0 * wave) * GWEI as f64) as i64
}

// Domain tags keep block, tx, address and miner ids from colliding.
const BLOCK_TAG: u64 = 0xB10C;
const TX_TAG: u64 = 0x7A;
const ADDR_TAG: u64 = 0xADD2;
const MINER_TAG: u64 = 0x3132;

fn block_hash(seed: u64, number: i64, variant: u64) -> String {
    hex_id(digest(&[BLOCK_TAG, seed, number as u64, variant]), 64)
}

fn address(idx: u64) -> String {
    hex_id(digest(&[ADDR_TAG, idx]), 40)
}

/// splitmix64: cheap, well mixed, and enough for ids (sha256 per tx would
/// dominate generation time).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn digest(parts: &[u64]) -> u64 {
    parts.iter().fold(0x6A09_E667_F3BC_C908, |h, &p| mix(h ^ p))
}

/// "0x" + `chars` lowercase hex digits expanded from `h`.
fn hex_id(h: u64, chars: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(2 + chars);
    out.extend_from_slice(b"0x");
    let mut word = 0;
    for i in 0..chars {
        if i % 16 == 0 {
            word = mix(h.wrapping_add(i as u64 / 16));
        }
        out.push(HEX[(word >> 60) as usize]);
        word <<= 4;
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, d).expect("valid date")
    }

    fn params(reorg_rate: f64) -> GenParams {
        GenParams {
            seed: 42,
            scale: 0.02,
            reorg_rate,
            ..GenParams::default()
        }
    }

    fn rows(p: &GenParams, d: NaiveDate, reorgs: bool) -> Vec<(Block, Vec<Tx>)> {
        day_blocks(p, d, reorgs).map(|g| (g.block, g.txs)).collect()
    }

    #[test]
    fn deterministic_and_independent_of_reorgs() {
        let p = params(0.1);
        let a = rows(&p, day(5), true);
        let _ = rows(&p, day(4), true);
        assert_eq!(a, rows(&p, day(5), true));
        let canonical: Vec<_> = a.into_iter().filter(|(b, _)| b.canonical).collect();
        assert_eq!(canonical, rows(&p, day(5), false));
        assert_ne!(rows(&GenParams { seed: 43, ..p }, day(5), false), canonical);
    }

    #[test]
    fn timestamps_are_whole_milliseconds_at_any_scale() {
        for scale in [0.002, 0.003, 0.01, 0.07, 1.0] {
            let p = GenParams {
                scale,
                boundary_forks: true,
                ..params(0.1)
            };
            let (start, end) = crate::day::bounds(day(3));
            for (b, txs) in rows(&p, day(3), true) {
                assert_eq!(b.timestamp_micros % 1000, 0, "scale {scale}: {b:?}");
                assert!(txs.iter().all(|t| t.block_timestamp_micros % 1000 == 0));
                assert!(b.timestamp_micros > start.timestamp_micros());
                assert!(b.timestamp_micros < end.timestamp_micros());
            }
        }
    }

    #[test]
    fn canonical_chain_is_continuous_across_days() {
        let p = params(0.2);
        let mut prev: Option<Block> = None;
        for d in [day(1), day(2)] {
            let (start, end) = crate::day::bounds(d);
            for (b, txs) in rows(&p, d, true).into_iter().filter(|(b, _)| b.canonical) {
                assert!(b.timestamp_micros > start.timestamp_micros());
                assert!(b.timestamp_micros < end.timestamp_micros());
                assert_eq!(b.transaction_count, txs.len() as i64);
                assert_eq!(
                    b.gas_used,
                    txs.iter().map(|t| t.receipt_gas_used).sum::<i64>()
                );
                assert!(b.gas_used <= b.gas_limit);
                assert!(txs
                    .iter()
                    .all(|t| t.block_hash == b.hash && t.receipt_gas_used <= t.gas));
                if let Some(p) = &prev {
                    assert_eq!(b.parent_hash, p.hash);
                    assert_eq!(b.number, p.number + 1);
                    assert_eq!(
                        b.timestamp_micros - p.timestamp_micros,
                        86_400_000_000 / 144
                    );
                }
                prev = Some(b);
            }
        }
        assert_eq!(
            first_block_number(day(2), 0.02),
            prev.map_or(0, |b| b.number) - 143
        );
    }

    #[test]
    fn orphans_at_requested_rate_never_last() {
        let p = GenParams {
            scale: 0.1,
            ..params(0.2)
        };
        let all = rows(&p, day(7), true);
        let canon: Vec<&Block> = all.iter().map(|(b, _)| b).filter(|b| b.canonical).collect();
        assert_eq!(canon.len() as i64, blocks_per_day(0.1));
        assert!(all.last().is_some_and(|(b, _)| b.canonical));
        let last = canon.last().map_or(0, |b| b.number);
        let parent_of: std::collections::HashMap<i64, &str> = canon
            .iter()
            .map(|b| (b.number + 1, b.hash.as_str()))
            .collect();
        let mut forks = 0;
        for (pos, (b, txs)) in all.iter().enumerate().filter(|(_, (b, _))| !b.canonical) {
            assert!(b.number < last);
            // Arrival order: an orphan comes before the canonical block at its height.
            assert!(all[pos..]
                .iter()
                .any(|(c, _)| c.canonical && c.number == b.number));
            assert!(txs.iter().all(|t| t.block_hash == b.hash));
            assert_ne!(Some(&b.hash.as_str()), parent_of.get(&(b.number + 1)));
            forks += usize::from(parent_of.get(&b.number) == Some(&b.parent_hash.as_str()));
        }
        // 719 heights at 20%: ~144 forks.
        assert!((100..190).contains(&forks), "{forks} forks");
    }

    #[test]
    fn forks_of_a_given_depth_and_at_the_day_boundary() {
        let p = GenParams {
            reorg_depth: Some(5),
            boundary_forks: true,
            ..params(0.05)
        };
        let all = rows(&p, day(9), true);
        let canonical: Vec<_> = all.iter().filter(|(b, _)| b.canonical).cloned().collect();
        assert_eq!(canonical, rows(&p, day(9), false));
        let last = canonical.last().map_or(0, |(b, _)| b.number);
        let (start, end) = crate::day::bounds(day(9));
        // The day ends with a 5-deep branch whose top is past its last
        // height, stamped inside the day.
        let tail: Vec<&Block> = all.iter().rev().take(5).map(|(b, _)| b).collect();
        assert_eq!(tail[0].number, last + 1);
        for (k, b) in tail.iter().enumerate() {
            assert!(!b.canonical);
            assert_eq!(b.number, last + 1 - k as i64);
            assert!(b.timestamp_micros > start.timestamp_micros());
            assert!(b.timestamp_micros < end.timestamp_micros());
            if k + 1 < tail.len() {
                assert_eq!(b.parent_hash, tail[k + 1].hash);
            }
        }
        let fork_point = &canonical[canonical.len() - 5].0;
        assert_eq!(tail[4].parent_hash, fork_point.hash);
        // In-day forks are 5 deep where the day has room.
        let mut run = 0;
        let mut depths = Vec::new();
        for (b, _) in &all[..all.len() - 5] {
            if b.canonical {
                if run > 0 {
                    depths.push(run);
                }
                run = 0;
            } else {
                run += 1;
            }
        }
        // (A fork near the end is cut short; one at the next height too
        // makes a run of two forks.)
        let five = depths.iter().filter(|&&d| d == 5).count();
        assert!(five > 0 && five * 10 >= depths.len() * 9, "{depths:?}");
    }

    #[test]
    fn rows_cover_the_edge_cases() {
        let txs: Vec<Tx> = rows(&params(0.0), day(3), false)
            .into_iter()
            .flat_map(|(_, t)| t)
            .collect();
        let n = txs.len() as f64;
        assert!((130.0..200.0).contains(&(n / 144.0)), "{n} txs");
        assert!(txs.iter().any(|t| t.value > u64::MAX as i128));
        assert!(txs.iter().any(|t| t.receipt_status == Some(0)));
        assert!(txs.iter().any(|t| t.to_address.is_none()));
        assert!(txs
            .iter()
            .any(|t| t.to_address.as_ref() == Some(&t.from_address)));
        assert!(txs
            .iter()
            .all(|t| t.hash.len() == 66 && t.from_address.len() == 42));
        let zero = txs.iter().filter(|t| t.value == 0).count() as f64 / n;
        assert!((0.25..0.35).contains(&zero));
    }
}
