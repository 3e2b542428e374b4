//! The scheduler's state, in the serving database next to the run ledger:
//! table `ledgerflow_schedule`, one row per (job, kind, at) holding a JSON
//! document. Kinds: `tick` (a due interval and how it went), `alert` (an SLA
//! miss; its primary key is what makes it fire once, across restarts) and
//! `gap` (intervals skipped after downtime). In PostgreSQL `doc` is jsonb,
//! so `doc->>'state'` works in SQL.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::config::{Config, ServingTarget};
use crate::error::{Error, Result};
use crate::sinks::postgres::PostgresSink;
use crate::sinks::sqlite::SqliteSink;

pub const TABLE: &str = "ledgerflow_schedule";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TickState {
    /// Waiting to run (first attempt, or a retry after `next_attempt_at`).
    Due,
    Running,
    Success,
    /// Out of retries.
    Failed,
}

impl TickState {
    pub fn as_str(self) -> &'static str {
        match self {
            TickState::Due => "due",
            TickState::Running => "running",
            TickState::Success => "success",
            TickState::Failed => "failed",
        }
    }
}

/// One due interval of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    pub job: String,
    pub tick: DateTime<Utc>,
    pub day: NaiveDate,
    pub state: TickState,
    /// Attempts started so far.
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// `host:pid` of the scheduler running it.
    pub owner: Option<String>,
}

/// An SLA miss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub job: String,
    pub tick: DateTime<Utc>,
    pub day: NaiveDate,
    pub deadline: DateTime<Utc>,
    /// The tick's state when the deadline passed (`due`, `running`,
    /// `failed`, or `success` when it finished late).
    pub state: String,
    pub raised_at: DateTime<Utc>,
    pub webhook: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub delivery_error: Option<String>,
}

/// A recorded gap, keyed by when it was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapRecord {
    pub job: String,
    pub found_at: DateTime<Utc>,
    #[serde(flatten)]
    pub gap: super::job::Gap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tick,
    Alert,
    Gap,
}

impl Kind {
    fn as_str(self) -> &'static str {
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
    /// Writes the row; with `only_new`, only if (job, kind, at) is absent.
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

/// Typed access over a [`RecordStore`].
#[derive(Clone)]
pub struct ScheduleStore {
    inner: Arc<dyn RecordStore>,
}

impl ScheduleStore {
    /// Opens a session of its own on the configured serving database.
    pub async fn open(config: &Config) -> Result<ScheduleStore> {
        let inner: Arc<dyn RecordStore> = match config.serving_target()? {
            ServingTarget::Postgres { url } => Arc::new(PgRecords(
                PostgresSink::connect(&url, &config.serving.schema).await?,
            )),
            ServingTarget::Sqlite { path } => Arc::new(SqliteRecords(SqliteSink::open(&path)?)),
        };
        inner.prepare().await?;
        Ok(ScheduleStore { inner })
    }

    async fn put<T: Serialize>(
        &self,
        job: &str,
        kind: Kind,
        at: DateTime<Utc>,
        value: &T,
        only_new: bool,
    ) -> Result<bool> {
        let doc = serde_json::to_string(value).map_err(|e| Error::data("scheduler state", e))?;
        self.inner.put(job, kind, at, doc, only_new).await
    }

    async fn list<T: DeserializeOwned>(
        &self,
        job: Option<&str>,
        kind: Kind,
        limit: i64,
    ) -> Result<Vec<T>> {
        self.inner
            .list(job, kind, limit)
            .await?
            .iter()
            .map(|d| {
                serde_json::from_str(d)
                    .map_err(|e| Error::data(format!("{TABLE} ({})", kind.as_str()), e))
            })
            .collect()
    }

    pub async fn save_tick(&self, t: &Tick) -> Result<()> {
        self.put(&t.job, Kind::Tick, t.tick, t, false)
            .await
            .map(|_| ())
    }

    /// Records a new due tick; false if it was already known.
    pub async fn add_tick(&self, t: &Tick) -> Result<bool> {
        self.put(&t.job, Kind::Tick, t.tick, t, true).await
    }

    pub async fn ticks(&self, job: &str, limit: i64) -> Result<Vec<Tick>> {
        self.list(Some(job), Kind::Tick, limit).await
    }

    pub async fn last_tick(&self, job: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.ticks(job, 1).await?.first().map(|t| t.tick))
    }

    /// Records an alert unless one exists for the same (job, tick).
    pub async fn raise(&self, a: &Alert) -> Result<bool> {
        self.put(&a.job, Kind::Alert, a.tick, a, true).await
    }

    pub async fn save_alert(&self, a: &Alert) -> Result<()> {
        self.put(&a.job, Kind::Alert, a.tick, a, false)
            .await
            .map(|_| ())
    }

    pub async fn alerts(&self, job: Option<&str>, limit: i64) -> Result<Vec<Alert>> {
        self.list(job, Kind::Alert, limit).await
    }

    /// Records a gap once (keyed by its first tick).
    pub async fn add_gap(&self, g: &GapRecord) -> Result<()> {
        self.put(&g.job, Kind::Gap, g.gap.first_tick, g, true)
            .await
            .map(|_| ())
    }

    pub async fn gaps(&self, job: &str, limit: i64) -> Result<Vec<GapRecord>> {
        self.list(Some(job), Kind::Gap, limit).await
    }
}

struct PgRecords(PostgresSink);

#[async_trait]
impl RecordStore for PgRecords {
    async fn prepare(&self) -> Result<()> {
        use crate::sinks::Sink;
        self.0.prepare().await?;
        let table = self.0.table(TABLE);
        let client = self.0.client().await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    job text NOT NULL,
                    kind text NOT NULL,
                    at timestamptz NOT NULL,
                    doc jsonb NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (job, kind, at)
                )"
            ))
            .await
            .map_err(|e| self.0.fail(&format!("creating {table}"), &e))
    }

    async fn put(
        &self,
        job: &str,
        kind: Kind,
        at: DateTime<Utc>,
        doc: String,
        only_new: bool,
    ) -> Result<bool> {
        let table = self.0.table(TABLE);
        let action = if only_new {
            "NOTHING"
        } else {
            "UPDATE SET doc = excluded.doc, updated_at = now() WHERE s.doc->>'state' IS DISTINCT FROM 'success'"
        };
        let client = self.0.client().await?;
        let n = client
            .execute(
                &format!(
                    "INSERT INTO {table} AS s (job, kind, at, doc) VALUES ($1, $2, $3, CAST($4::text AS jsonb))
                     ON CONFLICT (job, kind, at) DO {action}"
                ),
                &[&job, &kind.as_str(), &at, &doc],
            )
            .await
            .map_err(|e| self.0.fail(&format!("writing {table}"), &e))?;
        Ok(n == 1)
    }

    async fn list(&self, job: Option<&str>, kind: Kind, limit: i64) -> Result<Vec<String>> {
        let table = self.0.table(TABLE);
        let client = self.0.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT doc::text FROM {table} WHERE ($1::text IS NULL OR job = $1) AND kind = $2
                     ORDER BY at DESC, job LIMIT $3"
                ),
                &[&job, &kind.as_str(), &limit],
            )
            .await
            .map_err(|e| self.0.fail(&format!("reading {table}"), &e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
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
        use crate::sinks::Sink;
        self.0.prepare().await?;
        self.0
            .run(|conn, target| {
                conn.execute_batch(&format!(
                    "CREATE TABLE IF NOT EXISTS {TABLE} (
                        job TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        at TEXT NOT NULL,
                        doc TEXT NOT NULL,
                        updated_at TEXT NOT NULL,
                        PRIMARY KEY (job, kind, at)
                    )"
                ))
                .map_err(|e| sqlite_err(target, &format!("creating {TABLE}"), e))
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
                            "INSERT INTO {TABLE} (job, kind, at, doc, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT (job, kind, at) DO {action}"
                        ),
                        rusqlite::params![job, kind.as_str(), at, doc, sortable(Utc::now())],
                    )
                    .map_err(|e| sqlite_err(target, &format!("writing {TABLE}"), e))?;
                Ok(n == 1)
            })
            .await
    }

    async fn list(&self, job: Option<&str>, kind: Kind, limit: i64) -> Result<Vec<String>> {
        let job = job.map(str::to_owned);
        self.0
            .run(move |conn, target| {
                let fail = |e| sqlite_err(target, &format!("reading {TABLE}"), e);
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT doc FROM {TABLE} WHERE (?1 IS NULL OR job = ?1) AND kind = ?2
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
    crate::sinks::sqlite::sqlite_error(target, context, &e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(job: &str, at: &str) -> Tick {
        let tick: DateTime<Utc> = at.parse().unwrap();
        Tick {
            job: job.into(),
            tick,
            day: tick.date_naive(),
            state: TickState::Due,
            attempts: 0,
            next_attempt_at: None,
            finished_at: None,
            error: None,
            owner: None,
        }
    }

    async fn exercise(store: ScheduleStore) {
        assert!(store
            .add_tick(&tick("a", "2026-11-02T00:30:00Z"))
            .await
            .unwrap());
        assert!(store
            .add_tick(&tick("a", "2026-11-03T00:30:00Z"))
            .await
            .unwrap());
        assert!(store
            .add_tick(&tick("b", "2026-11-09T00:30:00Z"))
            .await
            .unwrap());
        // Already known: not added again, and not overwritten.
        let mut t = tick("a", "2026-11-03T00:30:00Z");
        t.attempts = 7;
        assert!(!store.add_tick(&t).await.unwrap());
        assert_eq!(store.ticks("a", 10).await.unwrap()[0].attempts, 0);
        store.save_tick(&t).await.unwrap();
        let ticks = store.ticks("a", 10).await.unwrap();
        assert_eq!(ticks.len(), 2);
        assert_eq!(ticks[0], t);
        assert_eq!(store.last_tick("a").await.unwrap(), Some(t.tick));
        let alert = Alert {
            job: "a".into(),
            tick: t.tick,
            day: t.day,
            deadline: t.tick,
            state: "running".into(),
            raised_at: Utc::now(),
            webhook: None,
            delivered_at: None,
            delivery_error: None,
        };
        assert!(store.raise(&alert).await.unwrap());
        assert!(!store.raise(&alert).await.unwrap(), "one alert per miss");
        // A successful tick is final: a late writer cannot make it due again.
        let mut done = t.clone();
        done.state = TickState::Success;
        store.save_tick(&done).await.unwrap();
        let mut late = t.clone();
        late.state = TickState::Due;
        store.save_tick(&late).await.unwrap();
        assert_eq!(
            store.ticks("a", 1).await.unwrap()[0].state,
            TickState::Success
        );
        assert_eq!(store.alerts(None, 10).await.unwrap(), vec![alert]);
    }

    #[tokio::test]
    async fn sqlite_store_keeps_ticks_and_alerts_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::project::test_config(dir.path(), "sqlite://serving.db");
        exercise(ScheduleStore::open(&config).await.unwrap()).await;
    }

    #[tokio::test]
    async fn postgres_store_keeps_ticks_and_alerts_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = std::env::var("LEDGERFLOW_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("lf_store_{}", std::process::id());
        let mut config = crate::project::test_config(dir.path(), &url);
        config.serving.schema = schema.clone();
        exercise(ScheduleStore::open(&config).await.unwrap()).await;
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
