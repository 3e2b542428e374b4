//! After extraction: each (table, day) decided, the registry updated, the
//! partitions committed with the manifest's intent first, the records and
//! the report written.

use super::*;

pub(super) async fn delete_temps(batch: &BatchLayer, o: &EntryOutcome) -> Result<()> {
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
pub(super) async fn finish(
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
    let (rejected, other_day) = rejected_archives(&extracted);
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
        let report = table_report(&table, day, &outs, config.ingest.max_bad_rows_ratio);
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
            path: job.input.recorded_path(),
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
            compression: super::compression(config.ingest.compression),
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
            path: job.input.recorded_path(),
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

    count_on_disk(batch, &mut tables, &to_commit).await?;
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

/// Archives rejected while streaming, or by one of their entries (reason
/// by archive index), and those of another day than `--date`.
fn rejected_archives(extracted: &Extracted) -> (BTreeMap<usize, String>, BTreeSet<usize>) {
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
    (rejected, other_day)
}

/// One (table, day)'s report from its entries: failed by a table error or
/// by more quarantined rows than `max_bad_rows_ratio` allows.
fn table_report(
    table: &str,
    day: NaiveDate,
    outs: &[EntryOutcome],
    max_bad_rows_ratio: f64,
) -> TableReport {
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
    if error.is_none() && ratio > max_bad_rows_ratio {
        error = Some(format!(
            "{quarantined} of {read} rows quarantined ({:.2}%), above ingest.max_bad_rows_ratio = {}",
            ratio * 100.0,
            max_bad_rows_ratio
        ));
    }
    let mut changes: Vec<String> = Vec::new();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let mut checks = Vec::new();
    for o in outs {
        changes.extend(o.changes.iter().cloned());
        missing.extend(o.missing.iter().cloned());
        super::row_checks::Tally::add_all(&mut checks, &o.checks);
    }
    TableReport {
        table: table.to_owned(),
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
        checks,
        error,
    }
}

/// Post-merge check: the committed footers hold what was written (each
/// committed table's `rows_on_disk`, from the archives' parts).
async fn count_on_disk(
    batch: &BatchLayer,
    tables: &mut [TableReport],
    to_commit: &[Vec<EntryOutcome>],
) -> Result<()> {
    for t in tables {
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
    Ok(())
}
