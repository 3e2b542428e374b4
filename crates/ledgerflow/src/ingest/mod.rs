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
pub mod inflight;
pub mod manifest;
pub mod merge;
pub mod naming;
pub mod quarantine;
pub mod reader;
pub mod readiness;
pub mod registry;
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
use manifest::{ArchiveRecord, ArchiveState, BatchRef, Manifest, PartitionRef};
use merge::{EntryError, EntryJob, EntryOutcome, MergeSettings, TableWorker};
use registry::{Registry, TableSchema};
use summary::{ArchiveAction, ArchiveReport, BatchReport, IngestReport, TableReport, TableState};

/// The extraction outcome of an archive of another day than `--date`.
const OTHER_DAY: &str = "of another day than --date";

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

/// What to do with one input.
#[derive(Debug, Clone)]
enum Decision {
    Load {
        /// Only these tables (a partial archive's failed ones).
        only: Option<BTreeSet<String>>,
        /// The record of an earlier version or attempt.
        previous: Option<ArchiveRecord>,
        replaced: bool,
    },
    Unchanged,
    /// The same bytes were loaded under another name.
    SameContentAs(String),
    Reject(String),
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

/// `same_content`: the name of an archive with these bytes, loaded before
/// or being loaded in this run.
fn decide(
    input: &Input,
    sha: &str,
    previous: Option<ArchiveRecord>,
    same_content: Option<String>,
    config: &Config,
    opts: &IngestOptions,
) -> Decision {
    let Some(prev) = previous else {
        if let Some(other) = same_content.filter(|o| *o != input.name) {
            return Decision::SameContentAs(other);
        }
        return Decision::Load {
            only: None,
            previous: None,
            replaced: false,
        };
    };
    if prev.sha256 == sha && prev.size == input.size {
        return match prev.state {
            ArchiveState::Partial if opts.retry_failed => Decision::Load {
                only: Some(prev.failed_tables.iter().cloned().collect()),
                previous: Some(prev),
                replaced: false,
            },
            _ => Decision::Unchanged,
        };
    }
    match config.ingest.on_changed_archive {
        ChangedArchivePolicy::Error => Decision::Reject(format!(
            "an archive of this name was ingested with sha256 {} ({} bytes); this one has sha256 {sha} ({} bytes) (ingest.on_changed_archive = \"error\")",
            prev.sha256, prev.size, input.size
        )),
        ChangedArchivePolicy::Replace => Decision::Load {
            only: None,
            previous: Some(prev),
            replaced: true,
        },
    }
}

/// The sha256 (empty while it is left to extraction) and decision for an
/// input whose name is new to this run.
fn decide_input(
    input: &Input,
    sizes: &HashMap<u64, usize>,
    loading: &HashMap<String, String>,
    manifest: &Manifest,
    config: &Config,
    opts: &IngestOptions,
) -> Result<(String, Decision)> {
    let previous = manifest.get(&input.name)?;
    // A new name of a size never loaded (nor twice in this run) cannot be
    // content already loaded: its sha256 is taken during extraction,
    // saving a whole read of the file before it.
    let hash_first = opts.dry_run
        || previous.is_some()
        || sizes[&input.size] > 1
        || manifest.size_seen(input.size)?;
    if !hash_first {
        return Ok((String::new(), decide(input, "", None, None, config, opts)));
    }
    let sha = archive::sha256_file(&input.path)?;
    let same_content = match loading.get(&sha) {
        Some(name) => Some(name.clone()),
        None => manifest.by_sha(&sha)?.map(|r| r.name),
    };
    let decision = decide(input, &sha, previous, same_content, config, opts);
    Ok((sha, decision))
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
    let batch = BatchLayer::open(config)?;
    let docs = MetaDir::open(&config.batch_location()?, &config.batch.s3)?;
    let manifest = Manifest::new(docs.clone());
    let registry = Registry::new(docs.clone());
    let limits = archive::Limits::from_config(&config.ingest);

    // Readiness first, without the lock: waiting must not block other days.
    let mut readiness = None;
    if let (Some(day), false) = (opts.date, config.ingest.expected.is_empty()) {
        let wait = if opts.dry_run { None } else { opts.wait };
        let deadline = std::time::Instant::now() + wait.unwrap_or_default();
        let poll = std::time::Duration::from_secs(config.ingest.poll_seconds);
        let mut cache = readiness::ListingCache::default();
        loop {
            let inputs = archive::discover(paths)?;
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

    let _lock = if opts.dry_run {
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

    let mut inputs = archive::discover(paths)?;
    if opts.retry_failed {
        // By name: a record's path is canonical, an input's as given.
        let known: HashSet<String> = inputs.iter().map(|i| i.name.clone()).collect();
        for rec in manifest.all()? {
            let day_matches = opts.date.is_none_or(|d| {
                rec.partitions.iter().any(|p| p.day == d) || rec.partitions.is_empty()
            });
            if rec.state == ArchiveState::Partial && day_matches && !known.contains(&rec.name) {
                inputs.push(archive::input(&rec.path)?);
            }
        }
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
            names.insert(input.name.clone(), input.path.clone());
            decide_input(&input, &sizes, &loading, &manifest, config, opts)?
        };
        if !sha.is_empty() && matches!(decision, Decision::Load { .. }) {
            loading.insert(sha.clone(), input.name.clone());
        }
        let hash = sha.is_empty();
        let mut report = ArchiveReport {
            name: input.name.clone(),
            path: input.path.clone(),
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
        compression: config.ingest.compression.parquet(),
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

#[derive(Debug, Clone)]
struct Job {
    /// Index into the run's archive reports.
    index: usize,
    /// sha256 still to be taken, during extraction.
    hash: bool,
    input: Input,
    only: Option<BTreeSet<String>>,
    previous: Option<ArchiveRecord>,
}

struct Extracted {
    /// Per job: extraction stats or why the archive was rejected.
    archives: Vec<std::result::Result<ExtractStats, String>>,
    /// Per job: the sha256 taken while extracting (jobs with `hash`).
    hashes: Vec<Option<String>>,
    outcomes: Vec<EntryOutcome>,
    schemas: BTreeMap<String, TableSchema>,
}

enum Msg {
    Begin(EntryJob),
    Data(Vec<u8>, inflight::Permit),
    End,
    Abort(String),
}

/// The worker's view of the current entry's bytes. It holds the worker's
/// receiver for the entry (and gives it back after) so that it can move to
/// the thread that parses NDJSON ahead.
struct ChannelReader<'a> {
    rx: Receiver<Msg>,
    /// Read chunks go back to the extractor for reuse: a fresh 1 MiB
    /// buffer per chunk was zeroed, then unmapped when freed.
    spent: &'a Sender<Vec<u8>>,
    chunk: Vec<u8>,
    /// The chunk's place in the run's budget, given back with it.
    permit: Option<inflight::Permit>,
    pos: usize,
    done: bool,
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            // Before waiting: a worker waiting for input holds no place in
            // the budget, so the extractor can always send it some.
            self.give_back();
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d, permit)) => {
                    self.chunk = d;
                    self.permit = Some(permit);
                }
                Ok(Msg::End) => self.done = true,
                Ok(Msg::Abort(reason)) => {
                    self.done = true;
                    return Err(io::Error::other(reason));
                }
                Ok(Msg::Begin(_)) | Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("entry stream ended early"));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<'a> ChannelReader<'a> {
    fn new(rx: Receiver<Msg>, spent: &'a Sender<Vec<u8>>) -> Self {
        Self {
            rx,
            spent,
            chunk: Vec::new(),
            permit: None,
            pos: 0,
            done: false,
        }
    }

    /// Returns a read chunk's buffer to the extractor's pool.
    fn recycle(&self, chunk: Vec<u8>) {
        // Not the reader's first, empty buffer: the extractor would take it
        // and grow it byte by byte.
        if chunk.capacity() >= CHUNK {
            let _ = self.spent.send(chunk);
        }
    }

    fn give_back(&mut self) {
        let spent = std::mem::take(&mut self.chunk);
        self.recycle(spent);
        self.permit = None;
        self.pos = 0;
    }

    /// Consumes the rest of the entry so the extractor never blocks on a
    /// worker that stopped reading.
    fn drain(&mut self) {
        self.give_back();
        while !self.done {
            match self.rx.recv() {
                Ok(Msg::Data(chunk, _permit)) => self.recycle(chunk),
                _ => self.done = true,
            }
        }
    }
}

fn worker_loop(
    mut worker: TableWorker,
    mut rx: Receiver<Msg>,
    spent: Sender<Vec<u8>>,
) -> (TableSchema, Vec<EntryOutcome>) {
    let mut outcomes = Vec::new();
    while let Ok(msg) = rx.recv() {
        let Msg::Begin(job) = msg else { continue };
        let mut reader = ChannelReader::new(rx, &spent);
        let outcome = worker.merge_entry(&job, &mut reader);
        reader.drain();
        rx = reader.rx;
        outcomes.push(outcome);
    }
    (worker.schema, outcomes)
}

fn extract_all(
    jobs: &[Job],
    limits: archive::Limits,
    date: Option<NaiveDate>,
    config: &Config,
    registry: &Registry,
    settings: MergeSettings,
) -> Result<Extracted> {
    std::thread::scope(|scope| {
        let mut workers: HashMap<String, (Sender<Msg>, _)> = HashMap::new();
        let budget = inflight::Budget::new(CHUNKS_IN_FLIGHT);
        let (spent_tx, spent_rx) = channel::<Vec<u8>>();
        let mut archives = Vec::new();
        let mut hashes = Vec::new();
        for (n, job) in jobs.iter().enumerate() {
            let akey = manifest::key(&job.input.name);
            let mut first = true;
            let mut visit = |meta: archive::EntryMeta, r: &mut dyn Read| -> Result<()> {
                let table = meta.file.table.clone();
                if let Some(d) = date {
                    if meta.file.day != d {
                        // An archive of another day is that day's business;
                        // one that mixes days is refused.
                        let reason = if first {
                            OTHER_DAY.to_string()
                        } else {
                            format!("holds data for {}, not for --date {d}", meta.file.day)
                        };
                        return Err(Error::rejected(&meta.source, reason));
                    }
                }
                first = false;
                if job.only.as_ref().is_some_and(|only| !only.contains(&table)) {
                    return Ok(());
                }
                if !workers.contains_key(&table) {
                    let schema = registry.load(&table)?;
                    let worker =
                        TableWorker::new(schema, config.ingest.policy(&table), settings.clone());
                    // Unbounded: the budget bounds the chunks in it.
                    let (tx, rx) = channel();
                    let spent = spent_tx.clone();
                    let handle = std::thread::Builder::new()
                        .name(format!("merge-{table}"))
                        .spawn_scoped(scope, move || worker_loop(worker, rx, spent))
                        .map_err(|e| Error::data("starting a merge thread", e))?;
                    workers.insert(table.clone(), (tx, handle));
                }
                let tx = &workers[&table].0;
                let source = meta.source.clone();
                let send = |m: Msg| {
                    tx.send(m)
                        .map_err(|_| Error::data(&source, "merge thread stopped"))
                };
                send(Msg::Begin(EntryJob {
                    archive: n,
                    akey: akey.clone(),
                    meta,
                }))?;
                loop {
                    let permit = budget.acquire();
                    let mut chunk = spent_rx.try_recv().unwrap_or_default();
                    chunk.resize(CHUNK, 0);
                    let mut filled = 0;
                    // Fill whole chunks: tar entries read in 512-byte steps.
                    while filled < CHUNK {
                        match r.read(&mut chunk[filled..]) {
                            Ok(0) => break,
                            Ok(k) => filled += k,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                let err = archive::entry_error(&source, e);
                                send(Msg::Abort(err.to_string()))?;
                                return Err(err);
                            }
                        }
                    }
                    if filled == 0 {
                        let _ = spent_tx.send(chunk);
                        break;
                    }
                    chunk.truncate(filled);
                    send(Msg::Data(chunk, permit))?;
                }
                send(Msg::End)
            };
            let res = archive::for_each_entry(&job.input, limits, job.hash, &mut visit);
            hashes.push(res.as_ref().ok().and_then(|x| x.sha256.clone()));
            archives.push(res.map(|x| x.stats).map_err(|e| match e {
                Error::Rejected { reason, .. } if reason == OTHER_DAY => OTHER_DAY.to_string(),
                Error::Rejected { input, reason } => format!("{input}: {reason}"),
                other => other.to_string(),
            }));
        }
        let mut outcomes = Vec::new();
        let mut schemas = BTreeMap::new();
        for (table, (tx, handle)) in workers {
            drop(tx);
            let (schema, mut o) = handle
                .join()
                .map_err(|_| Error::data(format!("merge thread of {table}"), "panicked"))?;
            schemas.insert(table, schema);
            outcomes.append(&mut o);
        }
        Ok(Extracted {
            archives,
            hashes,
            outcomes,
            schemas,
        })
    })
}

async fn delete_temps(batch: &BatchLayer, o: &EntryOutcome) -> Result<()> {
    for p in &o.parts {
        batch.files.delete(p).await?;
    }
    if let Some(q) = &o.quarantine {
        let _ = std::fs::remove_file(q);
    }
    // Directories made only for these files go too: a refused archive
    // leaves no trace. `remove_dir` fails (ignored) on a non-empty one.
    let Some(root) = batch.files.local_root() else {
        return Ok(());
    };
    let part =
        root.join(crate::catalog::store::PartitionStore::day_prefix(&o.table, o.day).as_ref());
    let qpart = quarantine::partition(root, &o.table, o.day);
    for dir in [&part, &qpart] {
        let _ = std::fs::remove_dir(dir);
        if let Some(table_dir) = dir.parent() {
            let _ = std::fs::remove_dir(table_dir);
        }
    }
    let _ = std::fs::remove_dir(root.join(quarantine::DIR));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    config: &Config,
    batch: &BatchLayer,
    docs: &MetaDir,
    manifest: &Manifest,
    registry: &Registry,
    jobs: Vec<Job>,
    mut reports: Vec<ArchiveReport>,
    extracted: Extracted,
    started_at: chrono::DateTime<Utc>,
    opts: &IngestOptions,
) -> Result<IngestReport> {
    for (job, hash) in jobs.iter().zip(&extracted.hashes) {
        let sha = &mut reports[job.index].sha256;
        if sha.is_empty() {
            *sha = match hash {
                Some(h) => h.clone(),
                // Stopped before the end (rejected, another day): hashed
                // apart, for the report.
                None => archive::sha256_file(&job.input.path).unwrap_or_default(),
            };
        }
    }
    // Archives rejected while streaming, or by one of their entries.
    let mut rejected: BTreeMap<usize, String> = BTreeMap::new();
    let mut other_day = BTreeSet::new();
    for (n, res) in extracted.archives.iter().enumerate() {
        match res {
            Err(reason) if reason == OTHER_DAY => {
                other_day.insert(n);
                rejected.insert(n, reason.clone());
            }
            Err(reason) => {
                rejected.insert(n, reason.clone());
            }
            Ok(_) => {}
        }
    }
    for o in &extracted.outcomes {
        if let Some(EntryError::Reject(reason)) = &o.error {
            rejected.entry(o.archive).or_insert_with(|| reason.clone());
        }
    }
    let mut groups: BTreeMap<(String, NaiveDate), Vec<EntryOutcome>> = BTreeMap::new();
    let mut rejected_sources = Vec::new();
    for o in extracted.outcomes {
        if rejected.contains_key(&o.archive) {
            rejected_sources.push(o.source.clone());
            delete_temps(batch, &o).await?;
        } else {
            groups.entry((o.table.clone(), o.day)).or_default().push(o);
        }
    }

    // Decide each (table, day): a table error or too many bad rows fails it.
    let mut tables = Vec::new();
    let mut to_commit = Vec::new();
    let mut failed: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for ((table, day), mut outs) in groups {
        outs.sort_by(|a, b| (a.archive, &a.source).cmp(&(b.archive, &b.source)));
        let read: u64 = outs.iter().map(|o| o.rows_read).sum();
        let quarantined: u64 = outs.iter().map(|o| o.rows_quarantined).sum();
        let mut error = outs.iter().find_map(|o| match &o.error {
            Some(EntryError::Table(m)) => Some(m.clone()),
            _ => None,
        });
        let ratio = if read == 0 {
            0.0
        } else {
            quarantined as f64 / read as f64
        };
        if error.is_none() && ratio > config.ingest.max_bad_rows_ratio {
            error = Some(format!(
                "{quarantined} of {read} rows quarantined ({:.2}%), above ingest.max_bad_rows_ratio = {}",
                ratio * 100.0,
                config.ingest.max_bad_rows_ratio
            ));
        }
        let mut changes: Vec<String> = Vec::new();
        let mut missing: BTreeSet<String> = BTreeSet::new();
        for o in &outs {
            changes.extend(o.changes.iter().cloned());
            missing.extend(o.missing.iter().cloned());
        }
        let report = TableReport {
            table: table.clone(),
            day,
            state: if error.is_some() {
                TableState::Failed
            } else {
                TableState::Committed
            },
            schema_version: outs.iter().map(|o| o.schema_version).max().unwrap_or(0),
            changes,
            missing: missing.into_iter().collect(),
            rows_read: read,
            rows_written: outs.iter().map(|o| o.rows_written).sum(),
            rows_quarantined: quarantined,
            rows_on_disk: None,
            batches: outs
                .iter()
                .map(|o| BatchReport {
                    source: o.source.clone(),
                    rows_read: o.rows_read,
                    rows_written: o.rows_written,
                    rows_quarantined: o.rows_quarantined,
                })
                .collect(),
            error,
        };
        if report.state == TableState::Failed {
            for o in &outs {
                failed.entry(o.archive).or_default().insert(table.clone());
                delete_temps(batch, o).await?;
            }
        } else {
            to_commit.push(outs);
        }
        tables.push(report);
    }

    // Versions made by files that are not committed (rejected archives,
    // failed tables) are dropped when nothing committed builds on them.
    let uncommitted: HashSet<&str> = tables
        .iter()
        .filter(|t| t.state == TableState::Failed)
        .flat_map(|t| t.batches.iter().map(|b| b.source.as_str()))
        .chain(rejected_sources.iter().map(String::as_str))
        .collect();
    let mut schemas = extracted.schemas.clone();
    for schema in schemas.values_mut() {
        while schema
            .current()
            .is_some_and(|v| uncommitted.contains(v.source.as_str()))
        {
            schema.versions.pop();
        }
    }
    // Registry documents first: a crash after this leaves a registry ahead
    // of the data, which the re-run resolves as "fits".
    for schema in schemas.values() {
        if schema.version() > 0 {
            registry.save(schema)?;
        }
    }

    // Per archive: what it commits, what failed.
    let mut commits: BTreeMap<usize, Vec<PartitionRef>> = BTreeMap::new();
    for outs in &to_commit {
        for o in outs {
            let refs = commits.entry(o.archive).or_default();
            match refs
                .iter_mut()
                .find(|p| p.table == o.table && p.day == o.day)
            {
                Some(p) => p.rows += o.rows_written,
                None => refs.push(PartitionRef {
                    table: o.table.clone(),
                    day: o.day,
                    rows: o.rows_written,
                }),
            }
        }
    }
    // A replaced archive's old partitions that the new version does not
    // write are emptied of its rows too.
    let mut purge: Vec<(usize, Vec<(String, NaiveDate)>)> = Vec::new();
    for (n, job) in jobs.iter().enumerate() {
        if rejected.contains_key(&n) || !reports[job.index].replaced {
            continue;
        }
        let new = commits.get(&n).cloned().unwrap_or_default();
        let old: Vec<(String, NaiveDate)> = job
            .previous
            .iter()
            .flat_map(|p| p.partitions.iter())
            .filter(|p| !new.iter().any(|q| q.table == p.table && q.day == p.day))
            .map(|p| (p.table.clone(), p.day))
            .collect();
        purge.push((n, old));
    }

    // Intent: every archive about to change partitions is `committing`, with
    // every partition it may touch, so a crash from here is rolled back.
    for (n, job) in jobs.iter().enumerate() {
        if rejected.contains_key(&n) {
            continue;
        }
        let mut partitions = commits.get(&n).cloned().unwrap_or_default();
        if let Some((_, old)) = purge.iter().find(|(m, _)| *m == n) {
            partitions.extend(old.iter().map(|(t, d)| PartitionRef {
                table: t.clone(),
                day: *d,
                rows: 0,
            }));
        }
        if partitions.is_empty() && job.previous.is_none() {
            continue;
        }
        manifest.put(&ArchiveRecord {
            name: job.input.name.clone(),
            path: job
                .input
                .path
                .canonicalize()
                .unwrap_or(job.input.path.clone()),
            size: job.input.size,
            sha256: reports[job.index].sha256.clone(),
            state: ArchiveState::Committing,
            partitions,
            failed_tables: Vec::new(),
            batches: Vec::new(),
            ledger_recorded: false,
            updated_at: Utc::now(),
        })?;
    }

    for outs in &to_commit {
        let first = &outs[0];
        let akeys: BTreeSet<String> = outs.iter().map(|o| o.akey.clone()).collect();
        let c = commit::PartitionCommit {
            table: first.table.clone(),
            day: first.day,
            akeys: akeys.into_iter().collect(),
            parts: outs.iter().flat_map(|o| o.parts.iter().cloned()).collect(),
            quarantine: outs.iter().filter_map(|o| o.quarantine.clone()).collect(),
            // The partition takes the newest version its files were merged
            // with (older parts are conformed to it), not the registry's
            // latest: a later day's drift does not rewrite earlier days.
            target: extracted.schemas[&first.table]
                .arrow_schema_at(outs.iter().map(|o| o.schema_version).max().unwrap_or(0)),
            compression: config.ingest.compression.parquet(),
        };
        commit::commit_partition(batch, &c).await?;
    }
    for (n, old) in &purge {
        commit::roll_back(batch, &manifest::key(&jobs[*n].input.name), old).await?;
    }

    // Final records.
    for (n, job) in jobs.iter().enumerate() {
        let report = &mut reports[job.index];
        if other_day.contains(&n) {
            report.action = ArchiveAction::OtherDay;
            continue;
        }
        if let Some(reason) = rejected.get(&n) {
            report.action = ArchiveAction::Rejected;
            report.reason = Some(reason.clone());
            continue;
        }
        if let Ok(stats) = &extracted.archives[n] {
            report.stats = *stats;
        }
        // A retry keeps the partitions of the tables loaded before.
        let mut partitions: Vec<PartitionRef> = match (&job.previous, report.replaced) {
            (Some(prev), false) => prev.partitions.clone(),
            _ => Vec::new(),
        };
        for p in commits.get(&n).cloned().unwrap_or_default() {
            partitions.retain(|q| !(q.table == p.table && q.day == p.day));
            partitions.push(p);
        }
        let failed_tables: Vec<String> = failed
            .get(&n)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let state = if failed_tables.is_empty() {
            ArchiveState::Loaded
        } else {
            ArchiveState::Partial
        };
        report.action = match state {
            ArchiveState::Partial => ArchiveAction::Partial,
            _ => ArchiveAction::Loaded,
        };
        if !failed_tables.is_empty() {
            report.reason = Some(format!("failed tables: {}", failed_tables.join(", ")));
        }
        let mut batches: Vec<BatchRef> = match (&job.previous, report.replaced) {
            (Some(prev), false) => prev.batches.clone(),
            _ => Vec::new(),
        };
        for o in to_commit.iter().flatten().filter(|o| o.archive == n) {
            let b = BatchRef {
                table: o.table.clone(),
                day: o.day,
                batch_id: o.batch_id.clone(),
            };
            if !batches.contains(&b) {
                batches.push(b);
            }
        }
        manifest.put(&ArchiveRecord {
            name: job.input.name.clone(),
            path: job
                .input
                .path
                .canonicalize()
                .unwrap_or(job.input.path.clone()),
            size: job.input.size,
            sha256: report.sha256.clone(),
            state,
            partitions,
            failed_tables,
            batches,
            ledger_recorded: false,
            updated_at: Utc::now(),
        })?;
    }

    // Post-merge check: the committed footers hold what was written.
    for t in &mut tables {
        if t.state != TableState::Committed {
            continue;
        }
        let akeys: BTreeSet<String> = to_commit
            .iter()
            .flatten()
            .filter(|o| o.table == t.table && o.day == t.day)
            .map(|o| o.akey.clone())
            .collect();
        let mut on_disk = 0;
        for akey in akeys {
            on_disk += commit::rows_on_disk(batch, &t.table, t.day, &akey).await?;
        }
        t.rows_on_disk = Some(on_disk);
    }
    let reconciled = tables.iter().all(TableReport::reconciles);
    let report = IngestReport {
        started_at,
        finished_at: Utc::now(),
        date: opts.date,
        dry_run: false,
        archives: reports,
        tables,
        reconciled,
        readiness: None,
        skipped: false,
    };
    report.store(docs)?;
    Ok(report)
}

#[cfg(test)]
mod tests;
