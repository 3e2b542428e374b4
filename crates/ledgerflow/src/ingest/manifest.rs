//! The manifest of ingested inputs: one JSON record per archive name in
//! `<batch layer>/_ingest/archives/<key>.json`, where the key is a hash of
//! the name (so a lookup is one file read however many archives a day
//! brings). It holds the size and sha256 that decide "same archive again"
//! and the partitions the archive wrote, which a replacement or a rollback
//! must find.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::meta::MetaDir;
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
    docs: MetaDir,
}

const ARCHIVES: &str = "_ingest/archives";

impl Manifest {
    pub fn new(docs: MetaDir) -> Self {
        Self { docs }
    }

    fn key_of(name: &str) -> String {
        format!("{ARCHIVES}/{}.json", key(name))
    }

    fn parse(&self, doc_key: &str, bytes: &[u8]) -> Result<ArchiveRecord> {
        serde_json::from_slice(bytes).map_err(|e| Error::data(self.docs.describe(doc_key), e))
    }

    pub fn get(&self, name: &str) -> Result<Option<ArchiveRecord>> {
        let doc_key = Self::key_of(name);
        match self.docs.read(&doc_key)? {
            Some(b) => self.parse(&doc_key, &b).map(Some),
            None => Ok(None),
        }
    }

    pub fn put(&self, record: &ArchiveRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).expect("records serialize");
        // The size first: a crash after it costs a later input of this size
        // a read ahead of time; a crash before a record that lacked it could
        // let the same bytes load twice under another name.
        self.note_size(record.size)?;
        self.docs.write(&Self::key_of(&record.name), &json)?;
        if record.state != ArchiveState::Committing {
            // Content index: the same bytes re-sent under another name are
            // recognized (the user's duplicate loads came from re-sends).
            self.docs
                .write(&Self::sha_key(&record.sha256), record.name.as_bytes())?;
        }
        Ok(())
    }

    fn note_size(&self, size: u64) -> Result<()> {
        let doc_key = format!("{DIR}/sizes/{size}");
        if !self.docs.exists(&doc_key)? {
            self.docs.write(&doc_key, b"")?;
        }
        Ok(())
    }

    /// Whether an archive of this many bytes was ever loaded. An input of
    /// a size never seen cannot be the same content as a loaded one, so
    /// its sha256 can wait until its one read (extraction). Entries are
    /// never removed: a stale one only costs a read ahead of time.
    pub fn size_seen(&self, size: u64) -> Result<bool> {
        let complete = format!("{DIR}/sizes/.complete");
        if !self.docs.exists(&complete)? {
            // A root from before the size index, or a rebuild a crash cut
            // short (a missing size could let the same bytes load twice):
            // build it from the records, then say it is whole.
            for rec in self.all()? {
                self.note_size(rec.size)?;
            }
            self.docs.write(&complete, b"")?;
        }
        self.docs.exists(&format!("{DIR}/sizes/{size}"))
    }

    fn sha_key(sha256: &str) -> String {
        format!("{DIR}/sha256/{sha256}")
    }

    /// The loaded archive with this content, under whatever name.
    pub fn by_sha(&self, sha256: &str) -> Result<Option<ArchiveRecord>> {
        let Some(name) = self.docs.read(&Self::sha_key(sha256))? else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(&name).to_string();
        Ok(self.get(&name)?.filter(|r| r.sha256 == sha256))
    }

    /// Forgets an archive (after a rollback); its content index goes too.
    pub fn remove(&self, name: &str) -> Result<()> {
        if let Some(rec) = self.get(name)? {
            self.docs.remove(&Self::sha_key(&rec.sha256))?;
        }
        self.docs.remove(&Self::key_of(name))
    }

    pub fn all(&self) -> Result<Vec<ArchiveRecord>> {
        let mut out = Vec::new();
        for name in self.docs.list(ARCHIVES)? {
            if !name.ends_with(".json") {
                continue;
            }
            let doc_key = format!("{ARCHIVES}/{name}");
            if let Some(b) = self.docs.read(&doc_key)? {
                out.push(self.parse(&doc_key, &b)?);
            }
        }
        out.sort_by(|a: &ArchiveRecord, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
