//! The scheduler's coordination in the serving database: its record store
//! (table `ledgerflow_schedule`, one JSON document per (job, kind, at)) and
//! the lock that makes one scheduler lead per database. The scheduler gives
//! the documents their types (`schedule::store`); a backend only stores
//! them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;

pub const SCHEDULE_TABLE: &str = "ledgerflow_schedule";

/// What a schedule row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tick,
    Alert,
    Gap,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tick => "tick",
            Kind::Alert => "alert",
            Kind::Gap => "gap",
        }
    }
}

/// Rows of `ledgerflow_schedule`, untyped.
#[async_trait]
pub trait RecordStore: Send + Sync {
    async fn prepare(&self) -> Result<()>;
    /// Writes the row; with `only_new`, only if (job, kind, at) is absent;
    /// otherwise replaces it unless its document's `state` is `success`.
    /// Returns whether it was written.
    async fn put(
        &self,
        job: &str,
        kind: Kind,
        at: DateTime<Utc>,
        doc: String,
        only_new: bool,
    ) -> Result<bool>;
    /// Documents of `kind` (of `job`, or every job), newest `at` first.
    async fn list(&self, job: Option<&str>, kind: Kind, limit: i64) -> Result<Vec<String>>;
}

/// A held scheduler lead. It ends when this value is dropped or the
/// process dies (the backend's lock must not outlive either).
#[async_trait]
pub trait LeaderLock: Send + Sync {
    /// Whether the lead is still ours (the lock's session is alive).
    async fn still_held(&self) -> bool;
    /// What the lock is, for logs and `status`.
    fn describe(&self) -> String;
}

/// The lock's name for a project: one lead per serving schema.
pub fn lock_key(config: &crate::config::Config) -> String {
    format!("ledgerflow schedule {}", config.serving.schema)
}
