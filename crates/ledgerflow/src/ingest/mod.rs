//! Partner ingestion: `.tar.gz` archives (and plain `.csv`, `.csv.gz`,
//! `.ndjson`, `.json.gz` files) of per-table files named
//! `{table}_{date}_{batch_id}.ext` into the batch layer at
//! `<batch root>/<table>/date=D/`.
//!
//! One run: lock the batch root; roll back archives a dead run left
//! half-committed; decide per input by the manifest (new, unchanged,
//! changed); stream each archive once on one thread ([`archive`]) while one
//! worker thread per table parses and writes Parquet under temporary names
//! ([`merge`]); drop everything of rejected archives and failed tables;
//! commit each (table, day) partition, marker last ([`commit`]); record the
//! archives; check the footers against the counts ([`summary`]).

pub mod ahead;
pub mod archive;
pub mod commit;
mod decide;
mod extract;
mod finish;
pub mod inflight;
pub mod manifest;
pub mod merge;
pub mod naming;
pub mod quarantine;
pub mod reader;
pub mod readiness;
pub mod registry;
pub mod remote;
pub mod row_checks;
pub mod steps;
pub mod summary;
pub mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};

use chrono::{NaiveDate, Utc};

use crate::catalog::batch::BatchLayer;
use crate::catalog::lock::StoreLock;
use crate::catalog::meta::MetaDir;
use crate::config::{ChangedArchivePolicy, Config};
use crate::error::{Error, Result};
use archive::{ExtractStats, Input};
use decide::*;
use extract::*;
use finish::*;
use manifest::{ArchiveRecord, ArchiveState, BatchRef, Manifest, PartitionRef};
use merge::{EntryError, EntryJob, EntryOutcome, MergeSettings, TableWorker};
use registry::{Registry, TableSchema};
use summary::{ArchiveAction, ArchiveReport, BatchReport, IngestReport, TableReport, TableState};

/// The extraction outcome of an archive of another day than `--date`.
const OTHER_DAY: &str = "of another day than --date";

/// The Parquet codec of `ingest.compression`.
fn compression(c: crate::config::IngestCompression) -> parquet::basic::Compression {
    use crate::config::IngestCompression as C;
    use parquet::basic::Compression;
    match c {
        C::Zstd => crate::catalog::store::zstd(),
        C::Lz4 => Compression::LZ4_RAW,
        C::Snappy => Compression::SNAPPY,
        C::None => Compression::UNCOMPRESSED,
    }
}

/// The ingest lock of a batch layer (see [`StoreLock`]).
const LOCK: &str = "_ingest/lock";

/// Bytes handed from the extractor to a table worker at a time.
const CHUNK: usize = 1 << 20;
/// Chunks in flight to all table workers together ([`inflight`]): bounds
/// memory whatever the archive size and table count. 4 per table had the
/// extractor wait whenever a worker paused for a row-group flush.
const CHUNKS_IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// The run's day: every table file must be of this day.
    pub date: Option<NaiveDate>,
    /// Decide and report per input; read and write nothing else.
    pub dry_run: bool,
    /// Also re-run the failed tables of archives recorded as partial.
    pub retry_failed: bool,
    /// With `--date` and `[ingest.expected]`: how long to wait for the
    /// day's sources (`None`: check once).
    pub wait: Option<std::time::Duration>,
}

/// Rolls back archives a dead run left in `committing`.
async fn recover(batch: &BatchLayer, manifest: &Manifest) -> Result<()> {
    for rec in manifest.all()? {
        if rec.state == ArchiveState::Committing {
            tracing::warn!(archive = %rec.name, "rolling back an archive a dead ingest left half-committed");
            let parts: Vec<(String, NaiveDate)> = rec
                .partitions
                .iter()
                .map(|p| (p.table.clone(), p.day))
                .collect();
            commit::roll_back(batch, &manifest::key(&rec.name), &parts).await?;
            manifest.remove(&rec.name)?;
        }
    }
    Ok(())
}

/// Runs one ingest. Library errors are for the run as a whole (lock,
/// I/O on the batch root); per-input and per-table problems are in the
/// report.
pub async fn ingest(
    config: &Config,
    paths: &[PathBuf],
    opts: &IngestOptions,
) -> Result<IngestReport> {
    let started_at = Utc::now();
    // `[ingest.checks]` is ingest's to validate (config imports no other
    // part of the library): before anything is read or written.
    let row_checks =
        row_checks::parse(&config.ingest.checks).map_err(|m| config.invalid("ingest.checks", m))?;
    let batch = BatchLayer::open(config)?;
    let docs = MetaDir::open(&config.batch_location()?, &config.batch.s3)?;
    let manifest = Manifest::new(docs.clone());
    let registry = Registry::new(docs.clone());
    let limits = archive::Limits::from_config(&config.ingest);
    let mut fetcher = remote::Fetcher::new(&config.batch.s3, &config.spill_dir());

    // Readiness first, without the lock: waiting must not block other days.
    let mut readiness = None;
    if let (Some(day), false) = (opts.date, config.ingest.expected.is_empty()) {
        let wait = if opts.dry_run { None } else { opts.wait };
        let deadline = std::time::Instant::now() + wait.unwrap_or_default();
        let poll = std::time::Duration::from_secs(config.ingest.poll_seconds);
        let mut cache = readiness::ListingCache::default();
        loop {
            let inputs = fetcher.discover(paths).await?;
            let r = readiness::check(
                &config.ingest.expected,
                day,
                &inputs,
                &manifest,
                limits,
                &mut cache,
            )?;
            let now = std::time::Instant::now();
            if r.ready() || now >= deadline {
                readiness = Some(r);
                break;
            }
            tracing::info!(day = %day, missing = ?r.missing, "waiting for the day's sources");
            tokio::time::sleep(poll.min(deadline - now)).await;
        }
    }
    if readiness.as_ref().is_some_and(|r| !r.ready()) {
        return Ok(IngestReport {
            started_at,
            finished_at: Utc::now(),
            date: opts.date,
            dry_run: opts.dry_run,
            archives: Vec::new(),
            tables: Vec::new(),
            reconciled: true,
            readiness,
            skipped: true,
        });
    }

    let lock = if opts.dry_run {
        None
    } else {
        Some(StoreLock::acquire(
            &docs,
            LOCK,
            config.ledger.lease,
            "ingest (this batch layer's)",
        )?)
    };
    if !opts.dry_run {
        recover(&batch, &manifest).await?;
    }

    let mut inputs = fetcher.discover(paths).await?;
    if opts.retry_failed {
        // By name: a record's path is canonical, an input's as given.
        let known: HashSet<String> = inputs.iter().map(|i| i.name.clone()).collect();
        let mut again = Vec::new();
        for rec in manifest.all()? {
            let day_matches = opts.date.is_none_or(|d| {
                rec.partitions.iter().any(|p| p.day == d) || rec.partitions.is_empty()
            });
            if rec.state == ArchiveState::Partial && day_matches && !known.contains(&rec.name) {
                again.push(rec.path);
            }
        }
        inputs.extend(fetcher.discover(&again).await?);
    }

    let mut reports = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut sizes: HashMap<u64, usize> = HashMap::new();
    for input in &inputs {
        *sizes.entry(input.size).or_default() += 1;
    }
    // sha256 of the inputs this run loads, to load the same bytes once.
    let mut loading: HashMap<String, String> = HashMap::new();
    // Inputs of this run by name: one name is one archive key, so a second
    // input of a name (from another directory) is refused.
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    // (report index, the input of this run it has the same bytes as).
    let mut copies: Vec<(usize, String)> = Vec::new();
    for input in inputs {
        let (sha, decision) = if let Some(first) = names.get(&input.name) {
            let reason = format!(
                "an input of this name is already in this run ({}); archives are known by name",
                first.display()
            );
            (String::new(), Decision::Reject(reason))
        } else {
            names.insert(input.name.clone(), input.shown_path());
            decide_input(&input, &sizes, &loading, &manifest, config, opts)?
        };
        if !sha.is_empty() && matches!(decision, Decision::Load { .. }) {
            loading.insert(sha.clone(), input.name.clone());
        }
        let hash = sha.is_empty();
        let mut report = ArchiveReport {
            name: input.name.clone(),
            path: input.shown_path(),
            sha256: sha,
            action: ArchiveAction::Unchanged,
            replaced: false,
            reason: None,
            stats: ExtractStats::default(),
        };
        match decision {
            Decision::Unchanged => {}
            Decision::SameContentAs(name) => {
                if loading.get(&report.sha256) == Some(&name) {
                    report.reason = Some(format!("same content (sha256) as {name}, in this run"));
                    copies.push((reports.len(), name));
                } else {
                    report.reason =
                        Some(format!("same content (sha256) as {name}, already loaded"));
                }
            }
            Decision::Reject(reason) => {
                report.action = ArchiveAction::Rejected;
                report.reason = Some(reason);
            }
            Decision::Load {
                only,
                previous,
                replaced,
            } => {
                report.action = ArchiveAction::WouldLoad;
                report.replaced = replaced;
                jobs.push(Job {
                    index: reports.len(),
                    hash,
                    input,
                    only,
                    previous,
                });
            }
        }
        reports.push(report);
    }
    if opts.dry_run || jobs.is_empty() {
        return Ok(IngestReport {
            started_at,
            finished_at: Utc::now(),
            date: opts.date,
            dry_run: opts.dry_run,
            archives: reports,
            tables: Vec::new(),
            reconciled: true,
            readiness,
            skipped: false,
        });
    }

    // Quarantine files are staged where the commit can move them from:
    // in place on a local disk, else in a scratch dir it uploads from.
    let (_staging, quarantine_root) = match batch.files.local_root() {
        Some(root) => (None, root.to_path_buf()),
        None => {
            let dir = crate::engine::scratch_dir(&config.spill_dir(), "ingest-quarantine-")?;
            let path = dir.path().to_path_buf();
            (Some(dir), path)
        }
    };
    let settings = MergeSettings {
        store: batch.files.clone(),
        quarantine_root: quarantine_root.clone(),
        handle: tokio::runtime::Handle::current(),
        rows_per_file: config.batch.rows_per_file,
        batch_size: config.engine.batch_size,
        infer_rows: config.ingest.infer_rows,
        max_line: config.ingest.max_line.as_u64(),
        compression: compression(config.ingest.compression),
        row_checks: std::sync::Arc::new(row_checks),
    };
    let cfg = config.clone();
    let date = opts.date;
    let reg = registry.clone();
    let jobs_for_thread = jobs.clone();
    let extracted = tokio::task::spawn_blocking(move || {
        extract_all(&jobs_for_thread, limits, date, &cfg, &reg, settings)
    })
    .await
    .map_err(|e| Error::data("ingest extraction thread", e))??;

    if let Some(lock) = &lock {
        lock.ensure_held()?;
    }
    let mut report = finish(
        config, &batch, &docs, &manifest, &registry, jobs, reports, extracted, started_at, opts,
    )
    .await?;
    for (i, original) in copies {
        let loaded = report.archives.iter().any(|a| {
            a.name == original && matches!(a.action, ArchiveAction::Loaded | ArchiveAction::Partial)
        });
        if !loaded {
            report.archives[i].reason = Some(format!(
                "same content (sha256) as {original}, in this run, which did not load: not loaded either (a later run tries it again)"
            ));
        }
    }
    report.readiness = readiness;
    Ok(report)
}

#[cfg(test)]
mod tests;
