//! What the realtime loop remembers of its recent past, for the web page
//! and `/metrics`: how far behind the speed layer each commit was over the
//! last hour, and the reorgs it saw. It rides in the checkpoint (the same
//! transaction as the minutes), so it survives restarts and needs no table.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Samples older than this are dropped.
pub const HISTORY_SECONDS: i64 = 3600;
/// At most one sample per this many seconds (360 over the hour): the
/// checkpoint is rewritten every pass, so it stays a few kilobytes.
const SAMPLE_EVERY_SECONDS: i64 = 10;
/// Reorgs kept (newest last).
const REORGS_KEPT: usize = 50;

/// One commit: when (unix seconds), the highest canonical block it wrote,
/// and how old that block was then (commit time minus block timestamp, in
/// milliseconds): the realtime table's freshness at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    #[serde(rename = "t")]
    pub at: i64,
    #[serde(rename = "b")]
    pub block: i64,
    #[serde(rename = "l")]
    pub lag_ms: i64,
}

/// A reorg seen while following: when, the lowest height that left the
/// canonical chain, and how many blocks did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReorgSeen {
    pub at: i64,
    pub from_block: i64,
    pub depth: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    #[serde(default)]
    pub samples: VecDeque<Sample>,
    #[serde(default)]
    pub reorgs: VecDeque<ReorgSeen>,
}

impl Journal {
    /// Records a commit at `now` (unix seconds) that brought the realtime
    /// tables to `block`, stamped `block_ts_ms` (unix milliseconds).
    pub fn commit(&mut self, now_ms: i64, block: i64, block_ts_ms: i64) {
        let at = now_ms.div_euclid(1000);
        let sample = Sample {
            at,
            block,
            lag_ms: (now_ms - block_ts_ms).max(0),
        };
        // The series keeps one sample per step; within a step the newest
        // commit replaces the step's last sample, so the series ends at the
        // latest state.
        let n = self.samples.len();
        let within_step = n > 1 && at - self.samples[n - 2].at < SAMPLE_EVERY_SECONDS;
        if within_step {
            self.samples[n - 1] = sample;
        } else {
            self.samples.push_back(sample);
        }
        while self
            .samples
            .front()
            .is_some_and(|s| s.at < at - HISTORY_SECONDS)
        {
            self.samples.pop_front();
        }
    }

    /// Records the heights that left the canonical chain in one pass.
    pub fn reorg(&mut self, now_ms: i64, heights: &[i64]) {
        let Some(&from_block) = heights.first() else {
            return;
        };
        self.reorgs.push_back(ReorgSeen {
            at: now_ms.div_euclid(1000),
            from_block,
            depth: heights.len(),
        });
        while self.reorgs.len() > REORGS_KEPT {
            self.reorgs.pop_front();
        }
    }

    /// When the realtime tables were last written (unix seconds).
    pub fn last_commit(&self) -> Option<i64> {
        self.samples.back().map(|s| s.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_thin_to_one_per_step_and_keep_one_hour() {
        let mut j = Journal::default();
        let start = 1_000_000_000_i64;
        // A commit every second for two hours.
        for i in 0..7200 {
            let now = (start + i) * 1000;
            j.commit(now, i, now - 1500);
        }
        let n = j.samples.len() as i64;
        assert!(
            (HISTORY_SECONDS / SAMPLE_EVERY_SECONDS
                ..=HISTORY_SECONDS / (SAMPLE_EVERY_SECONDS - 1) + 1)
                .contains(&n),
            "{n} samples"
        );
        let last = j.samples.back().unwrap();
        assert_eq!(last.block, 7199, "the newest commit is the last sample");
        assert_eq!(last.lag_ms, 1500);
        assert!(j.samples.front().unwrap().at >= start + 7199 - HISTORY_SECONDS);
        for pair in j.samples.iter().collect::<Vec<_>>().windows(2) {
            assert!(pair[1].at > pair[0].at);
        }
        assert_eq!(j.last_commit(), Some(start + 7199));
    }

    #[test]
    fn reorgs_are_kept_newest_last_and_bounded() {
        let mut j = Journal::default();
        j.reorg(5_000, &[]);
        assert!(j.reorgs.is_empty(), "no heights, no reorg");
        for i in 0..(REORGS_KEPT as i64 + 5) {
            j.reorg(i * 1000, &[100 + i, 101 + i]);
        }
        assert_eq!(j.reorgs.len(), REORGS_KEPT);
        let last = j.reorgs.back().unwrap();
        assert_eq!(
            (last.from_block, last.depth),
            (100 + REORGS_KEPT as i64 + 4, 2)
        );
    }

    #[test]
    fn an_old_checkpoint_without_a_journal_reads_as_empty() {
        let j: Journal = serde_json::from_str("{}").unwrap();
        assert_eq!(j, Journal::default());
    }
}
