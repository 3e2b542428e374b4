//! The test oracle: MISSION.md's default models computed literally in plain
//! Rust over rows, sharing no code with the SQL models they check.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use ledgerflow::day;
use ledgerflow::generate::chain::{day_blocks, Block, GenParams, Tx};

#[derive(Debug, Clone, PartialEq)]
pub struct BlockDailyMetrics {
    pub day: NaiveDate,
    pub block_count: i64,
    pub first_block: i64,
    pub last_block: i64,
    pub tx_count: i64,
    pub failed_tx_count: i64,
    pub contract_creation_count: i64,
    pub total_gas_used: i64,
    pub avg_gas_used_ratio: f64,
    pub avg_base_fee_per_gas: Option<f64>,
    pub total_value_wei: i128,
    pub total_fees_wei: i128,
    pub unique_senders: i64,
    pub unique_receivers: i64,
    /// None when block_count < 2.
    pub avg_block_time_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserActivity {
    pub day: NaiveDate,
    pub address: String,
    pub tx_sent: i64,
    pub tx_received: i64,
    pub value_sent_wei: i128,
    pub value_received_wei: i128,
    pub fees_paid_wei: i128,
    pub failed_tx_sent: i64,
    pub first_seen_at_micros: i64,
    pub last_seen_at_micros: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeMinute {
    /// UTC minute start.
    pub minute_micros: i64,
    pub block_count: i64,
    pub tx_count: i64,
    pub gas_used: i64,
    pub value_wei: i128,
    pub avg_gas_price_wei: Option<f64>,
    pub active_addresses: i64,
    pub last_block: i64,
}

/// One generated day, collected (fine at test scales, not at mainnet scale).
pub fn generated_day(
    params: &GenParams,
    day: NaiveDate,
    with_reorgs: bool,
) -> (Vec<Block>, Vec<Tx>) {
    let mut blocks = Vec::new();
    let mut txs = Vec::new();
    for g in day_blocks(params, day, with_reorgs) {
        blocks.push(g.block);
        txs.extend(g.txs);
    }
    (blocks, txs)
}

/// Relative tolerance: engines sum floats in different orders.
pub fn approx_eq(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn failed(t: &Tx) -> bool {
    t.receipt_status == Some(0)
}

/// A failed transaction moves no value.
fn moved(t: &Tx) -> i128 {
    if failed(t) {
        0
    } else {
        t.value
    }
}

fn fee(t: &Tx) -> i128 {
    t.receipt_gas_used as i128 * t.gas_price as i128
}

/// The canonical blocks of `day`, and the transactions belonging to them,
/// each paired with its block (whose timestamp decides the day).
fn day_rows<'a>(
    day: NaiveDate,
    blocks: &'a [Block],
    txs: &'a [Tx],
) -> (Vec<&'a Block>, Vec<(&'a Tx, &'a Block)>) {
    let canon: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.canonical && day::of_micros(b.timestamp_micros) == day)
        .collect();
    let by_hash: HashMap<&str, &Block> = canon.iter().map(|b| (b.hash.as_str(), *b)).collect();
    let txs = txs
        .iter()
        .filter_map(|t| by_hash.get(t.block_hash.as_str()).map(|b| (t, *b)))
        .collect();
    (canon, txs)
}

pub fn block_daily_metrics(
    day: NaiveDate,
    blocks: &[Block],
    txs: &[Tx],
) -> Option<BlockDailyMetrics> {
    let (blocks, txs) = day_rows(day, blocks, txs);
    let n = blocks.len() as i64;
    let first_ts = blocks.iter().map(|b| b.timestamp_micros).min()?;
    let last_ts = blocks.iter().map(|b| b.timestamp_micros).max()?;
    let base_fees: Vec<f64> = blocks
        .iter()
        .filter_map(|b| b.base_fee_per_gas)
        .map(|f| f as f64)
        .collect();
    Some(BlockDailyMetrics {
        day,
        block_count: n,
        first_block: blocks.iter().map(|b| b.number).min()?,
        last_block: blocks.iter().map(|b| b.number).max()?,
        tx_count: txs.len() as i64,
        failed_tx_count: txs.iter().filter(|(t, _)| failed(t)).count() as i64,
        contract_creation_count: txs.iter().filter(|(t, _)| t.to_address.is_none()).count() as i64,
        total_gas_used: blocks.iter().map(|b| b.gas_used).sum(),
        avg_gas_used_ratio: blocks
            .iter()
            .map(|b| b.gas_used as f64 / b.gas_limit as f64)
            .sum::<f64>()
            / n as f64,
        avg_base_fee_per_gas: (!base_fees.is_empty())
            .then(|| base_fees.iter().sum::<f64>() / base_fees.len() as f64),
        total_value_wei: txs.iter().map(|(t, _)| moved(t)).sum(),
        total_fees_wei: txs.iter().map(|(t, _)| fee(t)).sum(),
        unique_senders: txs
            .iter()
            .map(|(t, _)| &t.from_address)
            .collect::<HashSet<_>>()
            .len() as i64,
        unique_receivers: txs
            .iter()
            .filter_map(|(t, _)| t.to_address.as_ref())
            .collect::<HashSet<_>>()
            .len() as i64,
        avg_block_time_s: (n >= 2).then(|| (last_ts - first_ts) as f64 / 1e6 / (n - 1) as f64),
    })
}

pub fn user_activity(day: NaiveDate, blocks: &[Block], txs: &[Tx]) -> Vec<UserActivity> {
    let (_, txs) = day_rows(day, blocks, txs);
    let mut rows: BTreeMap<&str, UserActivity> = BTreeMap::new();
    fn touch<'r, 'k>(
        rows: &'r mut BTreeMap<&'k str, UserActivity>,
        day: NaiveDate,
        address: &'k str,
        ts: i64,
    ) -> &'r mut UserActivity {
        let row = rows.entry(address).or_insert_with(|| UserActivity {
            day,
            address: address.to_string(),
            tx_sent: 0,
            tx_received: 0,
            value_sent_wei: 0,
            value_received_wei: 0,
            fees_paid_wei: 0,
            failed_tx_sent: 0,
            first_seen_at_micros: ts,
            last_seen_at_micros: ts,
        });
        row.first_seen_at_micros = row.first_seen_at_micros.min(ts);
        row.last_seen_at_micros = row.last_seen_at_micros.max(ts);
        row
    }
    for (t, b) in &txs {
        let sender = touch(&mut rows, day, &t.from_address, b.timestamp_micros);
        sender.tx_sent += 1;
        sender.value_sent_wei += moved(t);
        sender.fees_paid_wei += fee(t);
        sender.failed_tx_sent += i64::from(failed(t));
        if let Some(to) = &t.to_address {
            let receiver = touch(&mut rows, day, to, b.timestamp_micros);
            receiver.tx_received += 1;
            receiver.value_received_wei += moved(t);
        }
    }
    rows.into_values().collect()
}

pub fn realtime_minutes(day: NaiveDate, blocks: &[Block], txs: &[Tx]) -> Vec<RealtimeMinute> {
    const MINUTE: i64 = 60_000_000;
    let (blocks, txs) = day_rows(day, blocks, txs);
    let mut minutes: BTreeMap<i64, (RealtimeMinute, f64, HashSet<&str>)> = BTreeMap::new();
    for b in &blocks {
        let minute = b.timestamp_micros.div_euclid(MINUTE) * MINUTE;
        let (row, _, _) = minutes.entry(minute).or_insert_with(|| {
            let row = RealtimeMinute {
                minute_micros: minute,
                block_count: 0,
                tx_count: 0,
                gas_used: 0,
                value_wei: 0,
                avg_gas_price_wei: None,
                active_addresses: 0,
                last_block: b.number,
            };
            (row, 0.0, HashSet::new())
        });
        row.block_count += 1;
        row.gas_used += b.gas_used;
        row.last_block = row.last_block.max(b.number);
    }
    for (t, b) in &txs {
        let minute = b.timestamp_micros.div_euclid(MINUTE) * MINUTE;
        let Some((row, price_sum, addresses)) = minutes.get_mut(&minute) else {
            continue;
        };
        row.tx_count += 1;
        row.value_wei += moved(t);
        *price_sum += t.gas_price as f64;
        addresses.insert(t.from_address.as_str());
        addresses.extend(t.to_address.as_deref());
    }
    minutes
        .into_values()
        .map(|(mut row, price_sum, addresses)| {
            row.avg_gas_price_wei = (row.tx_count > 0).then(|| price_sum / row.tx_count as f64);
            row.active_addresses = addresses.len() as i64;
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = 1_709_251_200_000_000; // 2024-03-01T00:00:00Z
    const S: i64 = 1_000_000;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, 1).expect("valid date")
    }

    fn block(
        number: i64,
        hash: &str,
        ts: i64,
        gas_used: i64,
        base_fee: Option<i64>,
        canonical: bool,
    ) -> Block {
        Block {
            number,
            hash: hash.into(),
            parent_hash: String::new(),
            timestamp_micros: ts,
            miner: "0xm".into(),
            size: 1,
            gas_limit: 100_000,
            gas_used,
            base_fee_per_gas: base_fee,
            transaction_count: 0,
            canonical,
        }
    }

    fn tx(
        block_hash: &str,
        from: &str,
        to: Option<&str>,
        value: i128,
        used: i64,
        price: i64,
        status: i64,
    ) -> Tx {
        Tx {
            hash: format!("{block_hash}-{from}-{value}"),
            block_number: 0,
            block_hash: block_hash.into(),
            block_timestamp_micros: 0,
            transaction_index: 0,
            from_address: from.into(),
            to_address: to.map(Into::into),
            value,
            gas: used,
            gas_price: price,
            receipt_gas_used: used,
            receipt_status: Some(status),
            transaction_type: Some(2),
        }
    }

    const WHALE: i128 = 10_000_000_000_000_000_000_000_000; // 10^25 > u64::MAX

    /// Two canonical blocks a minute apart, an orphan that must be ignored,
    /// and a block of the previous day.
    fn input() -> (Vec<Block>, Vec<Tx>) {
        let blocks = vec![
            block(99, "b0", D - 5 * S, 1, Some(1), true),
            block(100, "b1", D + 10 * S, 50_000, Some(10), true),
            block(101, "o2", D + 22 * S, 90_000, Some(99), false),
            block(101, "b2", D + 70 * S, 30_000, None, true),
        ];
        let txs = vec![
            tx("b0", "0xa", Some("0xb"), 5, 1, 1, 1),
            tx("b1", "0xa", Some("0xb"), WHALE, 1, 10, 1),
            tx("b1", "0xa", None, 0, 5, 10, 1),
            tx("o2", "0xd", Some("0xe"), 99, 9, 99, 1),
            tx("b2", "0xb", Some("0xb"), 7, 2, 20, 1),
            tx("b2", "0xc", Some("0xa"), 500, 3, 20, 0),
        ];
        (blocks, txs)
    }

    #[test]
    fn daily_metrics_by_hand() {
        let (blocks, txs) = input();
        let m = block_daily_metrics(day(), &blocks, &txs).expect("a day with blocks");
        let expected = BlockDailyMetrics {
            day: day(),
            block_count: 2,
            first_block: 100,
            last_block: 101,
            tx_count: 4,
            failed_tx_count: 1,
            contract_creation_count: 1,
            total_gas_used: 80_000,
            avg_gas_used_ratio: m.avg_gas_used_ratio,
            avg_base_fee_per_gas: Some(10.0),
            total_value_wei: WHALE + 7,
            total_fees_wei: 10 + 50 + 40 + 60,
            unique_senders: 3,
            unique_receivers: 2,
            avg_block_time_s: Some(60.0),
        };
        assert_eq!(m, expected);
        assert!(approx_eq(m.avg_gas_used_ratio, 0.4));
        let next = day().succ_opt().expect("valid date");
        assert_eq!(block_daily_metrics(next, &blocks, &txs), None);
    }

    #[test]
    fn user_activity_by_hand() {
        let (blocks, txs) = input();
        let row = |address: &str, sent, received, vs, vr, fees, failed, first, last| UserActivity {
            day: day(),
            address: address.into(),
            tx_sent: sent,
            tx_received: received,
            value_sent_wei: vs,
            value_received_wei: vr,
            fees_paid_wei: fees,
            failed_tx_sent: failed,
            first_seen_at_micros: D + first * S,
            last_seen_at_micros: D + last * S,
        };
        assert_eq!(
            user_activity(day(), &blocks, &txs),
            vec![
                row("0xa", 2, 1, WHALE, 0, 60, 0, 10, 70),
                row("0xb", 1, 2, 7, WHALE + 7, 40, 0, 10, 70),
                row("0xc", 1, 0, 0, 0, 60, 1, 70, 70),
            ]
        );
    }

    #[test]
    fn realtime_by_hand() {
        let (blocks, txs) = input();
        let minute = |m: i64, gas_used, value_wei, price: f64, active, last_block| RealtimeMinute {
            minute_micros: D + m * 60 * S,
            block_count: 1,
            tx_count: 2,
            gas_used,
            value_wei,
            avg_gas_price_wei: Some(price),
            active_addresses: active,
            last_block,
        };
        assert_eq!(
            realtime_minutes(day(), &blocks, &txs),
            vec![
                minute(0, 50_000, WHALE, 10.0, 2, 100),
                minute(1, 30_000, 7, 20.0, 3, 101)
            ]
        );
    }

    #[test]
    fn reorgs_do_not_change_generated_metrics() {
        let params = GenParams {
            seed: 9,
            scale: 0.01,
            reorg_rate: 0.3,
            ..Default::default()
        };
        let d = day();
        let (clean_b, clean_t) = generated_day(&params, d, false);
        let (forked_b, forked_t) = generated_day(&params, d, true);
        assert!(forked_b.len() > clean_b.len());
        let m = block_daily_metrics(d, &forked_b, &forked_t).expect("a generated day");
        assert_eq!(
            Some(&m),
            block_daily_metrics(d, &clean_b, &clean_t).as_ref()
        );
        assert_eq!(m.tx_count, clean_t.len() as i64);
        assert_eq!(
            user_activity(d, &forked_b, &forked_t),
            user_activity(d, &clean_b, &clean_t)
        );
        assert_eq!(
            realtime_minutes(d, &forked_b, &forked_t),
            realtime_minutes(d, &clean_b, &clean_t)
        );
    }
}
