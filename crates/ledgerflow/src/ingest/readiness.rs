//! Readiness (the user's `wait_for_all_sources`): a day is ingested only
//! once every table in `[ingest.expected]` has its number of table files
//! (batches) for that day, counted over the inputs and the archives loaded
//! before. An archive's entries are known from the manifest when it was
//! loaded; otherwise its headers are read (one extra inflate pass, only
//! under a readiness check, cached across polls).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::NaiveDate;
use serde::Serialize;

use super::archive::{self, Input, Limits};
use super::manifest::Manifest;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// Batches found per expected table.
    pub present: BTreeMap<String, u32>,
    /// `table: n of m batches`, for every table short of its count.
    pub missing: Vec<String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.missing.is_empty()
    }
}

/// (table, day, batch id) of each table file of an input.
type Entries = Vec<(String, NaiveDate, String)>;

/// Entry listings of archives not in the manifest, by (path, size).
#[derive(Default)]
pub struct ListingCache(HashMap<(PathBuf, u64), Entries>);

fn list(input: &Input, limits: Limits) -> Entries {
    let mut out = Vec::new();
    let mut visit = |meta: archive::EntryMeta, _r: &mut dyn std::io::Read| {
        out.push((meta.file.table, meta.file.day, meta.file.batch_id));
        Ok(())
    };
    // A refused archive counts for nothing; the ingest says why.
    if archive::for_each_entry(input, limits, false, &mut visit).is_err() {
        return Vec::new();
    }
    out
}

pub fn check(
    expected: &BTreeMap<String, u32>,
    day: NaiveDate,
    inputs: &[Input],
    manifest: &Manifest,
    limits: Limits,
    cache: &mut ListingCache,
) -> crate::Result<Readiness> {
    let mut batches: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |table: &str, d: NaiveDate, batch: &str| {
        if d == day {
            batches
                .entry(table.to_string())
                .or_default()
                .insert(batch.to_string());
        }
    };
    for input in inputs {
        match manifest.get(&input.name)? {
            Some(rec) if rec.size == input.size && !rec.batches.is_empty() => {
                for b in &rec.batches {
                    add(&b.table, b.day, &b.batch_id);
                }
            }
            _ => {
                let entries = cache
                    .0
                    .entry((input.path.clone(), input.size))
                    .or_insert_with(|| list(input, limits));
                for (t, d, b) in entries.iter() {
                    add(t, *d, b);
                }
            }
        }
    }
    let mut present = BTreeMap::new();
    let mut missing = Vec::new();
    for (table, want) in expected {
        let have = batches.get(table).map_or(0, |s| s.len() as u32);
        present.insert(table.clone(), have);
        if have < *want {
            missing.push(format!("{table}: {have} of {want} batches"));
        }
    }
    Ok(Readiness { present, missing })
}
