//! One table's merge worker: turns a table file's bytes into Parquet files
//! under hidden temporary names in `<table>/date=D/`, rows streamed through
//! Arrow builders (one batch in memory, never the table), bad rows to
//! quarantine. The partition is committed later ([`super::commit`]), once
//! the whole archive is known to be acceptable.
//!
//! A worker owns its table's registry document for the run, so files of one
//! table resolve their schema one after another, without locks.

use std::collections::HashSet;
use std::io::Read;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use csv::{ByteRecord, StringRecord};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::Compression;
use tokio::runtime::Handle;

use super::ahead;
use super::archive::{entry_error, EntryMeta};
use super::naming::normalize_column;
use super::naming::Format;
use super::quarantine::{BadRow, Quarantine};
use super::reader::{Next, RowSource, Rows};
use super::registry::TableSchema;
use super::types::{self, ColType, DayMemo};
use crate::catalog::schema::UTC;
use crate::catalog::store::PartitionStore;
use crate::config::IncompatiblePolicy;
use crate::error::{Error, Result};

/// Prefix of files not yet committed; never read as data (hidden) and told
/// apart from other writers' temporaries.
pub const TMP_PREFIX: &str = ".ingest-tmp-";

/// A table file to merge, from archive number `archive` (whose manifest key
/// is `akey`).
#[derive(Debug, Clone)]
pub struct EntryJob {
    pub archive: usize,
    pub akey: String,
    pub meta: EntryMeta,
}

/// Why an entry could not be merged.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryError {
    /// The file itself is unacceptable: its archive is rejected.
    Reject(String),
    /// The table cannot take it (incompatible type, policy `fail`): the
    /// table fails for the day.
    Table(String),
}

#[derive(Debug, Clone)]
pub struct EntryOutcome {
    pub archive: usize,
    pub akey: String,
    pub source: String,
    pub table: String,
    pub day: NaiveDate,
    pub batch_id: String,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_quarantined: u64,
    /// Temporary Parquet files, in order.
    pub parts: Vec<Path>,
    pub quarantine: Option<std::path::PathBuf>,
    pub schema_version: u32,
    pub changes: Vec<String>,
    pub missing: Vec<String>,
    /// `[ingest.checks]` of the table over this file's rows.
    pub checks: Vec<super::row_checks::Tally>,
    pub error: Option<EntryError>,
}

/// Settings a worker needs.
#[derive(Clone)]
pub struct MergeSettings {
    pub store: PartitionStore,
    /// Where quarantine files are written before their commit: the batch
    /// layer itself when it is a local directory, else a local staging
    /// directory the commit uploads from.
    pub quarantine_root: std::path::PathBuf,
    pub handle: Handle,
    pub rows_per_file: usize,
    pub batch_size: usize,
    pub infer_rows: usize,
    pub max_line: u64,
    pub compression: Compression,
    /// `[ingest.checks]`, by table.
    pub row_checks: std::sync::Arc<super::row_checks::TableChecks>,
}

pub struct TableWorker {
    pub schema: TableSchema,
    policy: IncompatiblePolicy,
    settings: MergeSettings,
}

/// Final name of a temporary part: the archive key and batch id stay in the
/// name, so a re-run of the same archive replaces exactly its own files.
pub fn final_name(tmp: &Path) -> Path {
    let name = tmp.filename().expect("a file");
    let rest = name
        .strip_prefix(TMP_PREFIX)
        .and_then(|r| r.split_once('-'))
        .map(|(_pid, r)| r)
        .expect("a temporary part name");
    let dir: Path = tmp.parts().take(tmp.parts().count() - 1).collect();
    dir.join(format!("part-{rest}"))
}

/// Prefix of the final part names an archive writes.
pub fn part_prefix(akey: &str) -> String {
    format!("part-{akey}-")
}

enum Builder {
    Bool(BooleanBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    Dec(Decimal128Builder, u8),
    Date(Date32Builder, DayMemo),
    Ts(TimestampMicrosecondBuilder, DayMemo),
    Str(StringBuilder),
}

#[derive(Clone, Copy)]
enum Val<'a> {
    Null,
    B(bool),
    I32(i32),
    I64(i64),
    D(i128),
    Date(i32),
    Ts(i64),
    S(&'a str),
}

/// An emptied vector under another lifetime, keeping its allocation (the
/// in-place `collect` of a same-layout iterator).
fn reuse<'b>(mut v: Vec<Val<'_>>) -> Vec<Val<'b>> {
    v.clear();
    v.into_iter().map(|_| Val::Null).collect()
}

impl Builder {
    fn new(ty: ColType) -> Self {
        match ty {
            ColType::Boolean => Builder::Bool(BooleanBuilder::new()),
            ColType::Int => Builder::I32(Int32Builder::new()),
            ColType::BigInt => Builder::I64(Int64Builder::new()),
            ColType::Decimal(s) => Builder::Dec(
                Decimal128Builder::new()
                    .with_precision_and_scale(38, s as i8)
                    .expect("valid decimal"),
                s,
            ),
            ColType::Date => Builder::Date(Date32Builder::new(), DayMemo::default()),
            ColType::Timestamp => Builder::Ts(
                TimestampMicrosecondBuilder::new().with_timezone(UTC),
                DayMemo::default(),
            ),
            ColType::Null | ColType::String => Builder::Str(StringBuilder::new()),
        }
    }

    /// Parses one non-empty value for this column's type.
    fn parse<'a>(&mut self, v: &'a str) -> Option<Val<'a>> {
        Some(match self {
            Builder::Bool(_) => {
                if v.eq_ignore_ascii_case("true") {
                    Val::B(true)
                } else if v.eq_ignore_ascii_case("false") {
                    Val::B(false)
                } else {
                    return None;
                }
            }
            Builder::I32(_) => Val::I32(v.parse().ok()?),
            Builder::I64(_) => Val::I64(v.parse().ok()?),
            Builder::Dec(_, s) => Val::D(types::parse_decimal(v, *s)?),
            Builder::Date(_, memo) => Val::Date(types::date_days_with(v, memo)?),
            Builder::Ts(_, memo) => match types::parse_timestamp_with(v, memo) {
                Some(t) => Val::Ts(t),
                None => Val::Ts(i64::from(types::date_days_with(v, memo)?) * 86_400_000_000),
            },
            Builder::Str(_) => Val::S(v),
        })
    }

    fn append(&mut self, v: Val<'_>) {
        match (self, v) {
            (Builder::Bool(b), Val::B(x)) => b.append_value(x),
            (Builder::I32(b), Val::I32(x)) => b.append_value(x),
            (Builder::I64(b), Val::I64(x)) => b.append_value(x),
            (Builder::Dec(b, _), Val::D(x)) => b.append_value(x),
            (Builder::Date(b, _), Val::Date(x)) => b.append_value(x),
            (Builder::Ts(b, _), Val::Ts(x)) => b.append_value(x),
            (Builder::Str(b), Val::S(x)) => b.append_value(x),
            (b, Val::Null) => b.append_null(),
            _ => unreachable!("values are parsed by their own builder"),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::Dec(b, _) => b.append_null(),
            Builder::Date(b, _) => b.append_null(),
            Builder::Ts(b, _) => b.append_null(),
            Builder::Str(b) => b.append_null(),
        }
    }

    /// The batch's array. The builder starts the next batch with room for
    /// as many rows and string bytes: regrown from empty, every batch's
    /// values were copied once more on the way (realloc was a sixth of
    /// ingest's memcpy).
    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => {
                let a = b.finish();
                *b = BooleanBuilder::with_capacity(a.len());
                Arc::new(a)
            }
            Builder::I32(b) => {
                let a = b.finish();
                *b = Int32Builder::with_capacity(a.len());
                Arc::new(a)
            }
            Builder::I64(b) => {
                let a = b.finish();
                *b = Int64Builder::with_capacity(a.len());
                Arc::new(a)
            }
            Builder::Dec(b, s) => {
                let a = b.finish();
                *b = Decimal128Builder::with_capacity(a.len())
                    .with_precision_and_scale(38, *s as i8)
                    .expect("valid decimal");
                Arc::new(a)
            }
            Builder::Date(b, _) => {
                let a = b.finish();
                *b = Date32Builder::with_capacity(a.len());
                Arc::new(a)
            }
            Builder::Ts(b, _) => {
                let a = b.finish();
                *b = TimestampMicrosecondBuilder::with_capacity(a.len()).with_timezone(UTC);
                Arc::new(a)
            }
            Builder::Str(b) => {
                let a = b.finish();
                *b = StringBuilder::with_capacity(a.len(), a.value_data().len());
                Arc::new(a)
            }
        }
    }
}

/// The parse side's end of the part writer: Parquet encoding runs on its
/// own thread, so parsing and encoding a table file use two cores.
struct ToWriter<'a> {
    settings: &'a MergeSettings,
    schema: SchemaRef,
    tx: SyncSender<RecordBatch>,
    /// Columns written without a dictionary, decided from the sample
    /// before the first batch is sent.
    plain: &'a OnceLock<Vec<String>>,
}

impl ToWriter<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.tx
            .send(batch.clone())
            .map_err(|_| Error::data("part writer", "stopped"))
    }
}

/// Columns whose sampled values are mostly distinct (ids, addresses,
/// amounts): a dictionary would not hold them.
fn mostly_distinct(header: &[String], sample: &[(u64, ByteRecord)]) -> Vec<String> {
    /// Fewer sampled values say nothing either way.
    const MIN_VALUES: usize = 100;
    header
        .iter()
        .enumerate()
        .filter(|(j, _)| {
            let values: Vec<&[u8]> = sample
                .iter()
                .filter_map(|(_, r)| r.get(*j).filter(|v| !v.is_empty()))
                .collect();
            let distinct: HashSet<&[u8]> = values.iter().copied().collect();
            values.len() >= MIN_VALUES && distinct.len() * 2 > values.len()
        })
        .map(|(_, name)| name.clone())
        .collect()
}

/// Batches in flight between parsing and encoding (a batch is
/// `engine.batch_size` rows, ~1 MB here). At 2 the parser stalled whenever
/// the writer flushed a row group; 8 took the wall time of a 1 GB ingest
/// down 6-10% (and its CPU 3-4%: fewer sleeps and wake-ups) for ~8 MiB.
const BATCHES_IN_FLIGHT: usize = 8;

/// Rolls Parquet files at `rows_per_file`; runs on the writer thread.
struct Parts<'a> {
    settings: &'a MergeSettings,
    plain: &'a OnceLock<Vec<String>>,
    stem: String,
    table: String,
    day: NaiveDate,
    current: Option<(Path, AsyncArrowWriter<BufWriter>, usize)>,
    done: Vec<Path>,
    rows: u64,
}

impl Parts<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.current.is_none() {
                let path = PartitionStore::day_prefix(&self.table, self.day).join(format!(
                    "{TMP_PREFIX}{}-{}-{:04}.parquet",
                    std::process::id(),
                    self.stem,
                    self.done.len()
                ));
                let plain = self.plain.get().map_or(&[][..], Vec::as_slice);
                let w = self.settings.store.parquet_writer_with(
                    &path,
                    batch.schema(),
                    self.settings.compression,
                    plain,
                )?;
                self.current = Some((path, w, 0));
            }
            let (path, w, rows) = self.current.as_mut().expect("opened above");
            let take = (self.settings.rows_per_file - *rows).min(batch.num_rows() - offset);
            self.settings
                .handle
                .block_on(w.write(&batch.slice(offset, take)))
                .map_err(|e| Error::data(self.settings.store.describe(path), e))?;
            *rows += take;
            offset += take;
            self.rows += take as u64;
            if *rows >= self.settings.rows_per_file {
                self.close()?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((path, w, _)) = self.current.take() {
            self.settings
                .handle
                .block_on(w.close())
                .map_err(|e| Error::data(self.settings.store.describe(&path), e))?;
            self.done.push(path);
        }
        Ok(())
    }
}

/// Where one table file's rows go, and what is told of them.
struct Target<'a, 'w> {
    schema: &'a mut TableSchema,
    policy: IncompatiblePolicy,
    job: &'a EntryJob,
    parts: &'a mut ToWriter<'w>,
    quarantine: &'a mut Quarantine,
    out: &'a mut EntryOutcome,
}

/// A file the reader could not take: its archive is rejected.
fn reject(source: &str) -> impl Fn(std::io::Error) -> EntryError + Copy + '_ {
    move |e| match entry_error(source, e) {
        Error::Rejected { input, reason } => EntryError::Reject(format!("{input}: {reason}")),
        other => EntryError::Reject(other.to_string()),
    }
}

impl TableWorker {
    pub fn new(schema: TableSchema, policy: IncompatiblePolicy, settings: MergeSettings) -> Self {
        Self {
            schema,
            policy,
            settings,
        }
    }

    /// Merges one table file. Never panics on data; every problem is in the
    /// outcome's `error`, and whatever was written is listed for cleanup.
    pub fn merge_entry(&mut self, job: &EntryJob, reader: &mut (dyn Read + Send)) -> EntryOutcome {
        let f = &job.meta.file;
        let mut out = EntryOutcome {
            archive: job.archive,
            akey: job.akey.clone(),
            source: job.meta.source.clone(),
            table: f.table.clone(),
            day: f.day,
            batch_id: f.batch_id.clone(),
            rows_read: 0,
            rows_written: 0,
            rows_quarantined: 0,
            parts: Vec::new(),
            quarantine: None,
            schema_version: self.schema.version(),
            changes: Vec::new(),
            missing: Vec::new(),
            checks: super::row_checks::Tally::zeros(
                self.settings
                    .row_checks
                    .get(&f.table)
                    .map_or(&[], Vec::as_slice),
            ),
            error: None,
        };
        let root = self.settings.quarantine_root.clone();
        let stem = format!("{}-{}", job.akey, f.batch_id);
        let mut quarantine = Quarantine::new(
            &root,
            &f.table,
            f.day,
            format!("{TMP_PREFIX}{}-{stem}.ndjson", std::process::id()),
        );
        let settings = &self.settings;
        let schema = &mut self.schema;
        let policy = self.policy;
        let (tx, rx) = sync_channel::<RecordBatch>(BATCHES_IN_FLIGHT);
        let (table, day) = (f.table.clone(), f.day);
        let plain = OnceLock::new();
        let plain = &plain;
        let (result, (done, rows, closed)) = std::thread::scope(|scope| {
            let writer = scope.spawn(move || {
                let mut parts = Parts {
                    settings,
                    plain,
                    stem,
                    table,
                    day,
                    current: None,
                    done: Vec::new(),
                    rows: 0,
                };
                let mut status = Ok(());
                // On an error the receiver drops, so the parser stops too.
                for batch in rx {
                    status = parts.write(&batch);
                    if status.is_err() {
                        break;
                    }
                }
                if status.is_ok() {
                    status = parts.close();
                }
                (parts.done, parts.rows, status)
            });
            let mut to_writer = ToWriter {
                settings,
                schema: schema.arrow_schema(),
                tx,
                plain,
            };
            let result = Self::merge_rows(
                reader,
                Target {
                    schema,
                    policy,
                    job,
                    parts: &mut to_writer,
                    quarantine: &mut quarantine,
                    out: &mut out,
                },
            );
            drop(to_writer);
            let written = writer.join().expect("the part writer does not panic");
            (result, written)
        });
        out.parts = done;
        out.rows_written = rows;
        out.rows_quarantined = quarantine.rows;
        let finished = quarantine.finish();
        out.schema_version = self.schema.version();
        match (result, closed, finished) {
            // The writer's own error explains a parser stopped by it.
            (_, Err(e), _) => {
                out.error = Some(EntryError::Table(format!("{}: {e}", job.meta.source)))
            }
            (Err(e), _, _) => out.error = Some(e),
            (_, _, Err(e)) => {
                out.error = Some(EntryError::Table(format!("{}: {e}", job.meta.source)))
            }
            (Ok(()), Ok(()), Ok(q)) => out.quarantine = q,
        }
        out
    }

    /// Reads the file's rows (NDJSON parsed ahead on a thread of its own)
    /// into [`merge_from`](Self::merge_from).
    fn merge_rows(
        reader: &mut (dyn Read + Send),
        target: Target<'_, '_>,
    ) -> std::result::Result<(), EntryError> {
        let job = target.job;
        let source = job.meta.source.as_str();
        let settings = target.parts.settings;
        let (max_line, sample) = (settings.max_line, settings.infer_rows);
        match job.meta.file.format {
            Format::Csv => {
                let mut rows =
                    Rows::open(reader, Format::Csv, max_line, sample).map_err(reject(source))?;
                Self::merge_from(&mut rows, target)
            }
            Format::Ndjson => std::thread::scope(|scope| {
                let name = format!("json-{}", job.meta.file.table);
                let mut rows = ahead::spawn(scope, reader, max_line, sample, name)
                    .map_err(|e| EntryError::Table(format!("{source}: starting a parser: {e}")))?
                    .map_err(reject(source))?;
                Self::merge_from(&mut rows, target)
            }),
        }
    }

    fn merge_from(
        rows: &mut dyn RowSource,
        target: Target<'_, '_>,
    ) -> std::result::Result<(), EntryError> {
        let Target {
            schema,
            policy,
            job,
            parts,
            quarantine,
            out,
        } = target;
        let source = job.meta.source.as_str();
        let settings = parts.settings;
        let reject = reject(source);
        let mut header = Vec::with_capacity(rows.header().len());
        for raw in rows.header() {
            let name = normalize_column(raw)
                .map_err(|m| EntryError::Reject(format!("{source}:1: {m}")))?;
            if header.contains(&name) {
                return Err(EntryError::Reject(format!(
                    "{source}:1: column `{name}` appears twice (after normalization)"
                )));
            }
            header.push(name);
        }
        let bad = |q: &mut Quarantine, line: u64, column: Option<&str>, reason: &str, raw: &str| {
            q.write(&BadRow {
                file: source,
                line,
                column,
                reason,
                raw,
            })
            .map_err(|e| EntryError::Table(e.to_string()))
        };
        let raw_of = |rec: &ByteRecord| {
            serde_json::to_string(
                &rec.iter()
                    .map(|f| String::from_utf8_lossy(f))
                    .collect::<Vec<_>>(),
            )
            .expect("strings serialize")
        };

        // Sample: the first rows decide the file's types.
        let mut sample: Vec<(u64, ByteRecord)> = Vec::new();
        let mut inferred = vec![ColType::Null; header.len()];
        let mut ended = false;
        while sample.len() < settings.infer_rows {
            let mut rec = ByteRecord::new();
            match rows.next(&mut rec).map_err(reject)? {
                Next::End => {
                    ended = true;
                    break;
                }
                Next::Bad { reason, raw } => {
                    out.rows_read += 1;
                    bad(quarantine, rows.line(), None, &reason, &raw)?;
                }
                Next::Row => {
                    if rec.len() == header.len() {
                        for (t, f) in inferred.iter_mut().zip(rec.iter()) {
                            if let Ok(v) = std::str::from_utf8(f) {
                                if !v.is_empty() {
                                    *t = t.join(ColType::of_value(v));
                                }
                            }
                        }
                    }
                    sample.push((rows.line(), rec));
                }
            }
        }
        if sample.is_empty() {
            // No rows (an empty file, a header alone, or only bad lines):
            // nothing to write, and no types to learn, so no schema change.
            return Ok(());
        }
        let file_cols: Vec<(String, ColType)> = header
            .iter()
            .cloned()
            .zip(inferred.iter().copied())
            .collect();
        let res = schema
            .resolve(&file_cols, policy, job.meta.file.day, source)
            .map_err(EntryError::Table)?;
        out.changes = res.changes;
        out.missing = res.missing;
        parts.schema = schema.arrow_schema();
        let _ = parts.plain.set(mostly_distinct(&header, &sample));
        let no_checks = Vec::new();
        let row_checks = super::row_checks::Bound::new(
            settings
                .row_checks
                .get(&job.meta.file.table)
                .unwrap_or(&no_checks),
            &header,
        );
        let columns = schema.columns().to_vec();
        let mapping: Vec<Option<usize>> = columns
            .iter()
            .map(|c| header.iter().position(|h| h == &c.name))
            .collect();
        let mut builders: Vec<Builder> = columns.iter().map(|c| Builder::new(c.ty)).collect();
        let mut in_batch = 0usize;
        // Parsed values of one row, kept until the whole row parsed: a bad
        // value quarantines the row, so nothing is appended before that.
        let mut spare: Vec<Val<'static>> = Vec::with_capacity(columns.len());
        let flush = |builders: &mut Vec<Builder>, parts: &mut ToWriter<'_>| {
            let arrays = builders.iter_mut().map(Builder::finish).collect();
            let batch = RecordBatch::try_new(parts.schema.clone(), arrays)
                .map_err(|e| EntryError::Table(format!("{source}: {e}")))?;
            parts
                .write(&batch)
                .map_err(|e| EntryError::Table(e.to_string()))?;
            crate::failpoint::hit_blocking("ingest_mid_merge", &job.meta.file.table);
            Ok::<(), EntryError>(())
        };

        let mut pending = sample.into_iter();
        let mut spare_rec = ByteRecord::new();
        loop {
            let (line, record) = if let Some((l, r)) = pending.next() {
                (l, r)
            } else {
                if ended {
                    break;
                }
                let mut rec = std::mem::take(&mut spare_rec);
                match rows.next(&mut rec).map_err(reject)? {
                    Next::End => break,
                    Next::Bad { reason, raw } => {
                        out.rows_read += 1;
                        bad(quarantine, rows.line(), None, &reason, &raw)?;
                        spare_rec = rec;
                        continue;
                    }
                    Next::Row => (rows.line(), rec),
                }
            };
            out.rows_read += 1;
            if record.len() != header.len() {
                let reason = format!("{} fields, the header has {}", record.len(), header.len());
                bad(quarantine, line, None, &reason, &raw_of(&record))?;
                spare_rec = record;
                continue;
            }
            // csv checks the whole record for ASCII first and only then
            // field by field: one pass instead of a call per field.
            let record = match StringRecord::from_byte_record(record) {
                Ok(r) => r,
                Err(e) => {
                    let field = e.utf8_error().field();
                    let record = e.into_byte_record();
                    let column = header.get(field).map(String::as_str);
                    bad(quarantine, line, column, "invalid UTF-8", &raw_of(&record))?;
                    spare_rec = record;
                    continue;
                }
            };
            if !row_checks.is_empty() {
                let failed = row_checks.violation(|i| &record[i]);
                super::row_checks::Tally::count(&mut out.checks, failed, || {
                    format!("{source}:{line}")
                });
                if let Some(check) = failed {
                    let reason = format!("check `{}`", check.name);
                    if check.severity == crate::checks::Severity::Error {
                        return Err(EntryError::Table(format!(
                            "{source}:{line}: column `{}` fails {reason} (severity error: the table fails)",
                            check.column
                        )));
                    }
                    let record = record.into_byte_record();
                    bad(
                        quarantine,
                        line,
                        Some(&check.column),
                        &reason,
                        &raw_of(&record),
                    )?;
                    spare_rec = record;
                    continue;
                }
            }
            let mut vals = reuse(std::mem::take(&mut spare));
            let mut problem: Option<(usize, String)> = None;
            for (i, m) in mapping.iter().enumerate() {
                let Some(j) = m else {
                    vals.push(Val::Null);
                    continue;
                };
                let text = &record[*j];
                if text.is_empty() {
                    vals.push(Val::Null);
                    continue;
                }
                match builders[i].parse(text) {
                    Some(v) => vals.push(v),
                    None => {
                        let shown: String = text.chars().take(40).collect();
                        problem = Some((i, format!("`{shown}` is not a {}", columns[i].ty)));
                        break;
                    }
                }
            }
            if let Some((i, reason)) = problem {
                let record = record.into_byte_record();
                bad(
                    quarantine,
                    line,
                    Some(&columns[i].name),
                    &reason,
                    &raw_of(&record),
                )?;
                spare_rec = record;
                continue;
            }
            for (b, v) in builders.iter_mut().zip(vals.drain(..)) {
                b.append(v);
            }
            spare = reuse(vals);
            spare_rec = record.into_byte_record();
            in_batch += 1;
            if in_batch >= settings.batch_size {
                flush(&mut builders, parts)?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            flush(&mut builders, parts)?;
        }
        Ok(())
    }
}
