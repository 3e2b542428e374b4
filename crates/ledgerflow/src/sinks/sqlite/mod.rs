//! The SQLite sink, the embedded default. Same contract as PostgreSQL: the
//! day's rows and the closed ledger row commit in one `BEGIN IMMEDIATE`
//! transaction. Dates, timestamps and decimals are stored as text (see
//! [`values`]): fixed-width so they sort, and decimals exact, since a NUMERIC
//! or REAL column would turn a 38-digit value into a float.

mod coordination;
mod key_order;

pub use coordination::Sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{
    params, params_from_iter, Connection, OptionalExtension, ToSql, TransactionBehavior,
};

use super::check_history;
use super::ident::{quote, quoted_list};
use super::sql::{self, is_finished, LEDGER_COLUMNS};
use super::values::{self, Column, Datum};
use super::{MetricWriter, RunLedger, WriteMode, WriteRequest, CHECKPOINT_TABLE, VERSIONS_TABLE};
use crate::checks::{self, CheckFilter, CheckResult};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ledger::{self, NewRun, RunFilter, RunOutcome, RunRecord, RunState};

/// Temporary table for upserts, dropped before COMMIT.
const STAGING: &str = "ledgerflow_staging";
/// One row counting the versions handed out.
const VERSION_SEQ: &str = "ledgerflow_version_seq";

pub struct SqliteSink {
    path: PathBuf,
    /// SQLite allows one writer; writes through one sink take turns here
    /// and other processes wait up to the busy timeout. An async lock: a
    /// call waiting for its turn holds no blocking thread (with one per
    /// core, a model's write and the next model's waiting ledger update
    /// held both, and the file reads of the query beside them stalled
    /// until the write was over).
    conn: Arc<tokio::sync::Mutex<Connection>>,
}

/// The page cache of a sink's connection, in KiB as `PRAGMA cache_size`
/// takes it (negative: a size, not a page count).
const SQLITE_CACHE_KIB: i64 = -64 * 1024;

impl SqliteSink {
    /// Opens (creating it and its directory if missing) the database file.
    pub fn open(path: &Path) -> Result<SqliteSink> {
        let target = path.display().to_string();
        let fail = |e: rusqlite::Error| sqlite_error(&target, "cannot open", &e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
        // WAL: readers (the dashboard) do not block the writer.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(fail)?;
        // A day's replace reads the table's primary-key index around the
        // day; with SQLite's default 2 MB page cache a grown database
        // re-reads those pages from the kernel for every batch.
        conn.pragma_update(None, "cache_size", SQLITE_CACHE_KIB)
            .map_err(fail)?;
        Ok(SqliteSink {
            path: path.to_owned(),
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
        })
    }

    /// Runs `f` on a blocking thread with the connection and the target
    /// name for messages.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    {
        let mut conn = Arc::clone(&self.conn).lock_owned().await;
        let target = self.path.display().to_string();
        // A panic mid-transaction rolls it back while unwinding and drops
        // the guard: the connection stays consistent for the next call.
        tokio::task::spawn_blocking(move || f(&mut conn, &target))
            .await
            .map_err(|e| {
                serving(
                    &self.path.display().to_string(),
                    format!("SQLite worker: {e}"),
                )
            })?
    }
}

/// An error about the statement or the data (a retry repeats it).
fn serving(target: &str, message: String) -> Error {
    Error::Serving {
        target: target.to_owned(),
        message,
        transient: false,
    }
}

/// `context: e`, transient when the database was busy or locked past the
/// busy timeout, or its disk failed or filled.
pub(crate) fn sqlite_error(target: &str, context: &str, e: &rusqlite::Error) -> Error {
    use rusqlite::ErrorCode as C;
    let transient = e.sqlite_error_code().is_some_and(|code| {
        matches!(
            code,
            C::DatabaseBusy | C::DatabaseLocked | C::SystemIoFailure | C::DiskFull
        )
    });
    Error::Serving {
        target: target.to_owned(),
        message: format!("{context}: {e}"),
        transient,
    }
}

fn sqlite_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int64 | DataType::Int32 | DataType::Boolean => "INTEGER",
        DataType::Float64 => "REAL",
        _ => "TEXT",
    }
}

fn now_text() -> String {
    values::timestamp_text(Utc::now().timestamp_micros()).expect("the clock is within 0000-9999")
}

/// One value of a batch as SQLite stores it; strings are bound without a copy.
struct Cell<'c, 'a> {
    column: &'c Column<'a>,
    row: usize,
}

impl ToSql for Cell<'_, '_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let conversion = |m: String| rusqlite::Error::ToSqlConversionFailure(m.into());
        let value = match self.column.value(self.row).map_err(conversion)? {
            Datum::Text(s) => return Ok(ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))),
            Datum::Null => Value::Null,
            Datum::Int64(v) => Value::Integer(v),
            Datum::Int32(v) => Value::Integer(v.into()),
            Datum::Float64(v) => Value::Real(v),
            Datum::Boolean(v) => Value::Integer(v.into()),
            Datum::Date(days) => Value::Text(values::date_text(days).map_err(conversion)?),
            Datum::Timestamp(micros) => {
                Value::Text(values::timestamp_text(micros).map_err(conversion)?)
            }
            Datum::Decimal(v, scale) => Value::Text(values::decimal_text(v, scale.into())),
        };
        Ok(ToSqlOutput::Owned(value))
    }
}

/// Creates the target table if missing, otherwise checks it has every output
/// column with the declared type this sink writes. Never alters a table.
fn ensure_table(conn: &Connection, target: &str, req: &WriteRequest) -> Result<()> {
    let fail = |e: rusqlite::Error| sqlite_error(target, &format!("creating {}", req.table), &e);
    let columns = || -> rusqlite::Result<Vec<(String, String)>> {
        let mut stmt = conn.prepare_cached("SELECT name, type FROM pragma_table_info(?1)")?;
        let rows = stmt.query_map([&req.table], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    let mut existing = columns().map_err(fail)?;
    if existing.is_empty() {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            quote(&req.table),
            sql::table_defs(req, &req.key, |t, _| sqlite_type(t))
        );
        conn.execute_batch(&sql).map_err(fail)?;
        // Another process may have created it first, with other columns.
        existing = columns().map_err(fail)?;
    }
    for field in req.schema.fields() {
        let want = sqlite_type(field.data_type());
        let problem = match existing
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(field.name()))
        {
            None => "is missing".to_owned(),
            Some((_, have)) if !have.eq_ignore_ascii_case(want) => format!("is declared {have}"),
            Some(_) => continue,
        };
        return Err(sql::column_mismatch(
            req.table.clone(),
            field,
            &problem,
            want,
        ));
    }
    Ok(())
}

/// Every request in one `BEGIN IMMEDIATE` transaction: all commit or none.
fn write_all(conn: &mut Connection, target: &str, reqs: &[WriteRequest]) -> Result<Vec<u64>> {
    for req in reqs {
        values::validate_request(req)?;
        ensure_table(conn, target, req)?;
    }
    let tables: Vec<&str> = reqs.iter().map(|r| r.table.as_str()).collect();
    let context = format!("writing {}", tables.join(", "));
    let fail =
        |step: &str, e: rusqlite::Error| sqlite_error(target, &format!("{context}: {step}"), &e);
    // Sorted before BEGIN IMMEDIATE: the write lock is not held for it.
    let orders = reqs
        .iter()
        .map(|req| {
            key_order::write_order(req).map_err(|m| {
                serving(
                    target,
                    format!("writing {} for {}: {m}", req.table, req.day),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| fail("BEGIN", e))?;
    let mut written = Vec::with_capacity(reqs.len());
    for (req, order) in reqs.iter().zip(&orders) {
        written.push(write_in(&tx, target, req, order.as_deref())?);
    }
    for req in reqs {
        failpoint::hit_blocking("before_commit", &req.table);
    }
    tx.commit().map_err(|e| fail("COMMIT", e))?;
    Ok(written)
}

/// One request inside `tx` (which holds the database's write lock), its
/// rows inserted in `order` when there is one.
fn write_in(
    tx: &rusqlite::Transaction<'_>,
    target: &str,
    req: &WriteRequest,
    order: Option<&[key_order::RowAt]>,
) -> Result<u64> {
    let context = format!("writing {} for {}", req.table, req.day);
    let invalid = |m: String| serving(target, format!("{context}: {m}"));
    let fail =
        |step: &str, e: rusqlite::Error| sqlite_error(target, &format!("{context}: {step}"), &e);
    let table = quote(&req.table);
    let fields = req.schema.fields();
    let columns = quoted_list(fields.iter().map(|f| f.name()));
    // BEGIN IMMEDIATE holds the database's write lock: no other writer can
    // commit between this check and this transaction's commit.
    if let Some(version) = req.version {
        claim_version(tx, req, version).map_err(|e| match e {
            VersionError::Sql(e) => fail("checking the version", e),
            VersionError::Superseded(by) => Error::Superseded {
                table: req.table.clone(),
                day: req.day,
                version,
                by,
            },
        })?;
    }
    let into = match &req.mode {
        WriteMode::ReplaceDay { column } => {
            let delete = format!("DELETE FROM {table} WHERE {} = ?1", quote(column));
            tx.execute(&delete, [req.day.to_string()])
                .map_err(|e| fail("deleting the day", e))?;
            table.clone()
        }
        WriteMode::ReplaceMinutes { column, minutes } => {
            let delete = format!("DELETE FROM {table} WHERE {} = ?1", quote(column));
            let mut stmt = tx
                .prepare(&delete)
                .map_err(|e| fail("deleting the minutes", e))?;
            for &m in minutes {
                let text = values::timestamp_text(m).map_err(invalid)?;
                stmt.execute([text])
                    .map_err(|e| fail("deleting the minutes", e))?;
            }
            table.clone()
        }
        // Staged first so that the upsert sees each key once, as in
        // PostgreSQL, and reports the same row count.
        WriteMode::Upsert => {
            let defs: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", quote(f.name()), sqlite_type(f.data_type())))
                .collect();
            tx.execute_batch(&format!(
                "DROP TABLE IF EXISTS temp.{STAGING}; CREATE TEMP TABLE {STAGING} ({});",
                defs.join(", ")
            ))
            .map_err(|e| fail("creating the staging table", e))?;
            format!("temp.{STAGING}")
        }
    };

    let mut inserted = 0u64;
    {
        let placeholders: Vec<String> = (1..=fields.len()).map(|i| format!("?{i}")).collect();
        let insert = format!(
            "INSERT INTO {into} ({columns}) VALUES ({})",
            placeholders.join(", ")
        );
        let mut stmt = tx.prepare(&insert).map_err(|e| fail("inserting", e))?;
        // In key order, each row lands in the key's index beside the one
        // before instead of on a random page.
        for (i, batch) in key_order::in_order(&req.batches, order).enumerate() {
            let batch = batch.map_err(invalid)?;
            let arrays = values::batch_columns(&batch).map_err(invalid)?;
            for row in 0..batch.num_rows() {
                inserted += stmt
                    .execute(params_from_iter(
                        arrays.iter().map(|column| Cell { column, row }),
                    ))
                    .map_err(|e| fail("inserting", e))? as u64;
            }
            if i == 0 {
                failpoint::hit_blocking("during_copy", &req.table);
            }
        }
    }

    let written = match &req.mode {
        WriteMode::ReplaceDay { .. } | WriteMode::ReplaceMinutes { .. } => inserted,
        WriteMode::Upsert => {
            let key = quoted_list(&req.key);
            let action = sql::conflict_action(req);
            // The last staged row of each key wins. (The WHERE also keeps
            // SQLite from reading ON CONFLICT as a join constraint.)
            let upsert = format!(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM {into} \
                 WHERE rowid IN (SELECT max(rowid) FROM {into} GROUP BY {key}) \
                 ON CONFLICT ({key}) DO {action}"
            );
            let n = tx.execute(&upsert, []).map_err(|e| fail("upserting", e))?;
            tx.execute_batch(&format!("DROP TABLE {into}"))
                .map_err(|e| fail("dropping the staging table", e))?;
            n as u64
        }
    };

    if let Some(run_id) = req.run_id {
        let close = format!(
            "UPDATE {} SET state = 'success', rows_written = ?1, finished_at = ?2, error = NULL, \
             version = ?4 WHERE id = ?3",
            quote(ledger::TABLE)
        );
        let closed = tx
            .execute(
                &close,
                params![written as i64, now_text(), run_id, req.version],
            )
            .map_err(|e| fail("closing the ledger row", e))?;
        if closed != 1 {
            return Err(serving(
                target,
                format!("{context}: ledger row {run_id} does not exist"),
            ));
        }
    }
    if let Some(cp) = &req.checkpoint {
        tx.execute(
            &format!(
                "INSERT INTO {} (stream, position, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (stream) DO UPDATE SET position = excluded.position, \
                 updated_at = excluded.updated_at",
                quote(CHECKPOINT_TABLE)
            ),
            params![cp.stream, cp.position, now_text()],
        )
        .map_err(|e| fail("storing the checkpoint", e))?;
    }
    Ok(written)
}

enum VersionError {
    Sql(rusqlite::Error),
    /// A greater version has committed.
    Superseded(i64),
}

/// Records `version` as (table, day)'s, unless a greater one has committed.
fn claim_version(
    tx: &rusqlite::Transaction<'_>,
    req: &WriteRequest,
    version: i64,
) -> std::result::Result<(), VersionError> {
    let versions = quote(VERSIONS_TABLE);
    let day = req.day.to_string();
    let stored: Option<i64> = tx
        .query_row(
            &format!("SELECT version FROM {versions} WHERE tbl = ?1 AND day = ?2"),
            params![req.table, day],
            |r| r.get(0),
        )
        .optional()
        .map_err(VersionError::Sql)?;
    if let Some(by) = stored.filter(|&s| s > version) {
        return Err(VersionError::Superseded(by));
    }
    tx.execute(
        &format!(
            "INSERT INTO {versions} (tbl, day, version) VALUES (?1, ?2, ?3) \
             ON CONFLICT (tbl, day) DO UPDATE SET version = excluded.version"
        ),
        params![req.table, day, version],
    )
    .map_err(VersionError::Sql)?;
    Ok(())
}

fn record(row: &rusqlite::Row) -> rusqlite::Result<RunRecord> {
    let bad = |i: usize, m: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, m.into())
    };
    let time = |i: usize| -> rusqlite::Result<Option<DateTime<Utc>>> {
        row.get::<_, Option<String>>(i)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| bad(i, format!("bad timestamp `{s}`: {e}")))
            })
            .transpose()
    };
    let day: String = row.get(2)?;
    let state: String = row.get(3)?;
    Ok(RunRecord {
        id: row.get(0)?,
        model: row.get(1)?,
        day: NaiveDate::parse_from_str(&day, "%Y-%m-%d")
            .map_err(|e| bad(2, format!("bad day `{day}`: {e}")))?,
        state: RunState::parse(&state).ok_or_else(|| bad(3, format!("unknown state `{state}`")))?,
        attempt: row.get(4)?,
        trigger: row.get(5)?,
        started_at: time(6)?,
        finished_at: time(7)?,
        rows_written: row.get(8)?,
        fingerprint: row.get(9)?,
        source_layers: row.get(10)?,
        error: row.get(11)?,
        owner: row.get(12)?,
    })
}

#[async_trait]
impl MetricWriter for SqliteSink {
    fn describe(&self) -> String {
        format!("SQLite {}", self.path.display())
    }

    async fn prepare(&self) -> Result<()> {
        self.run(|conn, target| {
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {0} (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    model TEXT NOT NULL,
                    day TEXT NOT NULL,
                    state TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    \"trigger\" TEXT NOT NULL,
                    started_at TEXT,
                    finished_at TEXT,
                    rows_written INTEGER,
                    fingerprint TEXT,
                    source_layers TEXT,
                    error TEXT,
                    owner TEXT
                );
                CREATE INDEX IF NOT EXISTS {1} ON {0} (model, day, id);
                CREATE TABLE IF NOT EXISTS {2} (
                    stream TEXT PRIMARY KEY,
                    position TEXT NOT NULL,
                    updated_at TEXT NOT NULL
                );
                CREATE TABLE IF NOT EXISTS {3} (
                    tbl TEXT NOT NULL,
                    day TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    PRIMARY KEY (tbl, day)
                );
                CREATE TABLE IF NOT EXISTS {4} (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
                INSERT OR IGNORE INTO {4} (id, n) VALUES (1, 0);
                {5}",
                quote(ledger::TABLE),
                quote(&format!("{}_model_day", ledger::TABLE)),
                quote(CHECKPOINT_TABLE),
                quote(VERSIONS_TABLE),
                quote(VERSION_SEQ),
                check_history::ddl(
                    &quote(checks::TABLE),
                    &check_history::index_name(),
                    "INTEGER PRIMARY KEY AUTOINCREMENT",
                    "TEXT",
                    "TEXT"
                ),
            ))
            .map_err(|e| sqlite_error(target, &format!("creating {}", ledger::TABLE), &e))?;
            // Ledgers made before these columns existed gain them (under the
            // write lock: two processes upgrading at once add each once).
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sqlite_error(target, &format!("upgrading {}", ledger::TABLE), &e))?;
            for (column, ty) in [("version", "INTEGER"), ("heartbeat_at", "TEXT")] {
                let has: bool = tx
                    .query_row(
                        &format!(
                            "SELECT count(*) > 0 FROM pragma_table_info('{}') WHERE name = ?1",
                            ledger::TABLE
                        ),
                        [column],
                        |r| r.get(0),
                    )
                    .map_err(|e| sqlite_error(target, &format!("reading {}", ledger::TABLE), &e))?;
                if !has {
                    tx.execute_batch(&format!(
                        "ALTER TABLE {} ADD COLUMN {column} {ty}",
                        quote(ledger::TABLE)
                    ))
                    .map_err(|e| sqlite_error(target, &format!("upgrading {}", ledger::TABLE), &e))?;
                }
            }
            tx.commit()
                .map_err(|e| sqlite_error(target, &format!("upgrading {}", ledger::TABLE), &e))
        })
        .await
    }

    async fn write_all(&self, reqs: Vec<WriteRequest>) -> Result<Vec<u64>> {
        self.run(move |conn, target| write_all(conn, target, &reqs))
            .await
    }

    async fn next_version(&self) -> Result<i64> {
        self.run(|conn, target| {
            let fail = |e: rusqlite::Error| sqlite_error(target, "drawing a write version", &e);
            conn.query_row(
                &format!(
                    "UPDATE {} SET n = n + 1 WHERE id = 1 RETURNING n",
                    quote(VERSION_SEQ)
                ),
                [],
                |r| r.get(0),
            )
            .map_err(fail)
        })
        .await
    }

    async fn read_day(
        &self,
        table: &str,
        column: &str,
        day: NaiveDate,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<Option<Vec<Vec<String>>>> {
        let (table, column) = (table.to_string(), column.to_string());
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        self.run(move |conn, target| {
            let fail = |e: rusqlite::Error| {
                sqlite_error(target, &format!("reading {table} for {day}"), &e)
            };
            let exists: bool = conn
                .query_row(
                    "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [&table],
                    |r| r.get(0),
                )
                .map_err(fail)?;
            if !exists {
                return Ok(None);
            }
            let sql = format!(
                "SELECT {} FROM {} WHERE {} = ?1",
                quoted_list(&names),
                quote(&table),
                quote(&column)
            );
            let mut stmt = conn.prepare(&sql).map_err(fail)?;
            let rows = stmt
                .query_map([day.to_string()], |row| {
                    (0..names.len())
                        .map(|i| {
                            Ok(match row.get::<_, Value>(i)? {
                                Value::Null => "NULL".to_string(),
                                Value::Integer(v) => v.to_string(),
                                Value::Real(v) => values::float_text(v),
                                Value::Text(s) => s,
                                Value::Blob(b) => format!("{b:?}"),
                            })
                        })
                        .collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(fail)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map(Some)
                .map_err(fail)
        })
        .await
    }
}

#[async_trait]
impl RunLedger for SqliteSink {
    async fn ledger_insert(&self, run: &NewRun) -> Result<i64> {
        let run = run.clone();
        self.run(move |conn, target| {
            let now = now_text();
            let sql = format!(
                "INSERT INTO {} (model, day, state, attempt, \"trigger\", started_at, finished_at, \
                 fingerprint, source_layers, error, owner, heartbeat_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                quote(ledger::TABLE)
            );
            conn.execute(
                &sql,
                params![
                    run.model,
                    run.day.to_string(),
                    run.state.as_str(),
                    run.attempt,
                    run.trigger,
                    (run.state == RunState::Running).then_some(&now),
                    is_finished(run.state).then_some(&now),
                    run.fingerprint,
                    run.source_layers,
                    run.error,
                    run.owner,
                    now,
                ],
            )
            .map_err(|e| {
                sqlite_error(
                    target,
                    &format!("recording a run of {} for {}", run.model, run.day),
                    &e,
                )
            })?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn ledger_update(&self, id: i64, outcome: &RunOutcome) -> Result<()> {
        let outcome = outcome.clone();
        self.run(move |conn, target| {
            let now = now_text();
            let sql = format!(
                "UPDATE {} SET state = ?2, rows_written = ?3, error = ?4, \
                 finished_at = coalesce(?5, finished_at), started_at = coalesce(started_at, ?6), \
                 fingerprint = coalesce(?7, fingerprint), source_layers = coalesce(?8, source_layers), \
                 heartbeat_at = ?9 \
                 WHERE id = ?1 AND state IN ('pending', 'running')",
                quote(ledger::TABLE)
            );
            let updated = conn
                .execute(
                    &sql,
                    params![
                        id,
                        outcome.state.as_str(),
                        outcome.rows_written,
                        outcome.error,
                        is_finished(outcome.state).then_some(&now),
                        (outcome.state == RunState::Running).then_some(&now),
                        outcome.fingerprint,
                        outcome.source_layers,
                        now,
                    ],
                )
                .map_err(|e| sqlite_error(target, &format!("updating ledger row {id}"), &e))?;
            // A closed row stays closed; a missing one is an error.
            if updated == 0 {
                let exists: bool = conn
                    .query_row(
                        &format!("SELECT count(*) > 0 FROM {} WHERE id = ?1", quote(ledger::TABLE)),
                        params![id],
                        |r| r.get(0),
                    )
                    .map_err(|e| sqlite_error(target, &format!("reading ledger row {id}"), &e))?;
                if !exists {
                    return Err(serving(target, format!("ledger row {id} does not exist")));
                }
            }
            Ok(())
        })
        .await
    }

    async fn ledger_heartbeat(&self, ids: &[i64]) -> Result<()> {
        let ids = ids.to_vec();
        self.run(move |conn, target| {
            let sql = format!(
                "UPDATE {} SET heartbeat_at = ?1 WHERE id = ?2 AND state IN ('pending', 'running')",
                quote(ledger::TABLE)
            );
            let now = now_text();
            let tx = conn
                .transaction()
                .map_err(|e| sqlite_error(target, "renewing the runs' heartbeat", &e))?;
            for id in ids {
                tx.execute(&sql, params![now, id])
                    .map_err(|e| sqlite_error(target, "renewing the runs' heartbeat", &e))?;
            }
            tx.commit()
                .map_err(|e| sqlite_error(target, "renewing the runs' heartbeat", &e))
        })
        .await
    }

    async fn ledger_expired(&self, lease: Duration) -> Result<Vec<i64>> {
        self.run(move |conn, target| {
            let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
            let cutoff = values::timestamp_text((Utc::now() - lease).timestamp_micros())
                .map_err(|m| serving(target, m))?;
            let sql = format!(
                "SELECT id FROM {} WHERE state IN ('pending', 'running') \
                 AND coalesce(heartbeat_at, started_at) < ?1 ORDER BY id",
                quote(ledger::TABLE)
            );
            let fail = |e: rusqlite::Error| sqlite_error(target, "listing expired runs", &e);
            let mut stmt = conn.prepare(&sql).map_err(fail)?;
            let ids = stmt
                .query_map([cutoff], |r| r.get(0))
                .map_err(fail)?
                .collect::<rusqlite::Result<Vec<i64>>>()
                .map_err(fail)?;
            Ok(ids)
        })
        .await
    }

    async fn ledger_list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let filter = filter.clone();
        self.run(move |conn, target| {
            let fail = |e: rusqlite::Error| sqlite_error(target, "listing runs", &e);
            let sql = format!(
                "SELECT {LEDGER_COLUMNS} FROM {} \
                 WHERE (?1 IS NULL OR model = ?1) AND (?2 IS NULL OR state = ?2) \
                 AND (?3 IS NULL OR day >= ?3) AND (?4 IS NULL OR day <= ?4) \
                 ORDER BY id DESC LIMIT coalesce(?5, -1)",
                quote(ledger::TABLE)
            );
            let mut stmt = conn.prepare(&sql).map_err(fail)?;
            let rows = stmt
                .query_map(
                    params![
                        filter.model,
                        filter.state.map(RunState::as_str),
                        filter.from.map(|d| d.to_string()),
                        filter.to.map(|d| d.to_string()),
                        filter.limit,
                    ],
                    record,
                )
                .map_err(fail)?;
            rows.collect::<rusqlite::Result<_>>().map_err(fail)
        })
        .await
    }

    async fn checkpoint(&self, stream: &str) -> Result<Option<String>> {
        let stream = stream.to_string();
        self.run(move |conn, target| {
            conn.query_row(
                &format!(
                    "SELECT position FROM {} WHERE stream = ?1",
                    quote(CHECKPOINT_TABLE)
                ),
                [&stream],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sqlite_error(target, &format!("reading checkpoint `{stream}`"), &e))
        })
        .await
    }

    async fn checks_record(&self, results: &[CheckResult]) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        let results = results.to_vec();
        self.run(move |conn, target| {
            let fail = |e: rusqlite::Error| sqlite_error(target, "recording check results", &e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            {
                let sql = check_history::insert_sql(&quote(checks::TABLE), |n| format!("?{n}"));
                let mut stmt = tx.prepare(&sql).map_err(fail)?;
                for r in &results {
                    let checked_at = values::timestamp_text(r.checked_at.timestamp_micros())
                        .map_err(|m| serving(target, m))?;
                    stmt.execute(params![
                        r.run_id,
                        r.model,
                        r.day.to_string(),
                        r.check,
                        r.severity.as_str(),
                        r.status.as_str(),
                        r.observed,
                        r.expected,
                        r.failing_rows,
                        r.sample,
                        r.detail,
                        checked_at,
                    ])
                    .map_err(fail)?;
                }
            }
            tx.commit().map_err(fail)
        })
        .await
    }

    async fn checks_list(&self, filter: &CheckFilter) -> Result<Vec<CheckResult>> {
        let filter = filter.clone();
        self.run(move |conn, target| {
            let fail = |e: rusqlite::Error| sqlite_error(target, "listing check results", &e);
            let sql = check_history::list_sql(&quote(checks::TABLE), |n| match n {
                5 => "coalesce(?5, -1)".to_string(),
                n => format!("?{n}"),
            });
            let mut stmt = conn.prepare(&sql).map_err(fail)?;
            let rows = stmt
                .query_map(
                    params![
                        filter.model,
                        filter.from.map(|d| d.to_string()),
                        filter.to.map(|d| d.to_string()),
                        check_history::failed_flag(&filter),
                        filter.limit,
                    ],
                    |row| {
                        let text = |i: usize, s: String| {
                            rusqlite::Error::FromSqlConversionFailure(
                                i,
                                rusqlite::types::Type::Text,
                                s.into(),
                            )
                        };
                        let day: String = row.get(2)?;
                        let day = NaiveDate::parse_from_str(&day, "%Y-%m-%d")
                            .map_err(|e| text(2, format!("bad day `{day}`: {e}")))?;
                        let at: String = row.get(11)?;
                        let at = DateTime::parse_from_rfc3339(&at)
                            .map_err(|e| text(11, format!("bad timestamp `{at}`: {e}")))?
                            .with_timezone(&Utc);
                        let severity: String = row.get(4)?;
                        let status: String = row.get(5)?;
                        check_history::from_parts(
                            row.get(0)?,
                            row.get(1)?,
                            day,
                            row.get(3)?,
                            &severity,
                            &status,
                            row.get(6)?,
                            row.get(7)?,
                            row.get(8)?,
                            row.get(9)?,
                            row.get(10)?,
                            at,
                        )
                        .map_err(|m| text(4, m))
                    },
                )
                .map_err(fail)?;
            rows.collect::<rusqlite::Result<_>>().map_err(fail)
        })
        .await
    }

    async fn last_success_fingerprint(
        &self,
        model: &str,
        day: NaiveDate,
    ) -> Result<Option<String>> {
        let model = model.to_owned();
        self.run(move |conn, target| {
            let sql = format!(
                "SELECT fingerprint FROM {} WHERE model = ?1 AND day = ?2 AND state = 'success' \
                 ORDER BY version DESC NULLS LAST, id DESC LIMIT 1",
                quote(ledger::TABLE)
            );
            conn.query_row(&sql, params![model, day.to_string()], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(|e| {
                sqlite_error(
                    target,
                    &format!("reading the last run of {model} for {day}"),
                    &e,
                )
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::sinks::suite::{self, Reader};
    use crate::sinks::values::fixtures;

    /// A prepared sink in a directory that does not exist yet.
    async fn fresh() -> (TempDir, SqliteSink) {
        let dir = TempDir::new().unwrap();
        let sink = SqliteSink::open(&dir.path().join("nested/dir/serving.db")).unwrap();
        sink.prepare().await.unwrap();
        (dir, sink)
    }

    fn query<T>(
        sink: &SqliteSink,
        sql: &str,
        f: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        let conn = sink.conn.try_lock().expect("no call in flight");
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], f)
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Values exactly as stored: reading text fails if SQLite holds a number.
    #[async_trait]
    impl Reader for SqliteSink {
        async fn day_rows(&self, table: &str, d: NaiveDate) -> Vec<(String, i64, String)> {
            let sql = format!(
                "SELECT address, n, v FROM {} WHERE day = '{d}' ORDER BY address",
                quote(table)
            );
            query(self, &sql, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        }

        async fn minute_rows(&self, table: &str) -> Vec<(String, i64, Option<String>)> {
            let sql = format!(
                "SELECT minute, block_count, value_wei FROM {} ORDER BY minute",
                quote(table)
            );
            query(self, &sql, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        }
    }

    #[tokio::test]
    async fn replace_day_is_idempotent_and_stores_exact_text() {
        let (_dir, sink) = fresh().await;
        suite::replace_day_is_idempotent_and_touches_only_its_day(&sink, &sink).await;
        let row = query(
            &sink,
            "SELECT i, f, b, amt, ts, ts_ns, day, typeof(v), typeof(amt) FROM activity WHERE address = '0xbb'",
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            },
        )
        .remove(0);
        let ts = values::timestamp_text(fixtures::ts_micros(2)).unwrap();
        assert_eq!(ts, "2023-11-14T22:13:22.123456Z");
        assert_eq!(
            row,
            (
                2,
                2.5,
                true,
                "2.45".into(),
                ts.clone(),
                ts,
                "2026-11-03".into(),
                "text".into(),
                "text".into()
            )
        );
        let v: Vec<String> = query(
            &sink,
            "SELECT v FROM activity WHERE address = '0xbb'",
            |r| r.get(0),
        );
        assert_eq!(v, vec!["9".repeat(38)]);
        let types: Vec<(String, String, bool, i64)> = query(
            &sink,
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info('activity')",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        );
        assert_eq!(types[0], ("day".into(), "TEXT".into(), true, 1));
        assert_eq!(types[1], ("address".into(), "TEXT".into(), true, 2));
        assert_eq!(types[6], ("v".into(), "TEXT".into(), false, 0));
    }

    /// The day's rows are inserted in key order: rowids follow the key.
    #[tokio::test]
    async fn rows_are_inserted_in_key_order() {
        let (_dir, sink) = fresh().await;
        let d = fixtures::day(3);
        let batches = vec![
            fixtures::activity(d, &[(Some("0x09"), 1, 1), (Some("0x05"), 2, 2)]),
            fixtures::activity(d, &[(Some("0x07"), 3, 3), (Some("0x01"), 4, 4)]),
        ];
        let id = sink
            .ledger_insert(&fixtures::running("activity", d))
            .await
            .unwrap();
        let req = fixtures::replace("activity", d, batches, id);
        assert_eq!(sink.write(req).await.unwrap(), 4);
        let rows: Vec<String> = query(&sink, "SELECT address FROM activity ORDER BY rowid", |r| {
            r.get(0)
        });
        assert_eq!(rows, ["0x01", "0x05", "0x07", "0x09"]);
    }

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_one() {
        let (_dir, sink) = fresh().await;
        suite::an_older_version_never_replaces_a_newer_one(&sink, &sink).await;
    }

    #[tokio::test]
    async fn upsert_dedupes_keys_and_the_last_row_wins() {
        let (_dir, sink) = fresh().await;
        suite::upsert_dedupes_keys_and_the_last_row_wins(&sink, &sink).await;
    }

    #[tokio::test]
    async fn a_mismatched_table_is_refused_and_left_alone() {
        let (_dir, sink) = fresh().await;
        let n_as_text = "column `n` is declared INTEGER";
        suite::a_mismatched_table_is_refused_and_left_alone(&sink, &sink, "activity", n_as_text)
            .await;
    }

    #[tokio::test]
    async fn a_failed_write_keeps_the_old_day_and_the_run_open() {
        let (_dir, sink) = fresh().await;
        let null_key_error = "activity.address";
        suite::a_failed_write_keeps_the_old_day_and_the_run_open(&sink, &sink, null_key_error)
            .await;
    }

    #[tokio::test]
    async fn ledger_records_runs() {
        let (dir, sink) = fresh().await;
        // A second handle on the same file, as another process would open it.
        let other = SqliteSink::open(&dir.path().join("nested/dir/serving.db")).unwrap();
        other.prepare().await.unwrap();
        suite::ledger_records_runs(&sink, &other).await;
        assert!(sink.describe().ends_with("serving.db"));
    }
}
