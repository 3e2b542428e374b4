//! Data-quality checks: declared on a model (`-- check:` header lines,
//! [`spec`]), written as SQL files in `checks/` ([`sql`]), evaluated on a
//! model's output for a day before it is written ([`eval`]), and kept as
//! history in the serving database (`ledgerflow_checks`).
//!
//! A failing check of severity `error` fails the model's day: nothing of it
//! is written, its dependents are skipped. A `warn` check is recorded and
//! reported, and the day is written.

pub mod builtin;
pub mod eval;
pub mod spec;
pub mod sql;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

pub use spec::{CheckKind, CheckSpec, Severity};

/// Table of check results in the serving database.
pub const TABLE: &str = "ledgerflow_checks";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    /// Failed, severity `warn`: the day was written.
    Warn,
    /// Failed, severity `error`: the day was not written.
    Fail,
    /// The check could not be evaluated (bad SQL, a column that is not
    /// there); blocks like a failure when its severity is `error`.
    Error,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
            CheckStatus::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pass, Self::Warn, Self::Fail, Self::Error]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One check of one (model, day), as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// The ledger row of the model run it guarded (none for `check` on
    /// demand).
    pub run_id: Option<i64>,
    pub model: String,
    pub day: NaiveDate,
    /// The check as written: `not_null(address)`, or a SQL check's file
    /// stem.
    pub check: String,
    pub severity: Severity,
    pub status: CheckStatus,
    pub observed: Option<String>,
    pub expected: Option<String>,
    /// Rows that violate it (0 for checks over the whole output).
    pub failing_rows: i64,
    /// Keys of a few failing rows.
    pub sample: Option<String>,
    /// Why it could not run (status `error`).
    pub detail: Option<String>,
    pub checked_at: DateTime<Utc>,
}

impl Severity {
    /// The status of a check of this severity that found violations.
    pub fn failed(self) -> CheckStatus {
        match self {
            Severity::Error => CheckStatus::Fail,
            Severity::Warn => CheckStatus::Warn,
        }
    }
}

impl CheckResult {
    /// A passing result of `check` on (model, day), checked now; the
    /// evaluation fills in the rest.
    pub fn pass(
        run_id: Option<i64>,
        model: &str,
        day: NaiveDate,
        check: &str,
        severity: Severity,
    ) -> Self {
        Self {
            run_id,
            model: model.to_string(),
            day,
            check: check.to_string(),
            severity,
            status: CheckStatus::Pass,
            observed: None,
            expected: None,
            failing_rows: 0,
            sample: None,
            detail: None,
            checked_at: Utc::now(),
        }
    }

    /// Whether it stops the day's write.
    pub fn blocks(&self) -> bool {
        self.severity == Severity::Error
            && matches!(self.status, CheckStatus::Fail | CheckStatus::Error)
    }

    /// One line for errors, warnings and the ledger.
    pub fn summary(&self) -> String {
        let mut s = format!("check `{}` {}", self.check, self.status.as_str());
        if let Some(detail) = &self.detail {
            s.push_str(&format!(": {detail}"));
            return s;
        }
        if self.failing_rows > 0 {
            s.push_str(&format!(": {} failing row(s)", self.failing_rows));
        }
        match (&self.observed, &self.expected) {
            (Some(o), Some(e)) => s.push_str(&format!(" (observed {o}, expected {e})")),
            (Some(o), None) => s.push_str(&format!(" (observed {o})")),
            _ => {}
        }
        if let Some(sample) = &self.sample {
            s.push_str(&format!("; e.g. {sample}"));
        }
        s
    }
}

/// Which results `checks` lists.
#[derive(Debug, Clone, Default)]
pub struct CheckFilter {
    pub model: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Only warn, fail and error.
    pub failed: bool,
    pub limit: Option<i64>,
}
