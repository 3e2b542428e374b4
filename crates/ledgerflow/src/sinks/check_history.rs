//! The `ledgerflow_checks` table in both dialects: check results kept as
//! history (passes too), written by the runner and `check`, read by
//! `checks` and `status`.

use chrono::{DateTime, NaiveDate, Utc};

use super::ident::quote;
use crate::checks::{CheckFilter, CheckResult, CheckStatus, Severity, TABLE};

/// Columns in the order `from_row` reads them and inserts bind them.
pub const COLUMNS: &str = "run_id, model, day, check_name, severity, status, observed, \
                           expected, failing_rows, sample, detail, checked_at";

/// `CREATE TABLE` + index; `id` is the dialect's auto-increment key,
/// `day`/`time` its date and timestamp types.
pub fn ddl(table: &str, index: &str, id: &str, day: &str, time: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            id {id},
            run_id BIGINT,
            model TEXT NOT NULL,
            day {day} NOT NULL,
            check_name TEXT NOT NULL,
            severity TEXT NOT NULL,
            status TEXT NOT NULL,
            observed TEXT,
            expected TEXT,
            failing_rows BIGINT NOT NULL,
            sample TEXT,
            detail TEXT,
            checked_at {time} NOT NULL
        );
        CREATE INDEX IF NOT EXISTS {index} ON {table} (model, day, id);"
    )
}

/// The index name, quoted.
pub fn index_name() -> String {
    quote(&format!("{TABLE}_model_day"))
}

/// `SELECT .. WHERE ..` over the history with the filter's five parameters
/// bound by position (`p(n)` spells the n-th placeholder): model, from,
/// to, failed only, limit.
pub fn list_sql(table: &str, p: impl Fn(usize) -> String) -> String {
    format!(
        "SELECT {COLUMNS} FROM {table} \
         WHERE ({m} IS NULL OR model = {m}) AND ({f} IS NULL OR day >= {f}) \
         AND ({t} IS NULL OR day <= {t}) AND ({x} = 0 OR status <> 'pass') \
         ORDER BY id DESC LIMIT {l}",
        m = p(1),
        f = p(2),
        t = p(3),
        x = p(4),
        l = p(5),
    )
}

pub fn insert_sql(table: &str, p: impl Fn(usize) -> String) -> String {
    let values: Vec<String> = (1..=12).map(p).collect();
    format!(
        "INSERT INTO {table} ({COLUMNS}) VALUES ({})",
        values.join(", ")
    )
}

/// The filter's failed-only flag as the integer both dialects compare.
pub fn failed_flag(filter: &CheckFilter) -> i64 {
    i64::from(filter.failed)
}

/// A row read back; `day` and `checked_at` come parsed by the dialect.
#[allow(clippy::too_many_arguments)]
pub fn from_parts(
    run_id: Option<i64>,
    model: String,
    day: NaiveDate,
    check: String,
    severity: &str,
    status: &str,
    observed: Option<String>,
    expected: Option<String>,
    failing_rows: i64,
    sample: Option<String>,
    detail: Option<String>,
    checked_at: DateTime<Utc>,
) -> Result<CheckResult, String> {
    Ok(CheckResult {
        run_id,
        model,
        day,
        check,
        severity: Severity::parse(severity).ok_or(format!("unknown severity `{severity}`"))?,
        status: CheckStatus::parse(status).ok_or(format!("unknown check status `{status}`"))?,
        observed,
        expected,
        failing_rows,
        sample,
        detail,
        checked_at,
    })
}
