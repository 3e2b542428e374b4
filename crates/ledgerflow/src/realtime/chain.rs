//! What the realtime loop knows of the chain: every block header of the
//! days it follows, and which of them are canonical under the reorg rule.
//! Adding blocks tells which minutes changed: the new blocks' minutes and
//! the minutes of blocks that moved on or off the canonical chain.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::NaiveDate;

use crate::catalog::reorg::{self, Header};

pub const MINUTE_MICROS: i64 = 60_000_000;

/// A block header as the loop sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockInfo {
    pub number: i64,
    pub hash: String,
    pub parent_hash: String,
    pub ts_micros: i64,
}

impl BlockInfo {
    pub fn minute(&self) -> i64 {
        minute_of(self.ts_micros)
    }

    pub fn day(&self) -> NaiveDate {
        crate::day::of_micros(self.ts_micros)
    }
}

pub fn minute_of(micros: i64) -> i64 {
    micros.div_euclid(MINUTE_MICROS) * MINUTE_MICROS
}

#[derive(Debug, Default)]
struct DayChain {
    headers: Vec<Header>,
    minute: HashMap<String, i64>,
    heights: BTreeSet<i64>,
    canonical: HashSet<String>,
}

impl DayChain {
    fn refresh(&mut self) -> BTreeSet<i64> {
        let orphans = reorg::orphans(&self.headers);
        let canonical: HashSet<String> = self
            .headers
            .iter()
            .filter(|h| !orphans.contains(&h.hash))
            .map(|h| h.hash.clone())
            .collect();
        let changed = canonical
            .symmetric_difference(&self.canonical)
            .filter_map(|h| self.minute.get(h).copied())
            .collect();
        self.canonical = canonical;
        changed
    }
}

#[derive(Debug, Default)]
pub struct ChainState {
    days: BTreeMap<NaiveDate, DayChain>,
}

/// What adding blocks changed.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    /// Minutes whose rows must be recomputed.
    pub minutes: BTreeSet<i64>,
    /// A block arrived whose parent height is missing although lower
    /// blocks of its day are known: events were skipped upstream.
    pub gap: bool,
    /// Blocks not seen before.
    pub new_blocks: usize,
}

impl ChainState {
    /// Adds blocks (duplicates are ignored) and recomputes the canonical
    /// chain of each day they touch.
    pub fn add(&mut self, blocks: impl IntoIterator<Item = BlockInfo>) -> Change {
        let mut change = Change::default();
        let mut touched_days = BTreeSet::new();
        for b in blocks {
            let day = self.days.entry(b.day()).or_default();
            if day.minute.contains_key(&b.hash) {
                continue;
            }
            let has_below = day.heights.range(..b.number - 1).next().is_some();
            if has_below && !day.heights.contains(&(b.number - 1)) {
                change.gap = true;
            }
            change.minutes.insert(b.minute());
            change.new_blocks += 1;
            touched_days.insert(b.day());
            day.minute.insert(b.hash.clone(), b.minute());
            day.heights.insert(b.number);
            let arrival = day.headers.len();
            day.headers.push(Header {
                number: b.number,
                hash: b.hash,
                parent_hash: b.parent_hash,
                arrival,
            });
        }
        for d in touched_days {
            let chain = self.days.get_mut(&d).expect("just added");
            change.minutes.extend(chain.refresh());
        }
        change
    }

    /// Whether `hash` is on the canonical chain of `day`.
    pub fn is_canonical(&self, day: NaiveDate, hash: &str) -> bool {
        self.days
            .get(&day)
            .is_some_and(|d| d.canonical.contains(hash))
    }

    /// Minutes of `day` to recompute after a restart: those of blocks at
    /// or above `from_number` and those of every orphan (a block that may
    /// have left the canonical chain while the loop was down).
    pub fn restart_minutes(&self, day: NaiveDate, from_number: i64) -> BTreeSet<i64> {
        let Some(d) = self.days.get(&day) else {
            return BTreeSet::new();
        };
        d.headers
            .iter()
            .filter(|h| h.number >= from_number || !d.canonical.contains(&h.hash))
            .map(|h| d.minute[&h.hash])
            .collect()
    }

    pub fn highest(&self) -> Option<(NaiveDate, i64)> {
        self.days
            .iter()
            .rev()
            .find_map(|(day, d)| d.heights.last().map(|&n| (*day, n)))
    }

    pub fn days(&self) -> Vec<NaiveDate> {
        self.days.keys().copied().collect()
    }

    /// Forgets days before `keep_from`.
    pub fn prune(&mut self, keep_from: NaiveDate) {
        self.days = self.days.split_off(&keep_from);
    }

    /// Forgets one day, before it is loaded again from the source.
    pub fn forget(&mut self, day: NaiveDate) {
        self.days.remove(&day);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_763_856_000_000_000; // 2025-11-23 00:00 UTC

    fn b(number: i64, hash: &str, parent: &str, secs: i64) -> BlockInfo {
        BlockInfo {
            number,
            hash: hash.into(),
            parent_hash: parent.into(),
            ts_micros: T0 + secs * 1_000_000,
        }
    }

    #[test]
    fn a_reorg_touches_the_orphaned_minute_too() {
        let mut c = ChainState::default();
        let ch = c.add([b(1, "a1", "a0", 10), b(2, "a2", "a1", 50)]);
        assert_eq!(ch.minutes, BTreeSet::from([T0]));
        assert_eq!(ch.new_blocks, 2);
        // b2 replaces a2 at height 2 (from minute 0) with b3 in minute 1.
        let ch = c.add([b(2, "b2", "a1", 62), b(3, "b3", "b2", 70)]);
        assert_eq!(ch.minutes, BTreeSet::from([T0, T0 + MINUTE_MICROS]));
        let day = b(1, "", "", 0).day();
        assert!(!c.is_canonical(day, "a2"));
        assert!(c.is_canonical(day, "b3"));
        // Duplicates change nothing.
        assert_eq!(c.add([b(3, "b3", "b2", 70)]), Change::default());
        assert_eq!(
            c.restart_minutes(day, 3),
            BTreeSet::from([T0, T0 + MINUTE_MICROS])
        );
    }

    #[test]
    fn a_missing_height_is_a_gap() {
        let mut c = ChainState::default();
        assert!(!c.add([b(5, "x5", "x4", 1)]).gap);
        assert!(!c.add([b(6, "x6", "x5", 2)]).gap);
        assert!(c.add([b(8, "x8", "x7", 3)]).gap);
    }
}
