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
    fn a_gap_does_not_orphan_earlier_blocks() {
        let hs = vec![
            h(1, "a1", "a0", 0),
            h(2, "a2", "a1", 1),
            h(4, "a4", "a3", 2),
        ];
        assert!(orphans(&hs).is_empty());
    }
}
