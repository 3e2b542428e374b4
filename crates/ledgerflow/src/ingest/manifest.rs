//! The manifest of ingested inputs: one JSON record per archive name in
//! `<batch root>/_ingest/archives/<key>.json`, where the key is a hash of
//! the name (so a lookup is one file read however many archives a day
//! brings). It holds the size and sha256 that decide "same archive again"
//! and the partitions the archive wrote, which a replacement or a rollback
//! must find.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::registry::write_atomic;
use crate::error::{Error, Result};

pub const DIR: &str = "_ingest";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveState {
    /// Its partitions are being committed; if a process dies here, the next
    /// ingest rolls the archive's files back.
    Committing,
    /// Every table committed.
    Loaded,
    /// Some tables failed (`failed_tables`); `--retry-failed` re-runs them.
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRef {
    pub table: String,
    pub day: NaiveDate,
    pub rows: u64,
}

/// One table file an archive loaded (readiness counts them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRef {
    pub table: String,
    pub day: NaiveDate,
    pub batch_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveRecord {
    pub name: String,
    /// Where it was read from (for `--retry-failed`).
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub state: ArchiveState,
    /// Partitions holding its rows (files `part-<key>-*`).
    pub partitions: Vec<PartitionRef>,
    pub failed_tables: Vec<String>,
    /// Table files committed (absent in records of older versions).
    #[serde(default)]
    pub batches: Vec<BatchRef>,
    /// Whether the run ledger has this load's steps. Written `false` with
    /// the commit and set once the steps are recorded, so a crash (or a
    /// serving database that is down) in between is repaired by the next
    /// ingest from this record ([`crate::ingest::steps::unrecorded`]).
    /// Records of older versions count as recorded.
    #[serde(default = "recorded")]
    pub ledger_recorded: bool,
    pub updated_at: DateTime<Utc>,
}

fn recorded() -> bool {
    true
}

/// The file-name key of an input: 16 hex digits of sha256(name). It also
/// prefixes the archive's Parquet and quarantine files.
pub fn key(name: &str) -> String {
    hex::encode(&Sha256::digest(name.as_bytes())[..8])
}

#[derive(Debug, Clone)]
pub struct Manifest {
    dir: PathBuf,
}

impl Manifest {
    pub fn new(batch_root: &Path) -> Self {
        Self {
            dir: batch_root.join(DIR).join("archives"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.json", key(name)))
    }

    pub fn get(&self, name: &str) -> Result<Option<ArchiveRecord>> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::data(path.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    pub fn put(&self, record: &ArchiveRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).expect("records serialize");
        // The size first: a crash after it costs a later input of this size
        // a read ahead of time; a crash before a record that lacked it could
        // let the same bytes load twice under another name.
        self.note_size(record.size)?;
        write_atomic(&self.path(&record.name), &json)?;
        if record.state != ArchiveState::Committing {
            // Content index: the same bytes re-sent under another name are
            // recognized (the user's duplicate loads came from re-sends).
            let by_sha = self.sha_path(&record.sha256);
            write_atomic(&by_sha, record.name.as_bytes())?;
        }
        Ok(())
    }

    fn index_dir(&self, index: &str) -> PathBuf {
        self.dir
            .parent()
            .expect("archives/ has a parent")
            .join(index)
    }

    fn note_size(&self, size: u64) -> Result<()> {
        let path = self.index_dir("sizes").join(size.to_string());
        if !path.exists() {
            write_atomic(&path, b"")?;
        }
        Ok(())
    }

    /// Whether an archive of this many bytes was ever loaded. An input of
    /// a size never seen cannot be the same content as a loaded one, so
    /// its sha256 can wait until its one read (extraction). Entries are
    /// never removed: a stale one only costs a read ahead of time.
    pub fn size_seen(&self, size: u64) -> Result<bool> {
        let dir = self.index_dir("sizes");
        let complete = dir.join(".complete");
        if !complete.exists() {
            // A root from before the size index, or a rebuild a crash cut
            // short (a missing size could let the same bytes load twice):
            // build it from the records, then say it is whole.
            if self.dir.exists() {
                for rec in self.all()? {
                    self.note_size(rec.size)?;
                }
            }
            write_atomic(&complete, b"")?;
        }
        Ok(dir.join(size.to_string()).exists())
    }

    fn sha_path(&self, sha256: &str) -> PathBuf {
        self.index_dir("sha256").join(sha256)
    }

    /// The loaded archive with this content, under whatever name.
    pub fn by_sha(&self, sha256: &str) -> Result<Option<ArchiveRecord>> {
        let path = self.sha_path(sha256);
        let name = match std::fs::read_to_string(&path) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(self.get(&name)?.filter(|r| r.sha256 == sha256))
    }

    /// Forgets an archive (after a rollback); its content index goes too.
    pub fn remove(&self, name: &str) -> Result<()> {
        if let Some(rec) = self.get(name)? {
            let _ = std::fs::remove_file(self.sha_path(&rec.sha256));
        }
        let path = self.path(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    pub fn all(&self) -> Result<Vec<ArchiveRecord>> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json")
                && !e.file_name().to_string_lossy().starts_with('.')
            {
                let b = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
                out.push(
                    serde_json::from_slice(&b)
                        .map_err(|e| Error::data(p.display().to_string(), e))?,
                );
            }
        }
        out.sort_by(|a: &ArchiveRecord, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
