//! The scheduler's state, in the serving database next to the run ledger:
//! table `ledgerflow_schedule`, one row per (job, kind, at) holding a JSON
//! document. Kinds: `tick` (a due interval and how it went), `alert` (an SLA
//! miss; its primary key is what makes it fire once, across restarts) and
//! `gap` (intervals skipped after downtime). In PostgreSQL `doc` is jsonb,
//! so `doc->>'state'` works in SQL.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
pub use crate::sinks::coordination::Kind;
use crate::sinks::coordination::RecordStore;
pub use crate::sinks::coordination::SCHEDULE_TABLE as TABLE;

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

/// Typed access over a [`RecordStore`].
#[derive(Clone)]
pub struct ScheduleStore {
    inner: Arc<dyn RecordStore>,
}

impl ScheduleStore {
    /// Opens a session of its own on the configured serving database.
    pub async fn open(config: &Config) -> Result<ScheduleStore> {
        let inner = crate::sinks::registry::backend(config)?
            .records(config)
            .await?;
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
