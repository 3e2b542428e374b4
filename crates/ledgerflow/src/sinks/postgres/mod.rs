//! The PostgreSQL sink. A write streams the batches by binary COPY into a
//! temporary staging table, then, in the same transaction, replaces the day
//! (or upserts by key) in the target table and closes the ledger row. A
//! crash before COMMIT leaves the old day; after it, the new one.
//!
//! Writers of one table are serialised by an advisory lock (a partition swap
//! needs the parent exclusively); DDL that can race between processes
//! (`CREATE .. IF NOT EXISTS` collides on `pg_type`'s unique index) runs
//! under one too.

mod connect;
mod coordination;
mod copy;
mod numeric;
mod run_ledger;
#[cfg(test)]
mod tests;
mod types;
mod write;

use connect::*;
pub(crate) use connect::{chain, target_of, transient};
pub use coordination::Postgres;
use copy::*;
pub use numeric::PgNumeric;
use numeric::*;
use types::*;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use bytes::{Buf, BufMut, BytesMut};
use chrono::NaiveDate;
use futures::SinkExt;
use postgres_types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls, Row, Transaction};

use super::check_history;
use super::ident::{self, quote, quoted_list};
use super::sql::{self, is_finished, LEDGER_COLUMNS};
use super::values::{self, Column, Datum};
use super::{MetricWriter, RunLedger, WriteMode, WriteRequest, CHECKPOINT_TABLE, VERSIONS_TABLE};
use crate::checks::{self, CheckFilter, CheckResult};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ledger::{self, NewRun, RunFilter, RunOutcome, RunRecord, RunState};

type BoxError = Box<dyn StdError + Sync + Send>;

/// Per-session temporary table, dropped at COMMIT; one write at a time per
/// session, so a fixed name cannot collide.
const STAGING: &str = "ledgerflow_staging";
/// Staging order for upserts: among duplicate keys the last row wins.
const STAGING_SEQ: &str = "ledgerflow_seq";
/// The sequence versions are drawn from.
const VERSION_SEQ: &str = "ledgerflow_version_seq";
/// PostgreSQL's epoch, 2000-01-01, from 1970-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

pub struct PostgresSink {
    /// Holds the password: never logged, only used to reconnect.
    config: Config,
    /// `host:port/dbname`, for messages.
    target: String,
    schema: String,
    /// The session for the ledger and DDL; each write opens its own.
    client: Mutex<Client>,
}

impl PostgresSink {
    /// Connects to `url` (`postgres://user:pass@host:port/db` or key=value);
    /// metric tables and the ledger live in `schema`.
    pub async fn connect(url: &str, schema: &str) -> Result<PostgresSink> {
        let config: Config = url.parse().map_err(|e| Error::Serving {
            target: "PostgreSQL".into(),
            message: format!("invalid connection URL: {}", chain(&e)),
            transient: false,
        })?;
        let target = target_of(&config);
        ident::validate(schema).map_err(|m| Error::Serving {
            target: target.clone(),
            message: format!("schema {m}"),
            transient: false,
        })?;
        let client = open(&config, &target).await?;
        Ok(PostgresSink {
            config,
            target,
            schema: schema.to_owned(),
            client: Mutex::new(client),
        })
    }

    /// The session, reopened if the server closed it (restart, idle
    /// timeout), so a long-running scheduler survives a database restart.
    pub(crate) async fn client(&self) -> Result<MutexGuard<'_, Client>> {
        let mut client = self.client.lock().await;
        if client.is_closed() {
            *client = open(&self.config, &self.target).await?;
        }
        Ok(client)
    }

    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}.{}", quote(&self.schema), quote(name))
    }

    pub(crate) fn fail(&self, context: &str, e: &(dyn StdError + 'static)) -> Error {
        Error::Serving {
            target: self.target.clone(),
            message: format!("{context}: {}", chain(e)),
            transient: transient(e),
        }
    }

    /// An error of ours about the data or the ledger, not the server's.
    fn message(&self, message: String) -> Error {
        Error::Serving {
            target: self.target.clone(),
            message,
            transient: false,
        }
    }

    /// Blocks until no other session holds `key`, until the transaction ends.
    async fn lock(&self, tx: &Transaction<'_>, key: &str) -> Result<()> {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&format!("ledgerflow {key}")],
        )
        .await
        .map_err(|e| self.fail(&format!("locking {key}"), &e))?;
        Ok(())
    }
}
