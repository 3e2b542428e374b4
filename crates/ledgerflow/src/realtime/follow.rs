//! How the realtime loop follows a speed layer: what arrived since the last
//! look (block headers, and minutes that got transactions), the rows of
//! given minutes, and a position to store as the checkpoint. One
//! implementation per speed layer.

use std::collections::BTreeSet;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use chrono::NaiveDate;

use super::chain::BlockInfo;
use crate::error::Result;

/// What arrived since the last poll.
#[derive(Debug, Default)]
pub struct Arrivals {
    pub blocks: Vec<BlockInfo>,
    /// Minutes of transactions that arrived.
    pub tx_minutes: BTreeSet<i64>,
    /// The follower lost track (history gone): reload and recompute.
    pub resync: bool,
}

impl Arrivals {
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.tx_minutes.is_empty() && !self.resync
    }
}

/// Rows of some minutes: all blocks (canonical or not) and transactions in
/// them, possibly with rows of neighbouring minutes (filtered by the loop).
#[derive(Debug, Default)]
pub struct MinuteRows {
    pub blocks: Vec<RecordBatch>,
    pub transactions: Vec<RecordBatch>,
}

#[async_trait]
pub trait Follower: Send {
    /// The day of the newest block in the speed layer, if it has any.
    async fn latest_day(&mut self) -> Result<Option<NaiveDate>>;

    /// Every block header of `day` now in the speed layer; later polls
    /// report only what arrives after this.
    async fn load_day(&mut self, day: NaiveDate) -> Result<Vec<BlockInfo>>;

    /// Waits at most about one poll interval and returns what arrived.
    async fn poll(&mut self) -> Result<Arrivals>;

    /// The rows of `minutes` (microseconds of each minute's start).
    async fn read_minutes(&mut self, minutes: &BTreeSet<i64>) -> Result<MinuteRows>;

    /// The day the loop is on (the newest block's); followers that list
    /// by day look at it and its neighbours.
    fn set_current(&mut self, day: NaiveDate, highest_block: i64);

    /// Where it is, for the checkpoint (JSON).
    fn position(&self) -> serde_json::Value;
}

/// Contiguous runs of minutes as `[start, end)` microsecond windows.
pub fn minute_windows(minutes: &BTreeSet<i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &m in minutes {
        let end = m + super::chain::MINUTE_MICROS;
        match out.last_mut() {
            Some(last) if last.1 == m => last.1 = end,
            _ => out.push((m, end)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_merge_adjacent_minutes() {
        let m = super::super::chain::MINUTE_MICROS;
        let set = BTreeSet::from([0, m, 2 * m, 5 * m]);
        assert_eq!(minute_windows(&set), vec![(0, 3 * m), (5 * m, 6 * m)]);
    }
}
