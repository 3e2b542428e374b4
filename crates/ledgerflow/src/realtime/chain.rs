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

/// What the loop knows of one followed day.
#[derive(Debug, Default)]
struct DayBlocks {
    heights: BTreeSet<i64>,
    hashes: HashSet<String>,
}

/// One chain across the followed days: a day's last block can lose to a
/// block stamped the next day, so canonical is decided over all of them.
#[derive(Debug, Default)]
pub struct ChainState {
    days: BTreeMap<NaiveDate, DayBlocks>,
    headers: Vec<Header>,
    /// Where every known block is.
    at: HashMap<String, Known>,
    canonical: HashSet<String>,
}

#[derive(Debug, Clone, Copy)]
struct Known {
    /// Kept beside the timestamp: `is_canonical` asks for it per row.
    day: NaiveDate,
    number: i64,
    ts_micros: i64,
}

impl Known {
    fn minute(&self) -> i64 {
        minute_of(self.ts_micros)
    }
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
    /// Heights of the blocks that left the canonical chain (a reorg), lowest
    /// first; blocks that were never canonical are not counted.
    pub reorged: Vec<i64>,
}

impl ChainState {
    /// Adds blocks (duplicates are ignored) and recomputes the canonical
    /// chain.
    pub fn add(&mut self, blocks: impl IntoIterator<Item = BlockInfo>) -> Change {
        let mut change = Change::default();
        for b in blocks {
            if self.at.contains_key(&b.hash) {
                continue;
            }
            let day = self.days.entry(b.day()).or_default();
            let has_below = day.heights.range(..b.number - 1).next().is_some();
            if has_below && !day.heights.contains(&(b.number - 1)) {
                change.gap = true;
            }
            change.minutes.insert(b.minute());
            change.new_blocks += 1;
            day.heights.insert(b.number);
            day.hashes.insert(b.hash.clone());
            self.at.insert(
                b.hash.clone(),
                Known {
                    day: b.day(),
                    number: b.number,
                    ts_micros: b.ts_micros,
                },
            );
            let arrival = self.headers.len();
            self.headers.push(Header {
                number: b.number,
                hash: b.hash,
                parent_hash: b.parent_hash,
                arrival,
            });
        }
        if change.new_blocks > 0 {
            let (minutes, reorged) = self.refresh();
            change.minutes.extend(minutes);
            change.reorged = reorged;
        }
        change
    }

    /// Recomputes the canonical set; returns the minutes of blocks that
    /// moved on or off it and the heights of those that moved off.
    fn refresh(&mut self) -> (BTreeSet<i64>, Vec<i64>) {
        let orphans = reorg::orphans(&self.headers);
        let canonical: HashSet<String> = self
            .headers
            .iter()
            .filter(|h| !orphans.contains(&h.hash))
            .map(|h| h.hash.clone())
            .collect();
        let changed = canonical
            .symmetric_difference(&self.canonical)
            .filter_map(|h| self.at.get(h).map(Known::minute))
            .collect();
        let mut reorged: Vec<i64> = self
            .canonical
            .difference(&canonical)
            .filter_map(|h| self.at.get(h).map(|k| k.number))
            .collect();
        reorged.sort_unstable();
        self.canonical = canonical;
        (changed, reorged)
    }

    /// Whether `hash` is a block of `day` on the canonical chain.
    pub fn is_canonical(&self, day: NaiveDate, hash: &str) -> bool {
        self.canonical.contains(hash) && self.at.get(hash).is_some_and(|k| k.day == day)
    }

    /// Minutes of `day` to recompute after a restart: those of blocks at
    /// or above `from_number` and those of every orphan (a block that may
    /// have left the canonical chain while the loop was down).
    pub fn restart_minutes(&self, day: NaiveDate, from_number: i64) -> BTreeSet<i64> {
        self.headers
            .iter()
            .filter(|h| self.at[&h.hash].day == day)
            .filter(|h| h.number >= from_number || !self.canonical.contains(&h.hash))
            .map(|h| self.at[&h.hash].minute())
            .collect()
    }

    pub fn highest(&self) -> Option<(NaiveDate, i64)> {
        self.days
            .iter()
            .rev()
            .find_map(|(day, d)| d.heights.last().map(|&n| (*day, n)))
    }

    /// The timestamp (microseconds) of the highest canonical block.
    pub fn highest_canonical_ts(&self) -> Option<i64> {
        self.canonical
            .iter()
            .filter_map(|h| self.at.get(h))
            .max_by_key(|k| k.number)
            .map(|k| k.ts_micros)
    }

    pub fn days(&self) -> Vec<NaiveDate> {
        self.days.keys().copied().collect()
    }

    /// Forgets days before `keep_from`.
    pub fn prune(&mut self, keep_from: NaiveDate) {
        let gone: Vec<NaiveDate> = self.days.range(..keep_from).map(|(d, _)| *d).collect();
        for day in gone {
            self.forget(day);
        }
    }

    /// Forgets one day, before it is loaded again from the source. The
    /// canonical set is left as it is until the next `add`, which judges
    /// the reloaded day against the same chain.
    pub fn forget(&mut self, day: NaiveDate) {
        let Some(gone) = self.days.remove(&day) else {
            return;
        };
        self.headers.retain(|h| !gone.hashes.contains(&h.hash));
        for (arrival, h) in self.headers.iter_mut().enumerate() {
            h.arrival = arrival;
        }
        for hash in &gone.hashes {
            self.at.remove(hash);
            self.canonical.remove(hash);
        }
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
        assert_eq!(ch.reorged, [2], "a2 left the chain");
        assert_eq!(c.highest_canonical_ts(), Some(T0 + 70_000_000));
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
    fn a_fork_at_the_end_of_a_day_loses_to_the_next_days_block() {
        // a2 is the last block stamped on day 0 (23:59:50), x3 a fork stamped
        // day 0 too; the next day's b3 builds on a2 and b4 on it.
        let day0 = 86_400 - 10;
        let mut c = ChainState::default();
        c.add([
            b(1, "a1", "a0", day0 - 20),
            b(2, "a2", "a1", day0 - 10),
            b(3, "x3", "a2", day0),
        ]);
        let d0 = b(1, "", "", day0).day();
        assert!(c.is_canonical(d0, "x3"));
        let ch = c.add([b(3, "b3", "a2", day0 + 20), b(4, "b4", "b3", day0 + 30)]);
        assert!(!c.is_canonical(d0, "x3"), "orphaned by the next day");
        assert_eq!(ch.reorged, [3]);
        assert!(c.is_canonical(d0, "a2"));
        let d1 = b(3, "", "", day0 + 20).day();
        assert!(c.is_canonical(d1, "b3") && !c.is_canonical(d0, "b3"));
        // The orphan's minute on day 0 is recomputed.
        assert!(ch.minutes.contains(&minute_of(T0 + day0 * 1_000_000)));
        // Forgetting and reloading day 0 judges it against day 1 again.
        c.forget(d0);
        let reload = c.add([
            b(1, "a1", "a0", day0 - 20),
            b(2, "a2", "a1", day0 - 10),
            b(3, "x3", "a2", day0),
        ]);
        assert!(!c.is_canonical(d0, "x3"));
        assert!(reload.reorged.is_empty(), "a reload is not a reorg");
    }

    #[test]
    fn a_missing_height_is_a_gap() {
        let mut c = ChainState::default();
        assert!(!c.add([b(5, "x5", "x4", 1)]).gap);
        assert!(!c.add([b(6, "x6", "x5", 2)]).gap);
        assert!(c.add([b(8, "x8", "x7", 3)]).gap);
    }
}
