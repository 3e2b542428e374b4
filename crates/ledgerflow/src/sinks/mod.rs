//! The serving layer: one trait per job, each backend implementing all of
//! them, found by the URL scheme of `serving.url` ([`registry`]).
//!
//! - [`MetricWriter`]: a model's output written exactly once: staged, then
//!   one transaction that replaces the day (or upserts by key) and closes
//!   the ledger row.
//! - [`RunLedger`]: the run ledger, realtime checkpoints, check history.
//! - [`coordination`]: the scheduler's store and its leader lock.
//!
//! A [`Sink`] is a backend's writer and ledger on one connection (a write
//! closes its ledger row in the same transaction).

mod check_history;
pub mod coordination;
pub mod ident;
pub mod postgres;
pub mod registry;
mod sql;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;
pub mod values;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use chrono::NaiveDate;

use crate::checks::{CheckFilter, CheckResult};
use crate::config::Config;
use crate::error::Result;
use crate::ledger::{NewRun, RunFilter, RunOutcome, RunRecord, RunState, Step};

/// How rows land in a table: the model spec says (see [`WriteMode`]).
pub use crate::models::spec::WriteMode;

/// Where a realtime stream is, stored with the rows it produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub stream: String,
    /// Opaque to the sink (JSON written by the realtime loop).
    pub position: String,
}

/// Table of realtime checkpoints in the serving database.
pub const CHECKPOINT_TABLE: &str = "ledgerflow_realtime";

/// The committed version of each (table, day): the version of the write
/// that last replaced or merged rows of it.
pub const VERSIONS_TABLE: &str = "ledgerflow_versions";

/// One model's output for one day, to be written atomically together with
/// the ledger row `run_id` being closed as success.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// Validated table name (see [`ident::validate`]).
    pub table: String,
    /// Primary key columns; the table is created with this key.
    pub key: Vec<String>,
    pub mode: WriteMode,
    pub day: NaiveDate,
    /// The output schema: column names and Arrow types. Supported types:
    /// Int64, Int32, Float64, Utf8, Boolean, Date32, Timestamp(any unit, any
    /// tz → stored as UTC), Decimal128(p, s).
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Ledger row closed as `success` (with the row count) in the same
    /// transaction.
    pub run_id: Option<i64>,
    /// Checkpoint stored in the same transaction (realtime).
    pub checkpoint: Option<Checkpoint>,
    /// From [`Sink::next_version`], taken before the inputs were read. The
    /// write commits only if no write of (table, day) with a greater
    /// version has committed (else [`Error::Superseded`], nothing
    /// written), and stores this one: data read earlier never replaces
    /// data read later, whatever order two writers commit in.
    ///
    /// [`Error::Superseded`]: crate::error::Error::Superseded
    pub version: Option<i64>,
}

/// Writes model output into the metric tables.
#[async_trait]
pub trait MetricWriter: Send + Sync {
    /// Where it writes, safe for logs (never a password).
    fn describe(&self) -> String;

    /// Creates the ledger table (and schema) if missing.
    async fn prepare(&self) -> Result<()>;

    /// Creates the table if missing (primary key = `req.key`), checks an
    /// existing table has every column with a compatible type, then in one
    /// transaction: replace or upsert, and close ledger row `req.run_id` as
    /// success with the number of rows written. Returns that number.
    async fn write(&self, req: WriteRequest) -> Result<u64> {
        Ok(self.write_all(vec![req]).await?[0])
    }

    /// [`Sink::write`] for several requests (tables) in one transaction:
    /// all commit or none does. Returns the rows written by each.
    async fn write_all(&self, reqs: Vec<WriteRequest>) -> Result<Vec<u64>>;

    /// A number greater than every one handed out before, by any process
    /// using this database: the version of a write whose inputs are read
    /// after this call.
    async fn next_version(&self) -> Result<i64>;

    /// The rows of `table` whose `column` is `day`, the columns of
    /// `schema` in its order, each value as [`values::canonical_text`];
    /// `None` when the table does not exist. For comparing a day with its
    /// recomputation (`check --deep`).
    async fn read_day(
        &self,
        table: &str,
        column: &str,
        day: NaiveDate,
        schema: &SchemaRef,
    ) -> Result<Option<Vec<Vec<String>>>>;
}

/// The run ledger, the realtime checkpoints and the check history, in the
/// serving database beside the tables they describe.
#[async_trait]
pub trait RunLedger: Send + Sync {
    /// Inserts a ledger row; returns its id.
    async fn ledger_insert(&self, run: &NewRun) -> Result<i64>;

    /// Closes (or moves) a ledger row: sets state, rows, error, finished_at
    /// (and started_at when it moves to running).
    async fn ledger_update(&self, id: i64, outcome: &RunOutcome) -> Result<()>;

    /// Renews the heartbeat of the rows `ids` that are still open
    /// (pending or running), by the database's clock.
    async fn ledger_heartbeat(&self, ids: &[i64]) -> Result<()>;

    /// Open rows whose heartbeat is older than `lease` by the database's
    /// clock (so hosts with skewed clocks agree): their process stopped
    /// renewing it, wherever it ran.
    async fn ledger_expired(&self, lease: std::time::Duration) -> Result<Vec<i64>>;

    /// Newest first.
    async fn ledger_list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>>;

    /// The stored position of a realtime stream, if any.
    async fn checkpoint(&self, stream: &str) -> Result<Option<String>>;

    /// Stores check results in `ledgerflow_checks` (one transaction).
    async fn checks_record(&self, results: &[CheckResult]) -> Result<()>;

    /// Stored check results, newest first.
    async fn checks_list(&self, filter: &CheckFilter) -> Result<Vec<CheckResult>>;

    /// Fingerprint of the latest successful run of (model, day) by commit
    /// order (its version), if any.
    async fn last_success_fingerprint(&self, model: &str, day: NaiveDate)
        -> Result<Option<String>>;
}

/// A backend's writer and ledger on one connection.
pub trait Sink: MetricWriter + RunLedger {}

impl<T: MetricWriter + RunLedger> Sink for T {}

/// Records steps that are over as closed ledger rows, each the next
/// attempt of its (model, day); returns their ids, in order.
pub async fn record_steps(
    sink: &dyn RunLedger,
    steps: Vec<Step>,
    trigger: &str,
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(steps.len());
    for s in steps {
        let previous = sink
            .ledger_list(&RunFilter {
                model: Some(s.model.clone()),
                from: Some(s.day),
                to: Some(s.day),
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        let id = sink
            .ledger_insert(&NewRun {
                model: s.model.clone(),
                day: s.day,
                state: RunState::Running,
                attempt: previous.first().map_or(1, |r| r.attempt + 1),
                trigger: trigger.to_string(),
                fingerprint: None,
                source_layers: None,
                error: None,
                owner: Some(crate::ledger::this_process()),
            })
            .await?;
        let mut outcome = RunOutcome::new(s.state);
        outcome.rows_written = s.rows;
        outcome.error = s.error;
        sink.ledger_update(id, &outcome).await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Opens the configured serving database, prepared.
pub async fn open(config: &Config) -> Result<Arc<dyn Sink>> {
    let sink = registry::backend(config)?.open(config).await?;
    sink.prepare().await?;
    Ok(sink)
}
