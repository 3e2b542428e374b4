//! One scheduler leads per serving database. PostgreSQL: a session advisory
//! lock on a connection of its own; the server drops it when that session
//! ends, and a killed process's socket is closed by its kernel, so the lock
//! dies with the process. A host that vanishes without closing the socket
//! is caught by TCP keepalives set from `scheduler.lease` on both ends.
//! SQLite: an exclusive lock on `<database>.schedule.lock`, which the kernel
//! releases when the process dies.

use std::io::{Seek, Write};
use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::config::{Config, ServingTarget};
use crate::error::{Error, Result};
use crate::sinks::postgres::{chain, target_of, transient};

pub enum Leader {
    Postgres { client: Client, target: String },
    File { _file: std::fs::File, path: PathBuf },
}

fn lock_key(config: &Config) -> String {
    format!("ledgerflow schedule {}", config.serving.schema)
}

fn lock_path(path: &std::path::Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".schedule.lock");
    PathBuf::from(p)
}

impl Leader {
    /// Takes the lead, or returns who holds it.
    pub async fn try_acquire(config: &Config) -> Result<std::result::Result<Leader, String>> {
        match config.serving_target()? {
            ServingTarget::Postgres { url } => {
                let mut pg: tokio_postgres::Config = url
                    .parse()
                    .map_err(|e| Error::Usage(format!("serving.url: {e}")))?;
                let target = target_of(&pg);
                let lease = config.scheduler.lease;
                let me = crate::ledger::this_process();
                pg.application_name(format!("ledgerflow schedule {me}"))
                    .keepalives(true)
                    .keepalives_idle(lease / 2)
                    .keepalives_interval((lease / 6).max(Duration::from_secs(1)))
                    .keepalives_retries(3)
                    .connect_timeout(lease);
                let fail = |e: tokio_postgres::Error| Error::Serving {
                    target: target.clone(),
                    message: format!("scheduler lock: {}", chain(&e)),
                    transient: transient(&e),
                };
                let (client, connection) = pg.connect(NoTls).await.map_err(fail)?;
                tokio::spawn(connection);
                let idle = (lease / 2).as_secs().max(1);
                let interval = (lease / 6).as_secs().max(1);
                client
                    .batch_execute(&format!(
                        "SET tcp_keepalives_idle = {idle}; SET tcp_keepalives_interval = {interval}; \
                         SET tcp_keepalives_count = 3"
                    ))
                    .await
                    .map_err(fail)?;
                let got: bool = client
                    .query_one(
                        "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                        &[&lock_key(config)],
                    )
                    .await
                    .map_err(fail)?
                    .get(0);
                if got {
                    return Ok(Ok(Leader::Postgres { client, target }));
                }
                let holder = holder(&client, &lock_key(config))
                    .await
                    .map_err(fail)?
                    .unwrap_or_else(|| "another session".into());
                Ok(Err(holder))
            }
            ServingTarget::Sqlite { path } => {
                let path = lock_path(&path);
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
                        Ok(Ok(Leader::File { _file: file, path }))
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
        }
    }

    /// Whether the lead is still ours: the lock's session is alive.
    pub async fn still_held(&self) -> bool {
        match self {
            Leader::Postgres { client, .. } => {
                !client.is_closed() && client.simple_query("SELECT 1").await.is_ok()
            }
            Leader::File { .. } => true,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Leader::Postgres { target, .. } => format!("advisory lock on {target}"),
            Leader::File { path, .. } => format!("lock file {}", path.display()),
        }
    }
}

/// Who leads, if anyone (for `status`). Looks without taking the lock, so
/// it never makes a starting scheduler think another one leads.
pub async fn current(config: &Config) -> Result<Option<String>> {
    match config.serving_target()? {
        ServingTarget::Postgres { url } => {
            let pg: tokio_postgres::Config = url
                .parse()
                .map_err(|e| Error::Usage(format!("serving.url: {e}")))?;
            let target = target_of(&pg);
            let fail = |e: tokio_postgres::Error| Error::Serving {
                target: target.clone(),
                message: format!("scheduler lock: {}", chain(&e)),
                transient: transient(&e),
            };
            let (client, connection) = pg.connect(NoTls).await.map_err(fail)?;
            tokio::spawn(connection);
            holder(&client, &lock_key(config)).await.map_err(fail)
        }
        ServingTarget::Sqlite { path } => {
            let text = std::fs::read_to_string(lock_path(&path)).unwrap_or_default();
            let owner = text.trim();
            Ok((!owner.is_empty() && !crate::ledger::owner_is_gone(owner))
                .then(|| owner.to_owned()))
        }
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
