//! SQLite as a backend: the sink, the schedule store (JSON text documents)
//! and the scheduler's lead, an exclusive lock on
//! `<database>.schedule.lock`, which the kernel releases when the process
//! dies.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};

use super::{sqlite_error, SqliteSink};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::sinks::coordination::{Kind, LeaderLock, RecordStore, SCHEDULE_TABLE};
use crate::sinks::registry::{Backend, Held};
use crate::sinks::{MetricWriter, Sink};

/// The `sqlite://` backend.
pub struct Sqlite;

/// The database file `serving.url` names, relative to the project.
fn database(config: &Config) -> PathBuf {
    let url = config.serving.url.expose().trim();
    config.resolve(url.strip_prefix("sqlite://").unwrap_or(url))
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".schedule.lock");
    PathBuf::from(p)
}

#[async_trait]
impl Backend for Sqlite {
    fn schemes(&self) -> &'static [&'static str] {
        &["sqlite"]
    }

    fn check_url(&self, url: &str) -> std::result::Result<(), String> {
        match url.strip_prefix("sqlite://") {
            Some("") | None => Err("sqlite:// needs a file path".into()),
            Some(_) => Ok(()),
        }
    }

    async fn open(&self, config: &Config) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(SqliteSink::open(&database(config))?))
    }

    async fn records(&self, config: &Config) -> Result<Arc<dyn RecordStore>> {
        Ok(Arc::new(SqliteRecords(SqliteSink::open(&database(
            config,
        ))?)))
    }

    async fn try_lead(
        &self,
        config: &Config,
    ) -> Result<std::result::Result<Box<dyn LeaderLock>, Held>> {
        let path = lock_path(&database(config));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(|e| Error::io(&path, e))?;
                file.rewind().map_err(|e| Error::io(&path, e))?;
                writeln!(file, "{}", crate::ledger::this_process())
                    .map_err(|e| Error::io(&path, e))?;
                Ok(Ok(Box::new(FileLock { _file: file, path })))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Ok(Err(format!(
                    "{} (lock file {})",
                    holder.trim(),
                    path.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }

    async fn leader(&self, config: &Config) -> Result<Option<Held>> {
        let text = std::fs::read_to_string(lock_path(&database(config))).unwrap_or_default();
        let owner = text.trim();
        Ok((!owner.is_empty() && !crate::ledger::owner_is_gone(owner)).then(|| owner.to_owned()))
    }
}

/// The scheduler's lead: held while the file stays open.
struct FileLock {
    _file: std::fs::File,
    path: PathBuf,
}

#[async_trait]
impl LeaderLock for FileLock {
    async fn still_held(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("lock file {}", self.path.display())
    }
}

struct SqliteRecords(SqliteSink);

/// Fixed-width UTC text, so text order is time order.
fn sortable(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[async_trait]
impl RecordStore for SqliteRecords {
    async fn prepare(&self) -> Result<()> {
        self.0.prepare().await?;
        self.0
            .run(|conn, target| {
                conn.execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {SCHEDULE_TABLE} (
                        job TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        at TEXT NOT NULL,
                        doc TEXT NOT NULL,
                        updated_at TEXT NOT NULL,
                        PRIMARY KEY (job, kind, at)
                    )"
                ))
                .map_err(|e| sqlite_err(target, &format!("creating {SCHEDULE_TABLE}"), e))
            })
            .await
    }

    async fn put(
        &self,
        job: &str,
        kind: Kind,
        at: DateTime<Utc>,
        doc: String,
        only_new: bool,
    ) -> Result<bool> {
        let (job, at) = (job.to_owned(), sortable(at));
        self.0
            .run(move |conn, target| {
                let action = if only_new {
                    "NOTHING"
                } else {
                    "UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at \
                     WHERE json_extract(doc, '$.state') IS NOT 'success'"
                };
                let n = conn
                    .execute(
                        &format!(
                            "INSERT INTO {SCHEDULE_TABLE} (job, kind, at, doc, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT (job, kind, at) DO {action}"
                        ),
                        rusqlite::params![job, kind.as_str(), at, doc, sortable(Utc::now())],
                    )
                    .map_err(|e| sqlite_err(target, &format!("writing {SCHEDULE_TABLE}"), e))?;
                Ok(n == 1)
            })
            .await
    }

    async fn list(&self, job: Option<&str>, kind: Kind, limit: i64) -> Result<Vec<String>> {
        let job = job.map(str::to_owned);
        self.0
            .run(move |conn, target| {
                let fail = |e| sqlite_err(target, &format!("reading {SCHEDULE_TABLE}"), e);
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT doc FROM {SCHEDULE_TABLE} WHERE (?1 IS NULL OR job = ?1) AND kind = ?2
                         ORDER BY at DESC, job LIMIT ?3"
                    ))
                    .map_err(fail)?;
                let rows = stmt
                    .query_map(rusqlite::params![job, kind.as_str(), limit], |r| r.get(0))
                    .map_err(fail)?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
                    .map_err(fail)
            })
            .await
    }
}

fn sqlite_err(target: &str, context: &str, e: rusqlite::Error) -> Error {
    sqlite_error(target, context, &e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_relative_to_the_project() {
        let c = crate::project::test_config(Path::new("/p"), "sqlite://serving.db");
        assert_eq!(database(&c), PathBuf::from("/p/serving.db"));
        assert_eq!(
            lock_path(&database(&c)),
            PathBuf::from("/p/serving.db.schedule.lock")
        );
    }
}
