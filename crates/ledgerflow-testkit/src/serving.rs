//! The serving database of a test: its own PostgreSQL schema (dropped after)
//! or a SQLite file in the project dir, and readers that turn metric tables
//! back into the reference rows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{DateTime, NaiveDate, Utc};
use ledgerflow::sinks::postgres::PgNumeric;
use ledgerflow::sinks::values::parse_decimal;
use tokio_postgres::{Client, NoTls};

use crate::reference::{approx_eq, BlockDailyMetrics, RealtimeMinute, UserActivity};

pub const PG_URL_ENV: &str = "LEDGERFLOW_TEST_PG_URL";
pub const PG_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn pg_url() -> String {
    std::env::var(PG_URL_ENV).unwrap_or_else(|_| PG_URL_DEFAULT.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    Sqlite,
    Postgres,
}

pub enum TestDb {
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        url: String,
        schema: String,
        client: Client,
    },
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub async fn pg_connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(conn);
    client
}

impl TestDb {
    pub async fn create(serving: Serving, dir: &Path) -> TestDb {
        match serving {
            Serving::Sqlite => TestDb::Sqlite {
                path: dir.join("serving.db"),
            },
            Serving::Postgres => {
                let url = pg_url();
                let nanos = Utc::now().timestamp_subsec_nanos();
                let schema = format!(
                    "lf_t{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst),
                    nanos
                );
                let client = pg_connect(&url).await;
                TestDb::Postgres {
                    url,
                    schema,
                    client,
                }
            }
        }
    }

    /// ledgerflow.toml lines for `[serving]`.
    pub fn serving_toml(&self) -> String {
        match self {
            TestDb::Sqlite { .. } => "url = \"sqlite://serving.db\"".into(),
            TestDb::Postgres { url, .. } => format!("url = \"{url}\""),
        }
    }

    pub fn schema(&self) -> &str {
        match self {
            TestDb::Sqlite { .. } => "main",
            TestDb::Postgres { schema, .. } => schema,
        }
    }

    pub async fn drop(self) {
        if let TestDb::Postgres { schema, client, .. } = &self {
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .expect("drop test schema");
        }
    }

    /// Runs `sql` (statements separated by `;`) in the test's schema.
    pub async fn execute(&self, sql: &str) {
        match self {
            TestDb::Postgres { schema, client, .. } => client
                .batch_execute(&format!("SET search_path TO \"{schema}\"; {sql}"))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            TestDb::Sqlite { .. } => self
                .sqlite()
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    fn sqlite(&self) -> rusqlite::Connection {
        let TestDb::Sqlite { path } = self else {
            unreachable!("sqlite only")
        };
        rusqlite::Connection::open(path).expect("open sqlite")
    }

    /// Every row of a table as text, sorted: for whole-table equality.
    /// `except` columns (like `updated_at`) are left out.
    pub async fn dump(&self, table: &str, except: &[&str]) -> Vec<String> {
        match self {
            TestDb::Postgres { schema, client, .. } => {
                let cols: Vec<String> = client
                    .query(
                        "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                        &[schema, &table],
                    )
                    .await
                    .expect("columns")
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .filter(|c| !except.contains(&c.as_str()))
                    .collect();
                if cols.is_empty() {
                    return Vec::new();
                }
                let select = cols
                    .iter()
                    .map(|c| format!("coalesce(\"{c}\"::text, 'NULL')"))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                let sql = format!("SELECT {select} FROM \"{schema}\".\"{table}\" ORDER BY 1");
                client
                    .query(&sql, &[])
                    .await
                    .expect("dump")
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            }
            TestDb::Sqlite { .. } => {
                let conn = self.sqlite();
                let exists: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM sqlite_master WHERE name = ?1",
                        [table],
                        |r| r.get(0),
                    )
                    .expect("sqlite_master");
                if exists == 0 {
                    return Vec::new();
                }
                let mut stmt = conn
                    .prepare(&format!("SELECT * FROM \"{table}\""))
                    .expect("prepare");
                let names: Vec<String> =
                    stmt.column_names().iter().map(|s| s.to_string()).collect();
                let mut rows: Vec<String> = stmt
                    .query_map([], |r| {
                        let mut parts = Vec::new();
                        for (i, n) in names.iter().enumerate() {
                            if !except.contains(&n.as_str()) {
                                parts.push(format!("{:?}", r.get::<_, rusqlite::types::Value>(i)?));
                            }
                        }
                        Ok(parts.join("|"))
                    })
                    .expect("query")
                    .map(|r| r.expect("row"))
                    .collect();
                rows.sort();
                rows
            }
        }
    }

    /// The three default metric tables, dumped. `updated_at` is left out: it
    /// records when a row was last written, so a forced re-run changes it.
    pub async fn dump_metrics(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for t in [
            "block_daily_metrics",
            "user_activity_agg",
            "realtime_dashboard",
        ] {
            out.push(self.dump(t, &["updated_at"]).await);
        }
        out
    }

    /// Names of a PostgreSQL table's partitions, sorted (empty for SQLite).
    pub async fn partitions(&self, table: &str) -> Vec<String> {
        let TestDb::Postgres { schema, client, .. } = self else {
            return Vec::new();
        };
        let mut names: Vec<String> = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
                 JOIN pg_namespace n ON n.oid = p.relnamespace \
                 WHERE n.nspname = $1 AND p.relname = $2",
                &[schema, &table],
            )
            .await
            .expect("partitions")
            .iter()
            .map(|r| r.get(0))
            .collect();
        names.sort();
        names
    }

    /// Whether a table exists (models create theirs on first write).
    pub async fn has_table(&self, table: &str) -> bool {
        let sql = match self {
            TestDb::Postgres { schema, .. } => format!(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}' AND table_name = '{table}'"
            ),
            TestDb::Sqlite { .. } => {
                format!("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'")
            }
        };
        self.read(&sql, |r| r.i64(0)).await[0] > 0
    }

    pub async fn count(&self, table: &str) -> usize {
        self.dump(table, &[]).await.len()
    }

    /// (model, day, state) of every ledger row, oldest first.
    pub async fn runs(&self) -> Vec<(String, NaiveDate, String)> {
        match self {
            TestDb::Postgres { schema, client, .. } => client
                .query(
                    &format!(
                        "SELECT model, day, state FROM \"{schema}\".ledgerflow_runs ORDER BY id"
                    ),
                    &[],
                )
                .await
                .expect("ledger")
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            TestDb::Sqlite { .. } => {
                let conn = self.sqlite();
                let mut stmt = conn
                    .prepare("SELECT model, day, state FROM ledgerflow_runs ORDER BY id")
                    .expect("prepare");
                stmt.query_map([], |r| {
                    let day: String = r.get(1)?;
                    Ok((r.get(0)?, day.parse().expect("date"), r.get(2)?))
                })
                .expect("query")
                .map(|r| r.expect("row"))
                .collect()
            }
        }
    }

    pub async fn block_daily_metrics(&self) -> Vec<BlockDailyMetrics> {
        let sql = "SELECT day, block_count, first_block, last_block, tx_count, failed_tx_count, contract_creation_count, total_gas_used, avg_gas_used_ratio, avg_base_fee_per_gas, total_value_wei, total_fees_wei, unique_senders, unique_receivers, avg_block_time_s FROM block_daily_metrics ORDER BY day";
        self.read(sql, |r| BlockDailyMetrics {
            day: r.date(0),
            block_count: r.i64(1),
            first_block: r.i64(2),
            last_block: r.i64(3),
            tx_count: r.i64(4),
            failed_tx_count: r.i64(5),
            contract_creation_count: r.i64(6),
            total_gas_used: r.i64(7),
            avg_gas_used_ratio: r.f64(8).expect("ratio"),
            avg_base_fee_per_gas: r.f64(9),
            total_value_wei: r.dec(10),
            total_fees_wei: r.dec(11),
            unique_senders: r.i64(12),
            unique_receivers: r.i64(13),
            avg_block_time_s: r.f64(14),
        })
        .await
    }

    pub async fn user_activity(&self, day: NaiveDate) -> Vec<UserActivity> {
        let sql = "SELECT day, address, tx_sent, tx_received, value_sent_wei, value_received_wei, fees_paid_wei, failed_tx_sent, first_seen_at, last_seen_at FROM user_activity_agg ORDER BY address";
        self.read(sql, |r| UserActivity {
            day: r.date(0),
            address: r.text(1),
            tx_sent: r.i64(2),
            tx_received: r.i64(3),
            value_sent_wei: r.dec(4),
            value_received_wei: r.dec(5),
            fees_paid_wei: r.dec(6),
            failed_tx_sent: r.i64(7),
            first_seen_at_micros: r.ts(8),
            last_seen_at_micros: r.ts(9),
        })
        .await
        .into_iter()
        .filter(|u| u.day == day)
        .collect()
    }

    pub async fn realtime_minutes(&self) -> Vec<RealtimeMinute> {
        let sql = "SELECT minute, block_count, tx_count, gas_used, value_wei, avg_gas_price_wei, active_addresses, last_block FROM realtime_dashboard ORDER BY minute";
        self.read(sql, |r| RealtimeMinute {
            minute_micros: r.ts(0),
            block_count: r.i64(1),
            tx_count: r.i64(2),
            gas_used: r.i64(3),
            value_wei: r.dec(4),
            avg_gas_price_wei: r.f64(5),
            active_addresses: r.i64(6),
            last_block: r.i64(7),
        })
        .await
    }

    async fn read<T>(&self, sql: &str, f: impl Fn(&Cells) -> T) -> Vec<T> {
        match self {
            TestDb::Postgres { schema, client, .. } => {
                client
                    .batch_execute(&format!("SET search_path TO \"{schema}\""))
                    .await
                    .expect("search_path");
                client
                    .query(sql, &[])
                    .await
                    .expect("query")
                    .into_iter()
                    .map(|row| f(&Cells::Pg(row)))
                    .collect()
            }
            TestDb::Sqlite { .. } => {
                let conn = self.sqlite();
                let mut stmt = conn.prepare(sql).expect("prepare");
                let n = stmt.column_count();
                let rows: Vec<Vec<rusqlite::types::Value>> = stmt
                    .query_map([], |r| (0..n).map(|i| r.get(i)).collect())
                    .expect("query")
                    .map(|r| r.expect("row"))
                    .collect();
                rows.into_iter().map(|row| f(&Cells::Sqlite(row))).collect()
            }
        }
    }
}

/// One row of either database, read the way each sink stores values.
enum Cells {
    Pg(tokio_postgres::Row),
    Sqlite(Vec<rusqlite::types::Value>),
}

impl Cells {
    fn sqlite_text(&self, i: usize) -> String {
        match self {
            Cells::Sqlite(v) => match &v[i] {
                rusqlite::types::Value::Text(s) => s.clone(),
                other => panic!("column {i}: expected TEXT, got {other:?}"),
            },
            Cells::Pg(_) => unreachable!(),
        }
    }

    fn i64(&self, i: usize) -> i64 {
        match self {
            Cells::Pg(r) => r.get(i),
            Cells::Sqlite(v) => match v[i] {
                rusqlite::types::Value::Integer(n) => n,
                ref other => panic!("column {i}: expected INTEGER, got {other:?}"),
            },
        }
    }

    fn f64(&self, i: usize) -> Option<f64> {
        match self {
            Cells::Pg(r) => r.get(i),
            Cells::Sqlite(v) => match v[i] {
                rusqlite::types::Value::Real(x) => Some(x),
                rusqlite::types::Value::Null => None,
                ref other => panic!("column {i}: expected REAL, got {other:?}"),
            },
        }
    }

    fn text(&self, i: usize) -> String {
        match self {
            Cells::Pg(r) => r.get(i),
            Cells::Sqlite(_) => self.sqlite_text(i),
        }
    }

    /// Decimals must come back exactly: numeric in PostgreSQL, decimal text
    /// in SQLite (a REAL there would be a bug).
    fn dec(&self, i: usize) -> i128 {
        match self {
            Cells::Pg(r) => r.get::<_, PgNumeric>(i).0,
            Cells::Sqlite(_) => {
                let s = self.sqlite_text(i);
                parse_decimal(&s, 0).unwrap_or_else(|| panic!("not a decimal: {s}"))
            }
        }
    }

    fn date(&self, i: usize) -> NaiveDate {
        match self {
            Cells::Pg(r) => r.get(i),
            Cells::Sqlite(_) => self.sqlite_text(i).parse().expect("date text"),
        }
    }

    fn ts(&self, i: usize) -> i64 {
        match self {
            Cells::Pg(r) => r.get::<_, DateTime<Utc>>(i).timestamp_micros(),
            Cells::Sqlite(_) => DateTime::parse_from_rfc3339(&self.sqlite_text(i))
                .expect("timestamp text")
                .timestamp_micros(),
        }
    }
}

/// Asserts two metric rows are equal: integers and decimals exactly, doubles
/// to a relative 1e-9.
pub fn assert_daily_eq(actual: &BlockDailyMetrics, expected: &BlockDailyMetrics) {
    let floats = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => approx_eq(a, b),
        (None, None) => true,
        _ => false,
    };
    let mut a = actual.clone();
    let e = expected.clone();
    assert!(
        approx_eq(a.avg_gas_used_ratio, e.avg_gas_used_ratio),
        "avg_gas_used_ratio {actual:?} vs {expected:?}"
    );
    assert!(
        floats(a.avg_base_fee_per_gas, e.avg_base_fee_per_gas),
        "avg_base_fee {actual:?} vs {expected:?}"
    );
    assert!(
        floats(a.avg_block_time_s, e.avg_block_time_s),
        "avg_block_time {actual:?} vs {expected:?}"
    );
    a.avg_gas_used_ratio = e.avg_gas_used_ratio;
    a.avg_base_fee_per_gas = e.avg_base_fee_per_gas;
    a.avg_block_time_s = e.avg_block_time_s;
    assert_eq!(a, e);
}

/// [`assert_minutes_eq`] as a test, for waiting until it holds.
pub fn minutes_eq(actual: &[RealtimeMinute], expected: &[RealtimeMinute]) -> bool {
    actual.len() == expected.len()
        && actual.iter().zip(expected).all(|(a, e)| {
            let prices = match (a.avg_gas_price_wei, e.avg_gas_price_wei) {
                (Some(x), Some(y)) => approx_eq(x, y),
                (x, y) => x == y,
            };
            let mut a = a.clone();
            a.avg_gas_price_wei = e.avg_gas_price_wei;
            prices && &a == e
        })
}

pub fn assert_minutes_eq(actual: &[RealtimeMinute], expected: &[RealtimeMinute]) {
    assert_eq!(actual.len(), expected.len(), "minute count");
    for (a, e) in actual.iter().zip(expected) {
        let mut a = a.clone();
        match (a.avg_gas_price_wei, e.avg_gas_price_wei) {
            (Some(x), Some(y)) => assert!(approx_eq(x, y), "avg_gas_price {a:?} vs {e:?}"),
            (x, y) => assert_eq!(x, y),
        }
        a.avg_gas_price_wei = e.avg_gas_price_wei;
        assert_eq!(&a, e);
    }
}

/// Two dumped rows are the same: every cell equal, except that floats
/// (`0.39` in PostgreSQL's text, `Real(0.39)` in SQLite's) may differ in
/// their last digits, as [`approx_eq`] allows: a rerun's engine may sum
/// an average's floats in another order.
fn rows_match(a: &str, b: &str) -> bool {
    let float = |c: &str| {
        c.strip_prefix("Real(")
            .and_then(|c| c.strip_suffix(')'))
            .unwrap_or(c)
            .parse::<f64>()
            .ok()
    };
    a == b
        || (a.split('|').count() == b.split('|').count()
            && a.split('|').zip(b.split('|')).all(|(x, y)| {
                x == y
                    || matches!((float(x), float(y)), (Some(x), Some(y)) if (x.fract() != 0.0 || y.fract() != 0.0) && approx_eq(x, y))
            }))
}

/// Asserts two dumps (one `Vec<String>` per table) are equal (floats to
/// [`approx_eq`]), reporting the table and first differing row rather than
/// the whole tables.
pub fn assert_dumps_eq(actual: &[Vec<String>], expected: &[Vec<String>], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: table count");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        if a.len() == e.len() && a.iter().zip(e).all(|(x, y)| rows_match(x, y)) {
            continue;
        }
        let first = a.iter().zip(e).position(|(x, y)| !rows_match(x, y));
        panic!(
            "{what}: table #{i} differs: {} vs {} rows; first difference at row {first:?}: {:?} vs {:?}",
            a.len(),
            e.len(),
            first.map(|j| &a[j]),
            first.map(|j| &e[j]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::rows_match;

    #[test]
    fn dumped_rows_match_up_to_float_summation_order() {
        let cases = [
            // The flake this tolerance is for: an average's last digit,
            // in SQLite's and PostgreSQL's dumps.
            (
                "Text(\"2026-11-05\")|Integer(36)|Real(0.3947428777777778)",
                "Text(\"2026-11-05\")|Integer(36)|Real(0.3947428777777777)",
                true,
            ),
            (
                "2026-11-05|36|0.3947428777777778",
                "2026-11-05|36|0.3947428777777777",
                true,
            ),
            // Anything else still differs: integers and wei amounts
            // exactly, floats beyond the tolerance, text, the cell count.
            ("Integer(36)|Real(0.5)", "Integer(37)|Real(0.5)", false),
            ("36|0.5", "37|0.5", false),
            (
                "Text(\"39284592777604239829\")",
                "Text(\"39284592777604239828\")",
                false,
            ),
            (
                "3928459277760423982978851981",
                "3928459277760423982978851982",
                false,
            ),
            ("Real(0.39474)", "Real(0.39475)", false),
            ("a|0.5", "b|0.5", false),
            ("0.5|1", "0.5", false),
        ];
        for (a, b, same) in cases {
            assert_eq!(rows_match(a, b), same, "{a} vs {b}");
        }
    }
}
