//! PostgreSQL as a backend: the sink, the schedule store (jsonb documents,
//! so `doc->>'state'` works in SQL) and the scheduler's lead, a session
//! advisory lock on a connection of its own. The server drops that lock
//! when the session ends, and a killed process's socket is closed by its
//! kernel, so the lock dies with the process; a host that vanishes without
//! closing the socket is caught by TCP keepalives and a TCP user timeout
//! set from `scheduler.lease` on both ends.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::config::Config as Project;
use crate::sinks::coordination::{lock_key, Kind, LeaderLock, RecordStore, SCHEDULE_TABLE};
use crate::sinks::registry::{Backend, Held};
use crate::sinks::Sink;

/// The `postgres://` backend.
pub struct Postgres;

fn url(project: &Project) -> &str {
    project.serving.url.expose().trim()
}

fn parse(project: &Project) -> Result<Config> {
    url(project)
        .parse()
        .map_err(|e| Error::Usage(format!("serving.url: {e}")))
}

/// The sink (or a schedule store's session) on the project's schema.
async fn connect(project: &Project) -> Result<PostgresSink> {
    PostgresSink::connect(url(project), &project.serving.schema).await
}

#[async_trait]
impl Backend for Postgres {
    fn schemes(&self) -> &'static [&'static str] {
        &["postgres", "postgresql"]
    }

    fn check_url(&self, url: &str) -> std::result::Result<(), String> {
        url.parse::<Config>()
            .map(|_| ())
            .map_err(|e| format!("not a valid PostgreSQL URL: {e}"))
    }

    async fn open(&self, project: &Project) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(connect(project).await?))
    }

    async fn records(&self, project: &Project) -> Result<Arc<dyn RecordStore>> {
        Ok(Arc::new(PgRecords(connect(project).await?)))
    }

    async fn try_lead(
        &self,
        project: &Project,
    ) -> Result<std::result::Result<Box<dyn LeaderLock>, Held>> {
        let mut pg = parse(project)?;
        let target = target_of(&pg);
        let lease = project.scheduler.lease;
        let me = crate::ledger::this_process();
        pg.application_name(format!("ledgerflow schedule {me}"))
            .keepalives(true)
            .keepalives_idle(lease / 2)
            .keepalives_interval((lease / 6).max(Duration::from_secs(1)))
            .keepalives_retries(3)
            .tcp_user_timeout(lease)
            .connect_timeout(lease);
        let fail = |e: tokio_postgres::Error| lock_error(&target, e);
        let (client, connection) = pg.connect(NoTls).await.map_err(fail)?;
        tokio::spawn(connection);
        let idle = (lease / 2).as_secs().max(1);
        let interval = (lease / 6).as_secs().max(1);
        // Keepalives only probe an idle socket: a reply the server sent just
        // as the link died is retransmitted for ~15 minutes while the session
        // (and the lead) lives on. The user timeout bounds that to the lease.
        let unacked_ms = lease.as_millis().max(1000);
        client
            .batch_execute(&format!(
                "SET tcp_keepalives_idle = {idle}; SET tcp_keepalives_interval = {interval}; \
                 SET tcp_keepalives_count = 3; SET tcp_user_timeout = {unacked_ms}"
            ))
            .await
            .map_err(fail)?;
        let key = lock_key(project);
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&key],
            )
            .await
            .map_err(fail)?
            .get(0);
        if got {
            return Ok(Ok(Box::new(AdvisoryLock { client, target })));
        }
        let holder = holder(&client, &key)
            .await
            .map_err(fail)?
            .unwrap_or_else(|| "another session".into());
        Ok(Err(holder))
    }

    async fn leader(&self, project: &Project) -> Result<Option<Held>> {
        let pg = parse(project)?;
        let target = target_of(&pg);
        let fail = |e: tokio_postgres::Error| lock_error(&target, e);
        let (client, connection) = pg.connect(NoTls).await.map_err(fail)?;
        tokio::spawn(connection);
        holder(&client, &lock_key(project)).await.map_err(fail)
    }
}

fn lock_error(target: &str, e: tokio_postgres::Error) -> Error {
    Error::Serving {
        target: target.to_owned(),
        message: format!("scheduler lock: {}", chain(&e)),
        transient: transient(&e),
    }
}

/// The scheduler's lead: held while `client`'s session lives.
struct AdvisoryLock {
    client: Client,
    target: String,
}

#[async_trait]
impl LeaderLock for AdvisoryLock {
    async fn still_held(&self) -> bool {
        !self.client.is_closed() && self.client.simple_query("SELECT 1").await.is_ok()
    }

    fn describe(&self) -> String {
        format!("advisory lock on {}", self.target)
    }
}

/// The session holding a scheduler lock in this database, described.
async fn holder(
    client: &Client,
    key: &str,
) -> std::result::Result<Option<String>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT a.application_name, coalesce(host(a.client_addr), 'local'), a.backend_start::text
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
                 SELECT oid FROM pg_database WHERE datname = current_database())
               AND a.application_name LIKE 'ledgerflow schedule %'
               AND (l.classid::bigint << 32) + l.objid::bigint = hashtextextended($1, 0)
             LIMIT 1",
            &[&key],
        )
        .await?
        .map(|r| {
            let (app, addr, since): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            format!("{} (from {addr}, connected {since})", app.trim_start_matches("ledgerflow schedule "))
        }))
}

struct PgRecords(PostgresSink);

#[async_trait]
impl RecordStore for PgRecords {
    async fn prepare(&self) -> Result<()> {
        self.0.prepare().await?;
        let table = self.0.table(SCHEDULE_TABLE);
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
        let table = self.0.table(SCHEDULE_TABLE);
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
        let table = self.0.table(SCHEDULE_TABLE);
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
