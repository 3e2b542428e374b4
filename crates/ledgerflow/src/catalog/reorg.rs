//! The reorg rule: the speed layer may hold several blocks at one height;
//! the canonical chain is the one reached by walking `parent_hash` back from
//! the highest block (latest arrival wins a tie). Everything off it is
//! orphaned, and so are its transactions.

use std::collections::{HashMap, HashSet};

/// A block's identity as it arrived; `arrival` orders arrivals (file order,
/// then row order).
#[derive(Debug, Clone)]
pub struct Header {
    pub number: i64,
    pub hash: String,
    pub parent_hash: String,
    pub arrival: usize,
}

/// Hashes of the blocks that are not on the canonical chain.
///
/// If the walk meets a block whose parent is absent (a gap in the data, or
/// the start of the day), it resumes from the best block below it, so a
/// missing block never turns the rest of the day into "orphans".
pub fn orphans(headers: &[Header]) -> HashSet<String> {
    let by_hash: HashMap<&str, &Header> = headers.iter().map(|h| (h.hash.as_str(), h)).collect();
    // Highest first; among equals, the latest arrival first.
    let mut order: Vec<&Header> = headers.iter().collect();
    order.sort_by(|a, b| b.number.cmp(&a.number).then(b.arrival.cmp(&a.arrival)));

    let mut canonical: HashSet<&str> = HashSet::new();
    let mut next_start = 0usize;
    while next_start < order.len() {
        let mut cur = order[next_start];
        loop {
            if !canonical.insert(cur.hash.as_str()) {
                break;
            }
            match by_hash.get(cur.parent_hash.as_str()) {
                Some(parent) if parent.number < cur.number => cur = parent,
                _ => break,
            }
        }
        // Resume below the lowest canonical block reached so far.
        let floor = cur.number;
        next_start = order
            .iter()
            .position(|h| h.number < floor)
            .unwrap_or(order.len());
    }
    headers
        .iter()
        .filter(|h| !canonical.contains(h.hash.as_str()))
        .map(|h| h.hash.clone())
        .collect()
}

/// The reorg rule applied to one day as part of the chain around it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayChain {
    /// The day's blocks off the canonical chain, sorted.
    pub orphans: Vec<String>,
    /// The day's canonical blocks, sorted.
    pub canonical: Vec<String>,
    /// Blocks known above the day's highest canonical block (its
    /// confirmations); 0 when nothing follows it yet.
    pub confirmations: i64,
}

/// Judges `day`'s headers as part of one chain with the headers of the
/// days before and after it (their arrivals count as earlier and later).
/// The chain is global: a day's last block can lose to a block stamped
/// the next day, and a block stamped today can lose to one of yesterday's
/// at the same height, so a day judged alone could count an orphan.
pub fn judge_day(before: &[Header], day: &[Header], after: &[Header]) -> DayChain {
    let mut all: Vec<Header> = Vec::with_capacity(before.len() + day.len() + after.len());
    for h in before.iter().chain(day).chain(after) {
        all.push(Header {
            arrival: all.len(),
            ..h.clone()
        });
    }
    let orphan_set = orphans(&all);
    let mut out = DayChain::default();
    let mut highest_canonical = None;
    for h in day {
        if orphan_set.contains(&h.hash) {
            out.orphans.push(h.hash.clone());
        } else {
            out.canonical.push(h.hash.clone());
            highest_canonical = highest_canonical.max(Some(h.number));
        }
    }
    for list in [&mut out.orphans, &mut out.canonical] {
        list.sort();
        list.dedup();
    }
    if let Some(top) = highest_canonical {
        let tip = all
            .iter()
            .filter(|h| !orphan_set.contains(&h.hash))
            .map(|h| h.number)
            .max()
            .unwrap_or(top);
        out.confirmations = tip - top;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(number: i64, hash: &str, parent: &str, arrival: usize) -> Header {
        Header {
            number,
            hash: hash.into(),
            parent_hash: parent.into(),
            arrival,
        }
    }

    #[test]
    fn fork_blocks_are_orphaned() {
        // a1 <- b2 (orphan) ; a1 <- c2 <- c3
        let hs = vec![
            h(1, "a1", "a0", 0),
            h(2, "b2", "a1", 1),
            h(2, "c2", "a1", 2),
            h(3, "c3", "c2", 3),
        ];
        assert_eq!(orphans(&hs), HashSet::from(["b2".to_string()]));
    }

    #[test]
    fn deep_fork_and_tie_at_the_top() {
        // orphan chain b2 <- b3, canonical c2 <- c3; both at height 3: the
        // later arrival (c3) wins.
        let hs = vec![
            h(1, "a1", "a0", 0),
            h(2, "b2", "a1", 1),
            h(3, "b3", "b2", 2),
            h(2, "c2", "a1", 3),
            h(3, "c3", "c2", 4),
        ];
        assert_eq!(
            orphans(&hs),
            HashSet::from(["b2".to_string(), "b3".to_string()])
        );
    }

    #[test]
    fn the_last_block_of_a_day_loses_to_the_next_days_chain() {
        // Day D ends with c9 (canonical) and x10, a fork stamped D; day D+1
        // continues from c10 (parent c9). Alone, D would count x10.
        let day = vec![
            h(8, "c8", "c7", 0),
            h(9, "c9", "c8", 1),
            h(10, "x10", "c9", 2),
        ];
        assert!(judge_day(&[], &day, &[]).orphans.is_empty());
        let next = vec![h(10, "c10", "c9", 0), h(11, "c11", "c10", 1)];
        let judged = judge_day(&[], &day, &next);
        assert_eq!(judged.orphans, vec!["x10".to_string()]);
        assert_eq!(judged.canonical, vec!["c8".to_string(), "c9".to_string()]);
        assert_eq!(judged.confirmations, 2);
    }

    #[test]
    fn a_fork_stamped_today_loses_to_yesterdays_chain() {
        // x4 <- x5 forked from c3 and stamped D; c4, c5 were stamped D-1 and
        // D continues from c5. Alone, D would take x4 for canonical after the
        // gap below c6.
        let before = vec![
            h(3, "c3", "c2", 0),
            h(4, "c4", "c3", 1),
            h(5, "c5", "c4", 2),
        ];
        let day = vec![
            h(4, "x4", "c3", 0),
            h(5, "x5", "x4", 1),
            h(6, "c6", "c5", 2),
            h(7, "c7", "c6", 3),
        ];
        let judged = judge_day(&before, &day, &[]);
        assert_eq!(judged.orphans, vec!["x4".to_string(), "x5".to_string()]);
        assert_eq!(judged.canonical, vec!["c6".to_string(), "c7".to_string()]);
        assert_eq!(judged.confirmations, 0);
    }

    #[test]
    fn a_gap_does_not_orphan_earlier_blocks() {
        let hs = vec![
            h(1, "a1", "a0", 0),
            h(2, "a2", "a1", 1),
            h(4, "a4", "a3", 2),
        ];
        assert!(orphans(&hs).is_empty());
    }
}
