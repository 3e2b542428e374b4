//! The SQLite sink, the embedded default. Same contract as PostgreSQL: the
//! day's rows and the closed ledger row commit in one `BEGIN IMMEDIATE`
//! transaction. Dates, timestamps and decimals are stored as text (see
//! [`values`]): fixed-width so they sort, and decimals exact, since a NUMERIC
//! or REAL column would turn a 38-digit value into a float.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{
    params, params_from_iter, Connection, OptionalExtension, ToSql, TransactionBehavior,
};

use super::ident::quote;
use super::values::{self, Column, Datum};
use super::{Sink, WriteMode, WriteRequest};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ledger::{self, NewRun, RunFilter, RunOutcome, RunRecord, RunState};

/// Temporary table for upserts, dropped before COMMIT.
const STAGING: &str = "ledgerflow_staging";

const LEDGER_COLUMNS: &str = "id, model, day, state, attempt, \"trigger\", started_at, \
                              finished_at, rows_written, fingerprint, source_layers, error";

pub struct SqliteSink {
    path: PathBuf,
    /// SQLite allows one writer; writes through one sink take turns here
    /// and other processes wait up to the busy timeout.
    conn: Arc<Mutex<Connection>>,
}

impl SqliteSink {
    /// Opens (creating it and its directory if missing) the database file.
    pub fn open(path: &Path) -> Result<SqliteSink> {
        let target = path.display().to_string();
        let fail = |e: rusqlite::Error| serving(&target, format!("cannot open: {e}"));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(fail)?;
        // WAL: readers (the dashboard) do not block the writer.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(fail)?;
        Ok(SqliteSink {
            path: path.to_owned(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on a blocking thread with the connection and the target
    /// name for messages.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let target = self.path.display().to_string();
        tokio::task::spawn_blocking(move || {
            // A panic mid-transaction rolled it back while unwinding, so the
            // connection behind a poisoned lock is still consistent.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &target)
        })
        .await
        .map_err(|e| {
            serving(
                &self.path.display().to_string(),
                format!("SQLite worker: {e}"),
            )
        })?
    }
}

fn serving(target: &str, message: String) -> Error {
    Error::Serving {
        target: target.to_owned(),
        message,
    }
}

fn sqlite_type(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int64 | DataType::Int32 | DataType::Boolean => "INTEGER",
        DataType::Float64 => "REAL",
        _ => "TEXT",
    }
}

fn quoted_list<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    names
        .into_iter()
        .map(|n| quote(n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn now_text() -> String {
    values::timestamp_text(Utc::now().timestamp_micros()).expect("the clock is within 0000-9999")
}

fn is_finished(state: RunState) -> bool {
    matches!(
        state,
        RunState::Success | RunState::Failed | RunState::Skipped
    )
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
    let fail = |e: rusqlite::Error| serving(target, format!("creating {}: {e}", req.table));
    let columns = || -> rusqlite::Result<Vec<(String, String)>> {
        let mut stmt = conn.prepare_cached("SELECT name, type FROM pragma_table_info(?1)")?;
        let rows = stmt.query_map([&req.table], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    };
    let mut existing = columns().map_err(fail)?;
    if existing.is_empty() {
        let mut defs: Vec<String> = req
            .schema
            .fields()
            .iter()
            .map(|f| {
                let not_null = if req.key.contains(f.name()) {
                    " NOT NULL"
                } else {
                    ""
                };
                format!(
                    "{} {}{not_null}",
                    quote(f.name()),
                    sqlite_type(f.data_type())
                )
            })
            .collect();
        if !req.key.is_empty() {
            defs.push(format!("PRIMARY KEY ({})", quoted_list(&req.key)));
        }
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            quote(&req.table),
            defs.join(", ")
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
        return Err(Error::SinkSchema {
            table: req.table.clone(),
            message: format!(
                "column `{}` {problem}, but the model writes {want} ({}); ledgerflow does not \
                 alter existing tables: migrate or drop it",
                field.name(),
                field.data_type()
            ),
        });
    }
    Ok(())
}

fn write(conn: &mut Connection, target: &str, req: &WriteRequest) -> Result<u64> {
    values::validate_request(req)?;
    let context = format!("writing {} for {}", req.table, req.day);
    let fail = |step: &str, e: rusqlite::Error| serving(target, format!("{context}: {step}: {e}"));
    ensure_table(conn, target, req)?;

    let table = quote(&req.table);
    let fields = req.schema.fields();
    let columns = quoted_list(fields.iter().map(|f| f.name()));
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| fail("BEGIN", e))?;
    let into = match &req.mode {
        WriteMode::ReplaceDay { column } => {
            let delete = format!("DELETE FROM {table} WHERE {} = ?1", quote(column));
            tx.execute(&delete, [req.day.to_string()])
                .map_err(|e| fail("deleting the day", e))?;
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
        for (i, batch) in req.batches.iter().enumerate() {
            let arrays = batch
                .columns()
                .iter()
                .map(|a| Column::new(a.as_ref()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| serving(target, format!("{context}: {m}")))?;
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
        WriteMode::ReplaceDay { .. } => inserted,
        WriteMode::Upsert => {
            let key = quoted_list(&req.key);
            let updates: Vec<String> = fields
                .iter()
                .filter(|f| !req.key.contains(f.name()))
                .map(|f| format!("{0} = excluded.{0}", quote(f.name())))
                .collect();
            let action = if updates.is_empty() {
                "NOTHING".to_owned()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
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

    let close = format!(
        "UPDATE {} SET state = 'success', rows_written = ?1, finished_at = ?2, error = NULL \
         WHERE id = ?3",
        quote(ledger::TABLE)
    );
    let closed = tx
        .execute(&close, params![written as i64, now_text(), req.run_id])
        .map_err(|e| fail("closing the ledger row", e))?;
    if closed != 1 {
        return Err(serving(
            target,
            format!("{context}: ledger row {} does not exist", req.run_id),
        ));
    }
    failpoint::hit_blocking("before_commit", &req.table);
    tx.commit().map_err(|e| fail("COMMIT", e))?;
    Ok(written)
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
    })
}

#[async_trait]
impl Sink for SqliteSink {
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
                    error TEXT
                );
                CREATE INDEX IF NOT EXISTS {1} ON {0} (model, day, id);",
                quote(ledger::TABLE),
                quote(&format!("{}_model_day", ledger::TABLE)),
            ))
            .map_err(|e| serving(target, format!("creating {}: {e}", ledger::TABLE)))
        })
        .await
    }

    async fn write(&self, req: WriteRequest) -> Result<u64> {
        self.run(move |conn, target| write(conn, target, &req))
            .await
    }

    async fn ledger_insert(&self, run: &NewRun) -> Result<i64> {
        let run = run.clone();
        self.run(move |conn, target| {
            let now = now_text();
            let sql = format!(
                "INSERT INTO {} (model, day, state, attempt, \"trigger\", started_at, finished_at, \
                 fingerprint, source_layers, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
                ],
            )
            .map_err(|e| {
                serving(target, format!("recording a run of {} for {}: {e}", run.model, run.day))
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
                 finished_at = coalesce(?5, finished_at), started_at = coalesce(started_at, ?6) \
                 WHERE id = ?1",
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
                    ],
                )
                .map_err(|e| serving(target, format!("updating ledger row {id}: {e}")))?;
            if updated != 1 {
                return Err(serving(target, format!("ledger row {id} does not exist")));
            }
            Ok(())
        })
        .await
    }

    async fn ledger_list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let filter = filter.clone();
        self.run(move |conn, target| {
            let fail = |e: rusqlite::Error| serving(target, format!("listing runs: {e}"));
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

    async fn last_success_fingerprint(
        &self,
        model: &str,
        day: NaiveDate,
    ) -> Result<Option<String>> {
        let model = model.to_owned();
        self.run(move |conn, target| {
            let sql = format!(
                "SELECT fingerprint FROM {} WHERE model = ?1 AND day = ?2 AND state = 'success' \
                 ORDER BY id DESC LIMIT 1",
                quote(ledger::TABLE)
            );
            conn.query_row(&sql, params![model, day.to_string()], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(|e| {
                serving(
                    target,
                    format!("reading the last run of {model} for {day}: {e}"),
                )
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Decimal128Array, Int64Array, TimestampSecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use arrow::record_batch::RecordBatch;
    use tempfile::TempDir;

    use super::*;
    use crate::sinks::values::fixtures::{self, day, Row};

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
        let conn = sink.conn.lock().unwrap();
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], f)
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// (address, n, v) of a day, ordered by address; `v` as stored (text).
    fn day_rows(sink: &SqliteSink, d: NaiveDate) -> Vec<(String, i64, String)> {
        let sql = format!("SELECT address, n, v FROM activity WHERE day = '{d}' ORDER BY address");
        query(sink, &sql, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    }

    fn expect(rows: &[Row]) -> Vec<(String, i64, String)> {
        let mut rows: Vec<_> = rows
            .iter()
            .map(|r| (r.0.unwrap().to_owned(), r.1, r.2.to_string()))
            .collect();
        rows.sort();
        rows
    }

    async fn run(sink: &SqliteSink, model: &str, d: NaiveDate) -> i64 {
        sink.ledger_insert(&fixtures::running(model, d))
            .await
            .unwrap()
    }

    async fn state(sink: &SqliteSink, id: i64) -> RunRecord {
        let all = sink.ledger_list(&RunFilter::default()).await.unwrap();
        all.into_iter().find(|r| r.id == id).unwrap()
    }

    #[tokio::test]
    async fn replace_day_is_idempotent_and_stores_exact_text() {
        let (_dir, sink) = fresh().await;
        let (d1, d2) = (day(3), day(4));
        let first = fixtures::big_rows();
        let id = run(&sink, "activity", d1).await;
        let req = fixtures::replace("activity", d1, vec![fixtures::activity(d1, &first)], id);
        assert_eq!(sink.write(req).await.unwrap(), 3);
        let other: Vec<Row> = vec![(Some("0xdd"), 9, 99)];
        let id = run(&sink, "activity", d2).await;
        let req = fixtures::replace("activity", d2, vec![fixtures::activity(d2, &other)], id);
        assert_eq!(sink.write(req).await.unwrap(), 1);

        let second: Vec<Row> = vec![(Some("0xaa"), 4, 5), (Some("0xee"), 6, 7)];
        for _ in 0..2 {
            let id = run(&sink, "activity", d1).await;
            let batches = vec![
                fixtures::activity(d1, &second[..1]),
                fixtures::activity(d1, &second[1..]),
            ];
            assert_eq!(
                sink.write(fixtures::replace("activity", d1, batches, id))
                    .await
                    .unwrap(),
                2
            );
            let rec = state(&sink, id).await;
            assert_eq!((rec.state, rec.rows_written), (RunState::Success, Some(2)));
            assert!(rec.finished_at.is_some());
        }
        assert_eq!(day_rows(&sink, d1), expect(&second));
        assert_eq!(day_rows(&sink, d2), expect(&other));

        let id = run(&sink, "activity", d1).await;
        let req = fixtures::replace("activity", d1, vec![fixtures::activity(d1, &first)], id);
        sink.write(req).await.unwrap();
        assert_eq!(day_rows(&sink, d1), expect(&first));
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

    fn upsert(rows: &[(i64, i64, Option<i128>)], run_id: i64) -> WriteRequest {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "minute",
                DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
                false,
            ),
            Field::new("block_count", DataType::Int64, false),
            Field::new("value_wei", DataType::Decimal128(38, 0), true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampSecondArray::from(rows.iter().map(|r| r.0 * 60).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(
                Decimal128Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
            ),
        ];
        WriteRequest {
            table: "dash".into(),
            key: vec!["minute".into()],
            mode: WriteMode::Upsert,
            day: day(5),
            schema: schema.clone(),
            batches: vec![RecordBatch::try_new(schema, columns).unwrap()],
            run_id,
        }
    }

    #[tokio::test]
    async fn upsert_dedupes_keys_and_the_last_row_wins() {
        let (_dir, sink) = fresh().await;
        let big = Some(1i128 << 100);
        let id = run(&sink, "dash", day(5)).await;
        let req = upsert(&[(1, 1, None), (2, 2, big), (1, 3, Some(30))], id);
        assert_eq!(sink.write(req).await.unwrap(), 2);
        let id = run(&sink, "dash", day(5)).await;
        assert_eq!(
            sink.write(upsert(&[(2, 5, Some(50)), (3, 6, big)], id))
                .await
                .unwrap(),
            2
        );
        assert_eq!(state(&sink, id).await.rows_written, Some(2));
        let rows: Vec<(String, i64, Option<String>)> = query(
            &sink,
            "SELECT minute, block_count, value_wei FROM dash ORDER BY minute",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        );
        let big = (1i128 << 100).to_string();
        assert_eq!(
            rows,
            vec![
                ("1970-01-01T00:01:00.000000Z".into(), 3, Some("30".into())),
                ("1970-01-01T00:02:00.000000Z".into(), 5, Some("50".into())),
                ("1970-01-01T00:03:00.000000Z".into(), 6, Some(big)),
            ]
        );
    }

    #[tokio::test]
    async fn a_mismatched_table_is_refused_and_left_alone() {
        let (_dir, sink) = fresh().await;
        let rows = fixtures::big_rows();
        let id = run(&sink, "activity", day(3)).await;
        let req = fixtures::replace(
            "activity",
            day(3),
            vec![fixtures::activity(day(3), &rows)],
            id,
        );
        sink.write(req).await.unwrap();

        let mut fields: Vec<Field> = fixtures::activity_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[2] = Field::new("n", DataType::Utf8, true);
        let mut req = fixtures::replace("activity", day(3), vec![], run(&sink, "a", day(3)).await);
        req.schema = Arc::new(Schema::new(fields.clone()));
        let err = sink.write(req).await.unwrap_err();
        assert!(
            matches!(&err, Error::SinkSchema { table, .. } if table == "activity"),
            "{err}"
        );
        assert!(
            err.to_string().contains("column `n` is declared INTEGER"),
            "{err}"
        );

        fields[2] = Field::new("n", DataType::Int64, true);
        fields.push(Field::new("extra", DataType::Int64, true));
        let mut req = fixtures::replace("activity", day(3), vec![], run(&sink, "a", day(3)).await);
        req.schema = Arc::new(Schema::new(fields));
        let err = sink.write(req).await.unwrap_err();
        assert!(
            err.to_string().contains("column `extra` is missing"),
            "{err}"
        );
        assert_eq!(day_rows(&sink, day(3)), expect(&rows));
    }

    #[tokio::test]
    async fn a_failed_write_keeps_the_old_day_and_the_run_open() {
        let (_dir, sink) = fresh().await;
        let rows = fixtures::big_rows();
        let id = run(&sink, "activity", day(3)).await;
        let req = fixtures::replace(
            "activity",
            day(3),
            vec![fixtures::activity(day(3), &rows)],
            id,
        );
        sink.write(req).await.unwrap();

        let id = run(&sink, "activity", day(3)).await;
        let batches = vec![
            fixtures::activity(day(3), &[(Some("0x01"), 1, 1)]),
            fixtures::activity(day(3), &[(None, 2, 2)]),
        ];
        let err = sink
            .write(fixtures::replace("activity", day(3), batches, id))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Serving { .. }), "{err}");
        assert!(err.to_string().contains("activity.address"), "{err}");
        assert_eq!(day_rows(&sink, day(3)), expect(&rows));
        assert_eq!(state(&sink, id).await.state, RunState::Running);

        let batches = vec![fixtures::activity(day(3), &[(Some("0x01"), 1, 1)])];
        let err = sink
            .write(fixtures::replace("activity", day(3), batches, 999_999))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ledger row 999999"), "{err}");
        assert_eq!(day_rows(&sink, day(3)), expect(&rows));
    }

    #[tokio::test]
    async fn ledger_records_runs() {
        let (dir, sink) = fresh().await;
        // A second handle on the same file, as another process would open it.
        let other = SqliteSink::open(&dir.path().join("nested/dir/serving.db")).unwrap();
        other.prepare().await.unwrap();

        let mut pending = fixtures::running("m", day(1));
        pending.state = RunState::Pending;
        let p = sink.ledger_insert(&pending).await.unwrap();
        let r1 = run(&sink, "m", day(1)).await;
        let r2 = run(&other, "m", day(2)).await;
        let other_model = run(&sink, "other", day(1)).await;
        assert!(state(&sink, p).await.started_at.is_none());
        let rec = state(&sink, r1).await;
        assert!(rec.started_at.is_some() && rec.finished_at.is_none());
        assert_eq!(rec.source_layers.as_deref(), Some("blocks=batch"));

        let ok = RunOutcome {
            state: RunState::Success,
            rows_written: Some(7),
            error: None,
        };
        let failed = RunOutcome {
            state: RunState::Failed,
            rows_written: None,
            error: Some("boom".into()),
        };
        sink.ledger_update(r1, &ok).await.unwrap();
        sink.ledger_update(r2, &failed).await.unwrap();
        let running = RunOutcome {
            state: RunState::Running,
            rows_written: None,
            error: None,
        };
        sink.ledger_update(p, &running).await.unwrap();
        assert!(state(&sink, p).await.started_at.is_some());
        let rec = state(&sink, r2).await;
        assert_eq!(
            (rec.state, rec.error.as_deref()),
            (RunState::Failed, Some("boom"))
        );
        assert!(rec.finished_at.unwrap() >= rec.started_at.unwrap());
        assert!(sink.ledger_update(999_999, &ok).await.is_err());

        let ids = |rs: Vec<RunRecord>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let all = sink.ledger_list(&RunFilter::default()).await.unwrap();
        assert_eq!(ids(all), vec![other_model, r2, r1, p]);
        let filter = RunFilter {
            model: Some("m".into()),
            ..Default::default()
        };
        assert_eq!(
            ids(sink.ledger_list(&filter).await.unwrap()),
            vec![r2, r1, p]
        );
        let filter = RunFilter {
            state: Some(RunState::Success),
            ..Default::default()
        };
        assert_eq!(ids(sink.ledger_list(&filter).await.unwrap()), vec![r1]);
        let filter = RunFilter {
            from: Some(day(2)),
            to: Some(day(2)),
            ..Default::default()
        };
        assert_eq!(ids(sink.ledger_list(&filter).await.unwrap()), vec![r2]);
        let filter = RunFilter {
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(
            ids(sink.ledger_list(&filter).await.unwrap()),
            vec![other_model, r2]
        );

        assert_eq!(
            sink.last_success_fingerprint("m", day(1))
                .await
                .unwrap()
                .as_deref(),
            Some("fp-m-2026-11-01")
        );
        assert_eq!(
            sink.last_success_fingerprint("m", day(2)).await.unwrap(),
            None
        );
        assert_eq!(
            sink.last_success_fingerprint("other", day(1))
                .await
                .unwrap(),
            None
        );
        assert!(sink.describe().ends_with("serving.db"));
    }
}
