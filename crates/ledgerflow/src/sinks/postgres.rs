//! The PostgreSQL sink. A write streams the batches by binary COPY into a
//! temporary staging table, then, in the same transaction, replaces the day
//! (or upserts by key) in the target table and closes the ledger row. A
//! crash before COMMIT leaves the old day; after it, the new one.
//!
//! Writers of one table are serialised by an advisory lock (a partition swap
//! needs the parent exclusively); DDL that can race between processes
//! (`CREATE .. IF NOT EXISTS` collides on `pg_type`'s unique index) runs
//! under one too.

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

use super::ident::{self, quote, quoted_list};
use super::sql::{self, is_finished, LEDGER_COLUMNS};
use super::values::{self, Column, Datum};
use super::{Sink, WriteMode, WriteRequest, CHECKPOINT_TABLE, VERSIONS_TABLE};
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

    /// One request's staging, COPY, replace or upsert, ledger row and
    /// checkpoint inside `tx`, whose caller holds the table's write lock.
    /// `n` tells apart the temp staging tables of one transaction.
    async fn write_in(&self, tx: &Transaction<'_>, req: &WriteRequest, n: usize) -> Result<u64> {
        let context = format!("writing {}.{} for {}", self.schema, req.table, req.day);
        let fail =
            |step: &str, e: &(dyn StdError + 'static)| self.fail(&format!("{context}: {step}"), e);
        let table = self.table(&req.table);
        let fields = req.schema.fields();
        let columns = quoted_list(fields.iter().map(|f| f.name()));
        let temp = format!("{STAGING}_{n}");
        if let Some(version) = req.version {
            self.claim_version(tx, req, version).await?;
        }

        // The swap's index order: the table's own, which a table created
        // before the day column went last still has.
        let swap = match swap_partitions(req) {
            Some(column) => match self.partition_key(tx, &req.table).await? {
                Some(key) => {
                    let (mut have, mut want) = (key.clone(), req.key.clone());
                    have.sort();
                    want.sort();
                    Some((column, if have == want { key } else { req.key.clone() }))
                }
                None => None,
            },
            None => None,
        };
        // A swap stages into a new regular table named after this run (the
        // transaction drops it on rollback); otherwise into a temp table.
        let staging = match swap {
            Some(_) => self.table(&format!("{}_r{}", req.table, req.run_id.unwrap_or(0))),
            None => temp.clone(),
        };
        let create = match (&swap, &req.mode) {
            // The CHECK is tested row by row as the COPY writes (a table
            // scan when added afterwards) and lets ATTACH skip its own scan.
            (Some((column, _)), _) => format!(
                "CREATE TABLE {staging} (LIKE {table} INCLUDING DEFAULTS, \
                 CHECK ({col} IS NOT NULL AND {col} >= DATE '{day}' AND {col} < DATE '{next}'))",
                col = quote(column),
                day = req.day,
                next = req.day + chrono::Days::new(1),
            ),
            (None, WriteMode::Upsert) => format!(
                "CREATE TEMP TABLE {temp} (LIKE {table}, {STAGING_SEQ} bigserial) ON COMMIT DROP"
            ),
            (None, WriteMode::ReplaceDay { .. } | WriteMode::ReplaceMinutes { .. }) => {
                format!("CREATE TEMP TABLE {temp} (LIKE {table}) ON COMMIT DROP")
            }
        };
        tx.batch_execute(&create)
            .await
            .map_err(|e| fail("creating the staging table", &e))?;
        // A staging table created in this transaction takes FREEZE: its rows
        // are written already frozen and all-visible (no hint-bit writes or
        // vacuum freeze later; the COPY itself was ~15% faster).
        let freeze = if swap.is_some() { ", FREEZE" } else { "" };
        let copy = tx
            .copy_in(&format!(
                "COPY {staging} ({columns}) FROM STDIN (FORMAT binary{freeze})"
            ))
            .await
            .map_err(|e| fail("COPY", &e))?;
        let mut copy = std::pin::pin!(copy);
        let mut buf = BytesMut::with_capacity(COPY_BUFFER);
        buf.put_slice(COPY_SIGNATURE);
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        let mut row_no = 0u64;
        for (i, batch) in req.batches.iter().enumerate() {
            let arrays = values::batch_columns(batch)
                .map_err(|m| self.message(format!("{context}: {m}")))?;
            for row in 0..batch.num_rows() {
                row_no += 1;
                put_row(&arrays, row, &mut buf).map_err(|m| {
                    self.message(format!("{context}: COPY: output row {row_no}: {m}"))
                })?;
                if buf.len() >= COPY_CHUNK {
                    let chunk = buf.split().freeze();
                    // A fresh buffer for the next chunk (the sent one may
                    // still be in flight): no regrowth by doubling.
                    buf.reserve(COPY_BUFFER);
                    copy.send(chunk).await.map_err(|e| fail("COPY", &e))?;
                }
            }
            if i == 0 {
                failpoint::hit("during_copy", &req.table).await;
            }
        }
        buf.put_i16(-1); // trailer
        copy.send(buf.split().freeze())
            .await
            .map_err(|e| fail("COPY", &e))?;
        let copied = copy.as_mut().finish().await.map_err(|e| fail("COPY", &e))?;

        let written = match (&req.mode, &swap) {
            (WriteMode::ReplaceDay { .. }, Some((_, key))) => {
                self.swap_partition(tx, req, &staging, key)
                    .await
                    .map_err(|e| fail("swapping the day's partition", &e))?;
                copied
            }
            (WriteMode::ReplaceDay { column }, _) => {
                let delete = format!("DELETE FROM {table} WHERE {} = $1", quote(column));
                tx.execute(&delete, &[&req.day])
                    .await
                    .map_err(|e| fail("deleting the day", &e))?;
                let insert =
                    format!("INSERT INTO {table} ({columns}) SELECT {columns} FROM {temp}");
                tx.execute(&insert, &[])
                    .await
                    .map_err(|e| fail("inserting", &e))?
            }
            (WriteMode::ReplaceMinutes { column, minutes }, _) => {
                let minutes: Vec<chrono::DateTime<chrono::Utc>> = minutes
                    .iter()
                    .filter_map(|&m| chrono::DateTime::from_timestamp_micros(m))
                    .collect();
                let delete = format!("DELETE FROM {table} WHERE {} = ANY($1)", quote(column));
                tx.execute(&delete, &[&minutes])
                    .await
                    .map_err(|e| fail("deleting the minutes", &e))?;
                let insert =
                    format!("INSERT INTO {table} ({columns}) SELECT {columns} FROM {temp}");
                tx.execute(&insert, &[])
                    .await
                    .map_err(|e| fail("inserting", &e))?
            }
            (WriteMode::Upsert, _) => {
                let key = quoted_list(&req.key);
                let action = sql::conflict_action(req);
                // ON CONFLICT cannot update one row twice: keep the last
                // staged row of each key.
                let upsert = format!(
                    "INSERT INTO {table} ({columns}) SELECT DISTINCT ON ({key}) {columns} \
                     FROM {temp} ORDER BY {key}, {STAGING_SEQ} DESC \
                     ON CONFLICT ({key}) DO {action}"
                );
                tx.execute(&upsert, &[])
                    .await
                    .map_err(|e| fail("upserting", &e))?
            }
        };

        if let Some(run_id) = req.run_id {
            let close = format!(
                "UPDATE {} SET state = 'success', rows_written = $1, finished_at = now(), \
                 error = NULL, version = $3 WHERE id = $2",
                self.table(ledger::TABLE)
            );
            let closed = tx
                .execute(&close, &[&(written as i64), &run_id, &req.version])
                .await
                .map_err(|e| fail("closing the ledger row", &e))?;
            if closed != 1 {
                return Err(self.message(format!("{context}: ledger row {run_id} does not exist")));
            }
        }
        if let Some(cp) = &req.checkpoint {
            let upsert = format!(
                "INSERT INTO {} (stream, position, updated_at) VALUES ($1, $2, now()) \
                 ON CONFLICT (stream) DO UPDATE SET position = excluded.position, \
                 updated_at = excluded.updated_at",
                self.table(CHECKPOINT_TABLE)
            );
            tx.execute(&upsert, &[&cp.stream, &cp.position])
                .await
                .map_err(|e| fail("storing the checkpoint", &e))?;
        }
        Ok(written)
    }

    /// "schema.a, schema.b" of the requests' tables, for messages.
    fn describe_tables(&self, reqs: &[WriteRequest]) -> String {
        let names: Vec<String> = reqs
            .iter()
            .map(|r| format!("{}.{}", self.schema, r.table))
            .collect();
        names.join(", ")
    }

    /// Records `version` as (table, day)'s, unless a greater one has
    /// committed: then the write is superseded. Called under the table's
    /// write lock, so the check and the claim cannot interleave with
    /// another writer's.
    async fn claim_version(
        &self,
        tx: &Transaction<'_>,
        req: &WriteRequest,
        version: i64,
    ) -> Result<()> {
        let versions = self.table(VERSIONS_TABLE);
        let fail = |e: tokio_postgres::Error| {
            self.fail(
                &format!("checking the version of {} for {}", req.table, req.day),
                &e,
            )
        };
        let stored: Option<i64> = tx
            .query_opt(
                &format!("SELECT version FROM {versions} WHERE tbl = $1 AND day = $2"),
                &[&req.table, &req.day],
            )
            .await
            .map_err(fail)?
            .map(|r| r.get(0));
        if let Some(by) = stored.filter(|&s| s > version) {
            return Err(Error::Superseded {
                table: req.table.clone(),
                day: req.day,
                version,
                by,
            });
        }
        tx.execute(
            &format!(
                "INSERT INTO {versions} (tbl, day, version) VALUES ($1, $2, $3) \
                 ON CONFLICT (tbl, day) DO UPDATE SET version = excluded.version"
            ),
            &[&req.table, &req.day, &version],
        )
        .await
        .map_err(fail)?;
        Ok(())
    }

    /// For a table partitioned by day, its primary key's columns in index
    /// order (a day's partition must be indexed in the same order to be
    /// attached without a second index build); `None` for a plain table.
    async fn partition_key(
        &self,
        tx: &Transaction<'_>,
        table: &str,
    ) -> Result<Option<Vec<String>>> {
        let row = tx
            .query_one(
                "SELECT c.relkind = 'p', \
                   (SELECT array_agg(a.attname::text ORDER BY k.ord) \
                    FROM pg_index i \
                    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                    WHERE i.indrelid = c.oid AND i.indisprimary) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&self.schema, &table],
            )
            .await
            .map_err(|e| self.fail(&format!("inspecting {}.{table}", self.schema), &e))?;
        let partitioned: bool = row.get(0);
        let key: Option<Vec<String>> = row.get(1);
        Ok(partitioned.then(|| key.unwrap_or_default()))
    }

    /// Turns the filled staging table into the day's partition: index it
    /// while nothing else is locked, then drop the old partition and attach
    /// the new one. The exclusive lock on the table is held only for the
    /// last two steps; all of it commits or rolls back together.
    async fn swap_partition(
        &self,
        tx: &Transaction<'_>,
        req: &WriteRequest,
        staging: &str,
        key: &[String],
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let (day, next) = (req.day, req.day + chrono::Days::new(1));
        let partition = self.table(&partition_name(&req.table, day));
        // Literal dates (from a NaiveDate, never user text): DDL takes no
        // parameters.
        tx.batch_execute(&format!(
            "ALTER TABLE {staging} ADD PRIMARY KEY ({key});
             DROP TABLE IF EXISTS {partition};
             ALTER TABLE {staging} RENAME TO {name};
             ALTER TABLE {table} ATTACH PARTITION {partition} \
               FOR VALUES FROM ('{day}') TO ('{next}');",
            key = quoted_list(key),
            name = quote(&partition_name(&req.table, day)),
            table = self.table(&req.table),
        ))
        .await
    }

    /// Creates the target table if missing, otherwise checks it has every
    /// output column with the type this sink writes. Never alters a table.
    async fn ensure_table(&self, client: &mut Client, req: &WriteRequest) -> Result<()> {
        let name = format!("{}.{}", self.schema, req.table);
        let fail = |step: &str, e: tokio_postgres::Error| self.fail(&format!("{step} {name}"), &e);
        let tx = client
            .transaction()
            .await
            .map_err(|e| fail("creating", e))?;
        self.lock(&tx, &format!("table {name}")).await?;
        let rows = tx
            .query(
                "SELECT column_name::text, data_type::text, numeric_precision::int, \
                 numeric_scale::int FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2",
                &[&self.schema, &req.table],
            )
            .await
            .map_err(|e| fail("reading the columns of", e))?;
        if rows.is_empty() {
            // One partition per day, so replacing a day is a partition swap
            // rather than a delete that leaves a day of dead index entries.
            let partitioning = match swap_partitions(req) {
                Some(column) => format!(" PARTITION BY RANGE ({})", quote(column)),
                None => String::new(),
            };
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} ({}){partitioning}",
                self.table(&req.table),
                sql::table_defs(req, &index_order(req), |t, key| {
                    PgType::of(t).key_ddl(key)
                })
            );
            tx.batch_execute(&sql)
                .await
                .map_err(|e| fail("creating", e))?;
        } else {
            let existing: HashMap<String, PgType> = rows
                .iter()
                .map(|r| {
                    let name: String = r.get(1);
                    // information_schema gives integers a precision too.
                    let numeric = (name == "numeric")
                        .then(|| r.get::<_, Option<i32>>(2).zip(r.get::<_, Option<i32>>(3)))
                        .flatten();
                    (r.get(0), PgType { name, numeric })
                })
                .collect();
            for field in req.schema.fields() {
                let want = PgType::of(field.data_type());
                let problem = match existing.get(field.name()) {
                    None => "is missing".to_owned(),
                    Some(have) if !have.holds(&want) => format!("is {}", have.ddl()),
                    Some(_) => continue,
                };
                return Err(sql::column_mismatch(name, field, &problem, want.ddl()));
            }
        }
        tx.commit().await.map_err(|e| fail("creating", e))
    }
}

async fn open(config: &Config, target: &str) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| Error::Serving {
        target: target.to_owned(),
        message: format!("cannot connect: {}", chain(&e)),
        transient: transient(&e),
    })?;
    let target = target.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("serving database {target}: connection lost: {}", chain(&e));
        }
    });
    Ok(client)
}

/// `host:port/dbname` (hosts comma-separated), without user or password.
pub(crate) fn target_of(config: &Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            Host::Unix(dir) => format!("{}:{}", dir.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{addr}:{}", port(i)))
            .collect();
    }
    // libpq's default database is the user's name.
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{}/{db}", hosts.join(","))
}

/// Whether a PostgreSQL failure is the connection's or the server's state
/// (a retry may succeed) rather than the statement's or the data's: by
/// SQLSTATE class when the server answered (08 connection, 40 rollback:
/// serialization or deadlock, 53 resources, 57 operator intervention: shut
/// down or cancelled, 58 system I/O, 55P03 lock not available), else
/// whether the connection closed or an I/O error lies beneath.
pub(crate) fn transient(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            if let Some(code) = pg.code() {
                let code = code.code();
                return ["08", "40", "53", "57", "58"].contains(&&code[..2]) || code == "55P03";
            }
            if pg.is_closed() {
                return true;
            }
        }
        if err.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// tokio-postgres errors say only "db error"; the server's message is in the
/// source chain.
pub(crate) fn chain(e: &dyn StdError) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !message.contains(&part) {
            message.push_str(": ");
            message.push_str(&part);
        }
        source = s.source();
    }
    message
}

/// A column type as `information_schema.columns` names it.
#[derive(Debug, Clone, PartialEq)]
struct PgType {
    name: String,
    /// numeric's (precision, scale); `None` for an unconstrained numeric.
    numeric: Option<(i32, i32)>,
}

impl PgType {
    fn of(data_type: &DataType) -> PgType {
        let name = match data_type {
            DataType::Int64 => "bigint",
            DataType::Int32 => "integer",
            DataType::Float64 => "double precision",
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
            DataType::Boolean => "boolean",
            DataType::Date32 => "date",
            DataType::Timestamp(..) => "timestamp with time zone",
            DataType::Decimal128(p, s) => {
                return PgType {
                    name: "numeric".into(),
                    numeric: Some((i32::from(*p), i32::from(*s))),
                }
            }
            other => unreachable!("values::validate_request refuses {other}"),
        };
        PgType {
            name: name.into(),
            numeric: None,
        }
    }

    /// Text key columns compare bytewise (`COLLATE "C"`): keys are
    /// identifiers, and only the C collation lets PostgreSQL sort them by
    /// abbreviated keys, so a day's primary-key build took ~30% less time.
    fn key_ddl(&self, key: bool) -> String {
        if key && self.name == "text" {
            "text COLLATE \"C\"".into()
        } else {
            self.ddl()
        }
    }

    fn ddl(&self) -> String {
        match self.numeric {
            Some((p, s)) => format!("{}({p},{s})", self.name),
            None => self.name.clone(),
        }
    }

    /// Whether a column of this type stores `want`'s values unchanged: the
    /// same type, and for numeric the same scale and at least the precision.
    fn holds(&self, want: &PgType) -> bool {
        self.name == want.name
            && match (self.numeric, want.numeric) {
                (None, _) => true,
                (Some((p, s)), Some((wp, ws))) => s == ws && p >= wp,
                (Some(_), None) => false,
            }
    }
}

/// Binary COPY framing (PostgreSQL's "COPY ... Binary Format"): this
/// signature, 32-bit flags and header-extension length, then per row a
/// 16-bit field count and per field a 32-bit length (-1: NULL) and the
/// value in its binary send format, then a 16-bit -1.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Bytes per CopyData message. tokio-postgres's `BinaryCopyInWriter` sends
/// every 4 KiB: for a day of user activity (~100 MB) that is 25 k messages
/// handed to the connection task on the other core, and the COPY was bound
/// by that client side; 1 MiB chunks leave the encoding loop to itself.
const COPY_CHUNK: usize = 1 << 20;
/// A chunk's buffer: room for the chunk and the row that crosses its end.
const COPY_BUFFER: usize = COPY_CHUNK + (64 << 10);

/// One row of a batch, encoded straight from the Arrow arrays into the COPY
/// buffer: no per-row allocation.
fn put_row(columns: &[Column<'_>], row: usize, out: &mut BytesMut) -> Result<(), String> {
    out.put_i16(columns.len() as i16);
    for column in columns {
        let at = out.len();
        out.put_i32(0);
        let len = if put_cell(column, row, out).map_err(|e| e.to_string())? {
            (out.len() - at - 4) as i32
        } else {
            -1
        };
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// Writes one value in its binary send format; false for NULL.
fn put_cell(column: &Column<'_>, row: usize, out: &mut BytesMut) -> Result<bool, BoxError> {
    match column.value(row)? {
        Datum::Null => return Ok(false),
        Datum::Int64(v) => out.put_i64(v),
        Datum::Int32(v) => out.put_i32(v),
        Datum::Float64(v) => out.put_f64(v),
        Datum::Text(v) => out.put_slice(v.as_bytes()),
        Datum::Boolean(v) => out.put_u8(v.into()),
        Datum::Date(days) => {
            out.put_i32(days.checked_sub(PG_EPOCH_DAYS).ok_or("date out of range")?)
        }
        Datum::Timestamp(micros) => out.put_i64(
            micros
                .checked_sub(PG_EPOCH_MICROS)
                .ok_or("timestamp out of range")?,
        ),
        Datum::Decimal(v, scale) => put_numeric(v, scale.into(), out)?,
    }
    Ok(true)
}

/// An exact NUMERIC: `unscaled * 10^-scale`. postgres-types has no exact
/// numeric type; this one carries DECIMAL(38, s) values both ways.
/// Read back, `scale` is the value's display scale (the column's scale for a
/// constrained `numeric(p, s)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgNumeric(pub i128, pub i16);

impl fmt::Display for PgNumeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&values::decimal_text(self.0, self.1))
    }
}

impl ToSql for PgNumeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        put_numeric(self.0, self.1, out)?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgNumeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        get_numeric(raw)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_MAX_DSCALE: i16 = 0x3FFF;

/// Binary NUMERIC: ndigits, weight, sign, dscale (i16/i16/u16/u16), then
/// base-10000 digits, most significant first; digit `k` is worth
/// `10000^(weight - k)`, so the groups align on the decimal point.
fn put_numeric(unscaled: i128, scale: i16, out: &mut BytesMut) -> Result<(), BoxError> {
    if !(-NUMERIC_MAX_DSCALE..=NUMERIC_MAX_DSCALE).contains(&scale) {
        return Err(format!("numeric scale {scale} is out of range").into());
    }
    if scale % 4 == 0 {
        put_numeric_aligned(unscaled, scale, out);
        return Ok(());
    }
    let dscale = scale.max(0) as u16;
    // Decimal digits of |unscaled|, least significant first: digits[i] is
    // worth 10^(i - scale).
    let parts = split_u64(unscaled.unsigned_abs(), 10_000_000_000_000_000_000);
    let mut digits = [0u8; 57];
    for (k, mut part) in parts.into_iter().enumerate() {
        for d in &mut digits[k * 19..(k + 1) * 19] {
            *d = (part % 10) as u8;
            part /= 10;
        }
    }
    let n = digits.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
    if n == 0 {
        out.put_slice(&[0, 0, 0, 0, 0, 0]);
        out.put_u16(dscale);
        return Ok(());
    }
    let scale = i32::from(scale);
    let digit = |power: i32| {
        usize::try_from(power + scale)
            .ok()
            .filter(|&i| i < n)
            .map_or(0, |i| i16::from(digits[i]))
    };
    // Group g holds the powers 4g..4g+3.
    let group = |g: i32| {
        (0..4)
            .rev()
            .fold(0i16, |acc, j| acc * 10 + digit(4 * g + j))
    };
    let top = (n as i32 - 1 - scale).div_euclid(4);
    let mut bottom = (-scale).div_euclid(4);
    // Terminates: the top group holds the leading non-zero digit.
    while group(bottom) == 0 {
        bottom += 1;
    }
    out.put_i16((top - bottom + 1) as i16);
    out.put_i16(top as i16);
    out.put_u16(if unscaled < 0 { NUMERIC_NEG } else { 0 });
    out.put_u16(dscale);
    for g in (bottom..=top).rev() {
        out.put_i16(group(g));
    }
    Ok(())
}

/// `mag` as three digits in base `base` (10^16 or 10^19), least
/// significant first. u128 division is a slow library call: at most two
/// of them, the rest is u64 arithmetic.
fn split_u64(mag: u128, base: u64) -> [u64; 3] {
    match u64::try_from(mag) {
        Ok(m) => [m % base, m / base, 0],
        Err(_) => {
            let (b, high) = (u128::from(base), mag / u128::from(base));
            [(mag % b) as u64, (high % b) as u64, (high / b) as u64]
        }
    }
}

/// [`put_numeric`] for a scale that is a multiple of 4 (wei: scale 0): the
/// base-10000 digits of |unscaled| are the NUMERIC's digits as they are, so
/// they come straight from u64 divisions (a day's COPY encodes millions).
fn put_numeric_aligned(unscaled: i128, scale: i16, out: &mut BytesMut) {
    // Up to 39 decimal digits: three parts of 16 digits, 12 groups of 4.
    let parts = split_u64(unscaled.unsigned_abs(), 10_000_000_000_000_000);
    // Least significant first.
    let mut groups = [0u16; 12];
    for (k, mut part) in parts.into_iter().enumerate() {
        for g in &mut groups[4 * k..4 * k + 4] {
            *g = (part % 10_000) as u16;
            part /= 10_000;
        }
    }
    let dscale = scale.max(0) as u16;
    let (Some(top), Some(bottom)) = (
        groups.iter().rposition(|&g| g != 0),
        groups.iter().position(|&g| g != 0),
    ) else {
        out.put_slice(&[0, 0, 0, 0, 0, 0]);
        out.put_u16(dscale);
        return;
    };
    out.put_i16((top - bottom + 1) as i16);
    out.put_i16(top as i16 - scale / 4);
    out.put_u16(if unscaled < 0 { NUMERIC_NEG } else { 0 });
    out.put_u16(dscale);
    for &g in groups[bottom..=top].iter().rev() {
        out.put_u16(g);
    }
}

fn get_numeric(mut raw: &[u8]) -> Result<PgNumeric, BoxError> {
    if raw.len() < 8 {
        return Err("numeric: value too short".into());
    }
    let ndigits = raw.get_i16();
    let weight = i32::from(raw.get_i16());
    let negative = match raw.get_u16() {
        0 => false,
        NUMERIC_NEG => true,
        _ => return Err("numeric: NaN and infinity have no exact value".into()),
    };
    let dscale = raw.get_u16();
    if usize::try_from(ndigits).map_or(true, |n| n * 2 != raw.len()) {
        return Err("numeric: digit count does not match the value's length".into());
    }
    let overflow = || -> BoxError { "numeric: value does not fit in 128 bits".into() };
    let mut value: i128 = 0;
    for k in 0..i32::from(ndigits) {
        let d = i128::from(raw.get_i16());
        if !(0..10_000).contains(&d) {
            return Err(format!("numeric: invalid base-10000 digit {d}").into());
        }
        if d == 0 {
            continue;
        }
        let exp = 4 * (weight - k) + i32::from(dscale);
        let term = if exp >= 0 {
            10i128
                .checked_pow(exp as u32)
                .and_then(|p| d.checked_mul(p))
                .ok_or_else(overflow)?
        } else {
            let p = 10i128.pow((-exp).min(4) as u32);
            if -exp > 4 || d % p != 0 {
                return Err("numeric: more fractional digits than its scale".into());
            }
            d / p
        };
        value = value.checked_add(term).ok_or_else(overflow)?;
    }
    Ok(PgNumeric(
        if negative { -value } else { value },
        dscale as i16,
    ))
}

fn record(row: &Row) -> Result<RunRecord, BoxError> {
    let state: String = row.try_get(3)?;
    Ok(RunRecord {
        id: row.try_get(0)?,
        model: row.try_get(1)?,
        day: row.try_get(2)?,
        state: RunState::parse(&state).ok_or_else(|| format!("unknown state `{state}`"))?,
        attempt: row.try_get(4)?,
        trigger: row.try_get(5)?,
        started_at: row.try_get(6)?,
        finished_at: row.try_get(7)?,
        rows_written: row.try_get(8)?,
        fingerprint: row.try_get(9)?,
        source_layers: row.try_get(10)?,
        error: row.try_get(11)?,
        owner: row.try_get(12)?,
    })
}

#[async_trait]
impl Sink for PostgresSink {
    fn describe(&self) -> String {
        format!("PostgreSQL {} (schema {})", self.target, self.schema)
    }

    async fn prepare(&self) -> Result<()> {
        let ledger = self.table(ledger::TABLE);
        let fail = |e: tokio_postgres::Error| self.fail(&format!("creating {ledger}"), &e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(fail)?;
        self.lock(&tx, &format!("prepare {}", self.schema)).await?;
        // CREATE SCHEMA checks the CREATE privilege even when the schema
        // exists; a user that may only use an existing schema must not fail.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&self.schema],
            )
            .await
            .map_err(fail)?
            .is_some();
        if !exists {
            let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&self.schema));
            tx.batch_execute(&sql).await.map_err(fail)?;
        }
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {ledger} (
                id bigserial PRIMARY KEY,
                model text NOT NULL,
                day date NOT NULL,
                state text NOT NULL,
                attempt integer NOT NULL,
                \"trigger\" text NOT NULL,
                started_at timestamptz,
                finished_at timestamptz,
                rows_written bigint,
                fingerprint text,
                source_layers text,
                error text,
                owner text,
                version bigint,
                heartbeat_at timestamptz
            );
            CREATE INDEX IF NOT EXISTS {} ON {ledger} (model, day, id);
            CREATE TABLE IF NOT EXISTS {} (
                stream text PRIMARY KEY,
                position text NOT NULL,
                updated_at timestamptz NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {} (
                tbl text NOT NULL,
                day date NOT NULL,
                version bigint NOT NULL,
                PRIMARY KEY (tbl, day)
            );
            CREATE SEQUENCE IF NOT EXISTS {};",
            quote(&format!("{}_model_day", ledger::TABLE)),
            self.table(CHECKPOINT_TABLE),
            self.table(VERSIONS_TABLE),
            self.table(VERSION_SEQ),
        ))
        .await
        .map_err(fail)?;
        // Ledgers made before these columns existed gain them. Checked
        // first: ALTER TABLE takes an exclusive lock even when the column
        // exists, and would queue behind every running write.
        for (column, ty) in [("version", "bigint"), ("heartbeat_at", "timestamptz")] {
            let has = tx
                .query_opt(
                    "SELECT 1 FROM information_schema.columns \
                     WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
                    &[&self.schema, &ledger::TABLE, &column],
                )
                .await
                .map_err(fail)?
                .is_some();
            if !has {
                tx.batch_execute(&format!("ALTER TABLE {ledger} ADD COLUMN {column} {ty}"))
                    .await
                    .map_err(fail)?;
            }
        }
        tx.commit().await.map_err(fail)
    }

    async fn write_all(&self, reqs: Vec<WriteRequest>) -> Result<Vec<u64>> {
        for req in &reqs {
            values::validate_request(req)?;
        }
        let Some(first) = reqs.first() else {
            return Ok(Vec::new());
        };
        let context = format!("writing {} for {}", self.describe_tables(&reqs), first.day);
        let fail =
            |step: &str, e: &(dyn StdError + 'static)| self.fail(&format!("{context}: {step}"), e);
        // A session of its own: the shared one stays free for ledger
        // updates, so other models' runs proceed while this COPY does.
        let mut client = open(&self.config, &self.target).await?;
        for req in &reqs {
            self.ensure_table(&mut client, req).await?;
        }
        let tx = client.transaction().await.map_err(|e| fail("begin", &e))?;
        // One writer per table at a time: a partition swap needs an exclusive
        // lock on the parent, which two writers of different days holding
        // share locks on it (from CREATE TABLE .. LIKE) would deadlock on.
        // Several tables are locked in name order, the same in every writer.
        let mut tables: Vec<&str> = reqs.iter().map(|r| r.table.as_str()).collect();
        tables.sort_unstable();
        tables.dedup();
        for table in tables {
            self.lock(&tx, &format!("write {}.{}", self.schema, table))
                .await?;
        }
        let mut written = Vec::with_capacity(reqs.len());
        for (n, req) in reqs.iter().enumerate() {
            written.push(self.write_in(&tx, req, n).await?);
        }
        for req in &reqs {
            failpoint::hit("before_commit", &req.table).await;
        }
        tx.commit().await.map_err(|e| fail("COMMIT", &e))?;
        Ok(written)
    }

    async fn next_version(&self) -> Result<i64> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT nextval($1::text::regclass)",
                &[&self.table(VERSION_SEQ)],
            )
            .await
            .map_err(|e| self.fail("drawing a write version", &e))?;
        Ok(row.get(0))
    }

    async fn ledger_insert(&self, run: &NewRun) -> Result<i64> {
        let sql = format!(
            "INSERT INTO {} (model, day, state, attempt, \"trigger\", started_at, finished_at, \
             fingerprint, source_layers, error, owner, heartbeat_at) VALUES ($1, $2, $3, $4, $5, \
             CASE WHEN $6 THEN now() END, CASE WHEN $7 THEN now() END, $8, $9, $10, $11, now()) \
             RETURNING id",
            self.table(ledger::TABLE)
        );
        let row = self
            .client()
            .await?
            .query_one(
                &sql,
                &[
                    &run.model,
                    &run.day,
                    &run.state.as_str(),
                    &run.attempt,
                    &run.trigger,
                    &(run.state == RunState::Running),
                    &is_finished(run.state),
                    &run.fingerprint,
                    &run.source_layers,
                    &run.error,
                    &run.owner,
                ],
            )
            .await
            .map_err(|e| {
                self.fail(
                    &format!("recording a run of {} for {}", run.model, run.day),
                    &e,
                )
            })?;
        Ok(row.get(0))
    }

    async fn ledger_update(&self, id: i64, outcome: &RunOutcome) -> Result<()> {
        let sql = format!(
            "UPDATE {} SET state = $2, rows_written = $3, error = $4, \
             finished_at = CASE WHEN $5 THEN now() ELSE finished_at END, \
             started_at = CASE WHEN $6 THEN coalesce(started_at, now()) ELSE started_at END, \
             fingerprint = coalesce($7, fingerprint), source_layers = coalesce($8, source_layers), \
             heartbeat_at = now() \
             WHERE id = $1 AND state IN ('pending', 'running')",
            self.table(ledger::TABLE)
        );
        let client = self.client().await?;
        let updated = client
            .execute(
                &sql,
                &[
                    &id,
                    &outcome.state.as_str(),
                    &outcome.rows_written,
                    &outcome.error,
                    &is_finished(outcome.state),
                    &(outcome.state == RunState::Running),
                    &outcome.fingerprint,
                    &outcome.source_layers,
                ],
            )
            .await
            .map_err(|e| self.fail(&format!("updating ledger row {id}"), &e))?;
        // A closed row stays closed (a late cancellation must not turn a
        // committed success into a failure); a missing one is an error.
        if updated == 0 {
            let exists = client
                .query_opt(
                    &format!("SELECT 1 FROM {} WHERE id = $1", self.table(ledger::TABLE)),
                    &[&id],
                )
                .await
                .map_err(|e| self.fail(&format!("reading ledger row {id}"), &e))?
                .is_some();
            if !exists {
                return Err(self.message(format!("ledger row {id} does not exist")));
            }
        }
        Ok(())
    }

    async fn ledger_heartbeat(&self, ids: &[i64]) -> Result<()> {
        let sql = format!(
            "UPDATE {ledger} SET heartbeat_at = now() WHERE id IN (\
             SELECT id FROM {ledger} WHERE id = ANY($1) AND state IN ('pending', 'running') \
             FOR UPDATE SKIP LOCKED)",
            ledger = self.table(ledger::TABLE)
        );
        // SKIP LOCKED: a row a write transaction holds is being closed by
        // it; waiting for it would stall every other row's heartbeat.
        self.client()
            .await?
            .execute(&sql, &[&ids])
            .await
            .map_err(|e| self.fail("renewing the runs' heartbeat", &e))?;
        Ok(())
    }

    async fn ledger_expired(&self, lease: std::time::Duration) -> Result<Vec<i64>> {
        let sql = format!(
            "SELECT id FROM {} WHERE state IN ('pending', 'running') \
             AND coalesce(heartbeat_at, started_at) < now() - make_interval(secs => $1) \
             ORDER BY id",
            self.table(ledger::TABLE)
        );
        let rows = self
            .client()
            .await?
            .query(&sql, &[&lease.as_secs_f64()])
            .await
            .map_err(|e| self.fail("listing expired runs", &e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn ledger_list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {LEDGER_COLUMNS} FROM {} \
             WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR state = $2) \
             AND ($3::date IS NULL OR day >= $3) AND ($4::date IS NULL OR day <= $4) \
             ORDER BY id DESC LIMIT $5",
            self.table(ledger::TABLE)
        );
        let rows = self
            .client()
            .await?
            .query(
                &sql,
                &[
                    &filter.model,
                    &filter.state.map(RunState::as_str),
                    &filter.from,
                    &filter.to,
                    &filter.limit,
                ],
            )
            .await
            .map_err(|e| self.fail("listing runs", &e))?;
        rows.iter()
            .map(|r| record(r).map_err(|e| self.fail("reading the ledger", e.as_ref())))
            .collect()
    }

    async fn checkpoint(&self, stream: &str) -> Result<Option<String>> {
        let sql = format!(
            "SELECT position FROM {} WHERE stream = $1",
            self.table(CHECKPOINT_TABLE)
        );
        let client = self.client().await?;
        let row = client
            .query_opt(&sql, &[&stream])
            .await
            .map_err(|e| self.fail(&format!("reading checkpoint `{stream}`"), &e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn last_success_fingerprint(
        &self,
        model: &str,
        day: NaiveDate,
    ) -> Result<Option<String>> {
        let sql = format!(
            "SELECT fingerprint FROM {} WHERE model = $1 AND day = $2 AND state = 'success' \
             ORDER BY version DESC NULLS LAST, id DESC LIMIT 1",
            self.table(ledger::TABLE)
        );
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&model, &day])
            .await
            .map_err(|e| self.fail(&format!("reading the last run of {model} for {day}"), &e))?;
        Ok(row.and_then(|r| r.get(0)))
    }
}

/// The primary key's columns in the order its index sorts them. For a
/// table swapped by day the day column goes last: it is constant within a
/// partition, and PostgreSQL abbreviates only a sort's first column, so a
/// day's index build then compares abbreviated addresses (~30% faster for
/// a day of user activity) instead of equal days and then whole strings.
fn index_order(req: &WriteRequest) -> Vec<String> {
    match swap_partitions(req) {
        Some(column) => {
            let mut key: Vec<String> = req.key.iter().filter(|k| *k != column).cloned().collect();
            key.push(column.to_owned());
            key
        }
        None => req.key.clone(),
    }
}

/// The column a replace-day table is partitioned by: its day column, when
/// that is part of the key (PostgreSQL requires it) and the partition names
/// fit in 63 bytes. Other tables replace by delete + insert.
fn swap_partitions(req: &WriteRequest) -> Option<&str> {
    match &req.mode {
        WriteMode::ReplaceDay { column }
            if req.key.contains(column)
                && req.table.len() + "_r".len() + 20 <= super::ident::MAX_LEN =>
        {
            Some(column)
        }
        _ => None,
    }
}

/// `<table>_pYYYYMMDD`.
fn partition_name(table: &str, day: chrono::NaiveDate) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use arrow::datatypes::Field;
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::sinks::suite::{self, Reader};
    use crate::sinks::values::fixtures::{self, day};

    fn url() -> String {
        std::env::var("LEDGERFLOW_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// A sink on a schema of its own, prepared; drop it with [`cleanup`].
    async fn fresh() -> PostgresSink {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "t_{}_{nanos}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let sink = PostgresSink::connect(&url(), &schema).await.unwrap();
        sink.prepare().await.unwrap();
        sink
    }

    async fn cleanup(sink: PostgresSink) {
        execute(
            &sink,
            &format!("DROP SCHEMA {} CASCADE", quote(&sink.schema)),
        )
        .await;
    }

    async fn execute(sink: &PostgresSink, sql: &str) {
        sink.client()
            .await
            .unwrap()
            .batch_execute(sql)
            .await
            .unwrap();
    }

    async fn query(sink: &PostgresSink, sql: &str) -> Vec<Row> {
        sink.client().await.unwrap().query(sql, &[]).await.unwrap()
    }

    /// `v` and `value_wei` as [`PgNumeric`] text: the value and its scale.
    #[async_trait]
    impl Reader for PostgresSink {
        async fn day_rows(&self, table: &str, d: NaiveDate) -> Vec<(String, i64, String)> {
            let sql = format!(
                "SELECT address, n, v FROM {} WHERE day = $1 ORDER BY address",
                self.table(table)
            );
            let client = self.client().await.unwrap();
            let rows = client.query(&sql, &[&d]).await.unwrap();
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get::<_, PgNumeric>(2).to_string()))
                .collect()
        }

        async fn minute_rows(&self, table: &str) -> Vec<(String, i64, Option<String>)> {
            let sql = format!(
                "SELECT minute, block_count, value_wei FROM {} ORDER BY minute",
                self.table(table)
            );
            query(self, &sql)
                .await
                .iter()
                .map(|r| {
                    let minute = r.get::<_, DateTime<Utc>>(0).timestamp_micros();
                    (
                        values::timestamp_text(minute).unwrap(),
                        r.get(1),
                        r.get::<_, Option<PgNumeric>>(2).map(|n| n.to_string()),
                    )
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn numeric_round_trips_exactly() {
        let sink = PostgresSink::connect(&url(), "public").await.unwrap();
        let client = sink.client().await.unwrap();
        let max = 10i128.pow(38) - 1;
        let cases = [
            (0, 0, "0"),
            (1, 0, "1"),
            (-1, 0, "-1"),
            (10_000, 0, "10000"),
            ((1 << 64) + 1, 0, "18446744073709551617"),
            (10i128.pow(37), 0, "10000000000000000000000000000000000000"),
            (max, 0, "99999999999999999999999999999999999999"),
            (-max, 0, "-99999999999999999999999999999999999999"),
            (-(10i128.pow(30)), 0, "-1000000000000000000000000000000"),
            (12345, 2, "123.45"),
            (-5, 3, "-0.005"),
            (1, 4, "0.0001"),
            (10_000_001, 4, "1000.0001"),
            (0, 2, "0.00"),
            (max, 38, "0.99999999999999999999999999999999999999"),
            (10i128.pow(16), 0, "10000000000000000"),
            (1_234_567_000_000_000, 8, "12345670.00000000"),
            (i128::MAX, 0, "170141183460469231731687303715884105727"),
            (-7, 12, "-0.000000000007"),
        ];
        for (value, scale, text) in cases {
            let n = PgNumeric(value, scale);
            assert_eq!(n.to_string(), text);
            // Ours -> server, and the server's own encoding of the text -> ours.
            let row = client
                .query_one("SELECT $1::numeric::text, $2::text::numeric", &[&n, &text])
                .await
                .unwrap();
            assert_eq!(
                row.get::<_, String>(0),
                text,
                "encoding {value} scale {scale}"
            );
            assert_eq!(row.get::<_, PgNumeric>(1), n, "decoding {text}");
        }
        // A negative scale, on both encoding paths (scale % 4 == 0 or not).
        for (n, text) in [
            (PgNumeric(123, -2), "12300"),
            (PgNumeric(-123_456_789, -4), "-1234567890000"),
        ] {
            let row = client
                .query_one("SELECT $1::numeric::text", &[&n])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), text);
        }
        // A constrained column reports its scale.
        let row = client
            .query_one("SELECT 7::numeric(10,3)", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, PgNumeric>(0), PgNumeric(7000, 3));
        let err = client
            .query_one("SELECT 'NaN'::numeric", &[])
            .await
            .unwrap();
        assert!(err.try_get::<_, PgNumeric>(0).is_err());
    }

    #[tokio::test]
    async fn replace_day_is_idempotent_and_touches_only_its_day() {
        let sink = fresh().await;
        suite::replace_day_is_idempotent_and_touches_only_its_day(&sink, &sink).await;

        // Every type, read back.
        let sql = format!(
            "SELECT i, f, b, amt, ts, ts_ns, day FROM {} WHERE address = '0xbb'",
            sink.table("activity")
        );
        let row = &query(&sink, &sql).await[0];
        let ts = DateTime::<Utc>::from_timestamp_micros(fixtures::ts_micros(2)).unwrap();
        assert_eq!(row.get::<_, i32>(0), 2);
        assert_eq!(row.get::<_, f64>(1), 2.5);
        assert!(row.get::<_, bool>(2));
        assert_eq!(row.get::<_, PgNumeric>(3), PgNumeric(fixtures::amt(2), 2));
        assert_eq!(row.get::<_, DateTime<Utc>>(4), ts);
        assert_eq!(row.get::<_, DateTime<Utc>>(5), ts);
        assert_eq!(row.get::<_, NaiveDate>(6), day(3));
        let sql = format!(
            "SELECT string_agg(column_name || ' ' || data_type || coalesce('(' || \
             numeric_precision || ',' || numeric_scale || ')', '') || ' ' || is_nullable, '; ' \
             ORDER BY ordinal_position) FROM information_schema.columns \
             WHERE table_schema = '{}' AND table_name = 'activity'",
            sink.schema
        );
        let ddl: String = query(&sink, &sql).await[0].get(0);
        assert!(
            ddl.starts_with(
                "day date NO; address text NO; n bigint(64,0) YES; i integer(32,0) YES"
            ),
            "{ddl}"
        );
        assert!(
            ddl.contains(
                "v numeric(38,0) YES; amt numeric(20,2) YES; ts timestamp with time zone YES"
            ),
            "{ddl}"
        );
        cleanup(sink).await;
    }

    /// `(relation, index definition)` of every index on `prefix*` tables.
    async fn indexes(sink: &PostgresSink, prefix: &str) -> Vec<(String, String)> {
        let sql = format!(
            "SELECT c.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = '{}' AND c.relname LIKE '{prefix}%' ORDER BY 1, 2",
            sink.schema
        );
        let rows = query(sink, &sql).await;
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    async fn replace_day(sink: &PostgresSink, table: &str, d: NaiveDate, rows: &[fixtures::Row]) {
        let id = sink
            .ledger_insert(&fixtures::running(table, d))
            .await
            .unwrap();
        let req = fixtures::replace(table, d, vec![fixtures::activity(d, rows)], id);
        assert_eq!(sink.write(req).await.unwrap(), rows.len() as u64);
    }

    #[tokio::test]
    async fn a_day_partition_is_indexed_day_last_and_older_tables_keep_their_order() {
        let sink = fresh().await;
        for _ in 0..2 {
            replace_day(&sink, "activity", day(3), &fixtures::big_rows()).await;
        }
        let found = indexes(&sink, "activity").await;
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, "activity");
        assert_eq!(found[1].0, "activity_p20261103");
        for (_, def) in &found {
            assert!(def.ends_with("USING btree (address, day)"), "{def}");
        }

        // A table created with the day first (as before) keeps that order:
        // the day's partition is indexed once, in the table's order.
        let (activity, legacy) = (sink.table("activity"), sink.table("legacy"));
        let sql = format!(
            "CREATE TABLE {legacy} (LIKE {activity}, PRIMARY KEY (day, address)) \
             PARTITION BY RANGE (day)"
        );
        execute(&sink, &sql).await;
        replace_day(&sink, "legacy", day(3), &fixtures::big_rows()).await;
        let second: Vec<fixtures::Row> = vec![(Some("0xee"), 6, 7)];
        replace_day(&sink, "legacy", day(3), &second).await;
        let found = indexes(&sink, "legacy").await;
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[1].0, "legacy_p20261103");
        for (_, def) in &found {
            assert!(def.ends_with("USING btree (day, address)"), "{def}");
        }
        assert_eq!(sink.day_rows("legacy", day(3)).await.len(), 1);
        cleanup(sink).await;
    }

    #[tokio::test]
    async fn a_copy_of_several_chunks_arrives_whole() {
        let sink = fresh().await;
        // 20 k rows of ~190 bytes: several COPY_CHUNKs.
        let rows: Vec<fixtures::Row> = (0..20_000i64)
            .map(|i| {
                let address: &'static str = Box::leak(format!("0x{i:0>64}").into_boxed_str());
                (Some(address), i, i128::from(i) << 70)
            })
            .collect();
        replace_day(&sink, "activity", day(3), &rows).await;
        let sql = format!(
            "SELECT count(*), sum(n)::bigint, sum(v)::text, max(address) FROM {}",
            sink.table("activity")
        );
        let row = &query(&sink, &sql).await[0];
        let n: i64 = (0..20_000).sum();
        assert_eq!(row.get::<_, i64>(0), 20_000);
        assert_eq!(row.get::<_, i64>(1), n);
        assert_eq!(row.get::<_, String>(2), (i128::from(n) << 70).to_string());
        assert_eq!(row.get::<_, String>(3), format!("0x{:0>64}", 19_999));
        cleanup(sink).await;
    }

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_one() {
        let sink = fresh().await;
        suite::an_older_version_never_replaces_a_newer_one(&sink, &sink).await;
        cleanup(sink).await;
    }

    #[tokio::test]
    async fn upsert_dedupes_keys_and_the_last_row_wins() {
        let sink = fresh().await;
        suite::upsert_dedupes_keys_and_the_last_row_wins(&sink, &sink).await;
        cleanup(sink).await;
    }

    #[tokio::test]
    async fn a_mismatched_table_is_refused_and_left_alone() {
        let sink = fresh().await;
        let table = format!("{}.activity", sink.schema);
        let n_as_text = "column `n` is bigint";
        suite::a_mismatched_table_is_refused_and_left_alone(&sink, &sink, &table, n_as_text).await;

        // Narrower decimals fit a wider column; another scale does not.
        let mut fields = suite::activity_fields();
        fields[7] = Field::new("amt", DataType::Decimal128(20, 3), true);
        let err = suite::refused(&sink, fields).await;
        assert!(
            err.to_string().contains("column `amt` is numeric(20,2)"),
            "{err}"
        );
        let rows = suite::expect(&fixtures::big_rows());
        assert_eq!(sink.day_rows("activity", day(3)).await, rows);
        cleanup(sink).await;
    }

    #[tokio::test]
    async fn a_failed_write_keeps_the_old_day_and_the_run_open() {
        let sink = fresh().await;
        suite::a_failed_write_keeps_the_old_day_and_the_run_open(&sink, &sink, "address").await;
        cleanup(sink).await;
    }

    #[tokio::test]
    async fn ledger_records_runs() {
        let sink = fresh().await;
        // A second process preparing the same schema at the same time.
        let other = PostgresSink::connect(&url(), &sink.schema).await.unwrap();
        let (a, b) = tokio::join!(sink.prepare(), other.prepare());
        a.unwrap();
        b.unwrap();
        suite::ledger_records_runs(&sink, &other).await;
        cleanup(sink).await;
    }

    #[tokio::test]
    async fn connection_errors_name_the_target_but_not_the_password() {
        let err = PostgresSink::connect("postgres://me:s3cret@127.0.0.1:1/ledger", "public")
            .await
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:1/ledger"), "{text}");
        assert!(text.contains("refused"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        let err = PostgresSink::connect("postgres://me:s3cret@127.0.0.1:1/ledger", "bad-name")
            .await
            .err()
            .unwrap();
        assert!(!err.to_string().contains("s3cret"));
    }
}
