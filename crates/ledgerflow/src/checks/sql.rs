//! SQL checks: `checks/*.sql`, each a query returning the rows that violate
//! it (none = pass), guarding one model or several (`model: a, b`: run once
//! for each), on every day or on the days of `days: FROM..TO` (either end
//! may be left open; one date is that day):
//!
//! ```sql
//! -- model: block_daily_metrics
//! -- severity: error
//! -- days: 2026-01-01..
//! SELECT b.day, b.tx_count, t.n
//! FROM block_daily_metrics b
//! CROSS JOIN (SELECT count(*) AS n FROM transactions
//!             WHERE block_timestamp >= $start AND block_timestamp < $end) t
//! WHERE b.tx_count <> t.n
//! ```
//! It runs before the guarded model's day is written, in that model's
//! session: the input tables, the model's upstream outputs, and the model's
//! own output under its name, with `$day`, `$start`, `$end` bound as for
//! models.

use std::path::Path;

use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use super::spec::Severity;
use super::{CheckResult, CheckStatus};
use crate::error::{Error, Result};
use crate::names;
use crate::sql_file;

#[derive(Debug, Clone, PartialEq)]
pub struct SqlCheck {
    /// The file stem.
    pub name: String,
    pub file: String,
    /// The models it guards, and the header line naming them.
    pub models: Vec<String>,
    pub model_line: usize,
    pub severity: Severity,
    /// The days it guards (inclusive; `None` = open): every day by default.
    pub days: (Option<NaiveDate>, Option<NaiveDate>),
    pub sql: String,
}

/// `FROM..TO` (either side may be empty) or one date.
fn parse_days(v: &str) -> Option<(Option<NaiveDate>, Option<NaiveDate>)> {
    let date = |s: &str| -> Option<Option<NaiveDate>> {
        let s = s.trim();
        if s.is_empty() {
            Some(None)
        } else {
            NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(Some)
        }
    };
    let (from, to) = match v.split_once("..") {
        Some((a, b)) => (date(a)?, date(b)?),
        None => {
            let d = date(v)?;
            (d, d)
        }
    };
    match (from, to) {
        (Some(a), Some(b)) if a > b => None,
        (None, None) if !v.contains("..") => None,
        days => Some(days),
    }
}

impl SqlCheck {
    pub fn parse(file: &str, text: &str) -> Result<SqlCheck> {
        let err = |line: usize, message: String| Error::Model {
            file: file.to_string(),
            line,
            message,
        };
        let name = sql_file::stem(file);
        let (mut models, mut severity, mut days) = (None, Severity::Error, (None, None));
        for entry in sql_file::header(text) {
            let (line, v) = (entry.line, entry.value);
            match entry.key {
                "model" => {
                    let mut names = Vec::new();
                    for name in v.split(',').map(str::trim) {
                        names::validate(name).map_err(|m| err(line, m))?;
                        if !names.iter().any(|n| n == name) {
                            names.push(name.to_string());
                        }
                    }
                    models = Some((names, line));
                }
                "days" => {
                    days = parse_days(v).ok_or_else(|| {
                        err(
                            line,
                            format!("days `{v}`: expected YYYY-MM-DD..YYYY-MM-DD (either end may be left out) or one date"),
                        )
                    })?
                }
                "severity" => {
                    severity = Severity::parse(v).ok_or_else(|| {
                        err(line, format!("severity `{v}`: expected error or warn"))
                    })?
                }
                other => {
                    return Err(err(
                        line,
                        format!("unknown header `{other}` (expected model, severity, days)"),
                    ))
                }
            }
        }
        let (models, model_line) = models.ok_or_else(|| {
            err(
                1,
                "missing header `-- model: name` (the model it guards)".into(),
            )
        })?;
        Ok(SqlCheck {
            name,
            file: file.to_string(),
            models,
            model_line,
            severity,
            days,
            sql: text.to_string(),
        })
    }

    /// Whether it runs on `model`'s `day`.
    pub fn guards(&self, model: &str, day: NaiveDate) -> bool {
        self.models.iter().any(|m| m == model)
            && self.days.0.is_none_or(|from| day >= from)
            && self.days.1.is_none_or(|to| day <= to)
    }

    /// Runs the check in `ctx` (the guarded `model`'s session, its output
    /// registered under its name) with the model's window parameters.
    pub async fn evaluate(
        &self,
        ctx: &SessionContext,
        model: &str,
        day: NaiveDate,
        params: Vec<(&'static str, ScalarValue)>,
        run_id: Option<i64>,
    ) -> CheckResult {
        let mut result = CheckResult::pass(run_id, model, day, &self.name, self.severity);
        result.expected = Some("no rows".into());
        let rows = match ctx
            .sql(&self.sql)
            .await
            .and_then(|df| df.with_param_values(params))
        {
            Ok(df) => df.collect().await,
            Err(e) => Err(e),
        };
        match rows {
            Ok(batches) => {
                let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                result.failing_rows = n as i64;
                result.observed = Some(format!("{n} rows"));
                if n > 0 {
                    result.status = self.severity.failed();
                    result.sample = super::eval::sample(&batches).unwrap_or(None);
                }
            }
            Err(e) => {
                result.status = CheckStatus::Error;
                result.detail = Some(format!("{}: {e}", self.file));
            }
        }
        result
    }
}

/// Loads every `*.sql` of `dir` (none when it does not exist), sorted by
/// name; each must guard one of `models`.
pub fn load_dir(dir: &Path, models: &[String]) -> Result<Vec<SqlCheck>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut checks = Vec::new();
    for (file, text) in sql_file::read_dir(dir)? {
        let check = SqlCheck::parse(&file, &text)?;
        if let Some(unknown) = check.models.iter().find(|m| !models.contains(m)) {
            return Err(Error::Model {
                file: check.file.clone(),
                line: check.model_line,
                message: format!("model `{unknown}` is not a model of this project"),
            });
        }
        checks.push(check);
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_the_model_and_severity() {
        let c = SqlCheck::parse(
            "checks/x.sql",
            "-- Guards the model: prose is ignored.\n-- model: m\n-- severity: warn\nSELECT 1 WHERE false",
        )
        .unwrap();
        assert_eq!(
            (c.name.as_str(), c.models.as_slice()),
            ("x", &["m".to_string()][..])
        );
        assert_eq!(c.severity, Severity::Warn);
        assert!(c.guards("m", NaiveDate::MIN) && !c.guards("other", NaiveDate::MIN));
        let e = SqlCheck::parse("checks/x.sql", "-- model: m\n-- severity: fatal\nSELECT 1")
            .unwrap_err();
        assert!(e.to_string().starts_with("model checks/x.sql:2:"), "{e}");
        let e = SqlCheck::parse("checks/x.sql", "SELECT 1").unwrap_err();
        assert!(e.to_string().contains("-- model:"), "{e}");
    }

    #[test]
    fn a_check_guards_several_models_on_the_days_it_names() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let c = SqlCheck::parse(
            "checks/x.sql",
            "-- model: a, b\n-- days: 2026-11-02..2026-11-04\nSELECT 1",
        )
        .unwrap();
        assert_eq!(c.models, ["a", "b"]);
        for (model, day, guarded) in [
            ("a", "2026-11-01", false),
            ("a", "2026-11-02", true),
            ("b", "2026-11-04", true),
            ("b", "2026-11-05", false),
            ("c", "2026-11-03", false),
        ] {
            assert_eq!(c.guards(model, d(day)), guarded, "{model} {day}");
        }
        let open = |days: &str| {
            SqlCheck::parse(
                "checks/x.sql",
                &format!("-- model: a\n-- days: {days}\nSELECT 1"),
            )
            .map(|c| c.days)
        };
        assert_eq!(open("2026-11-02..").unwrap(), (Some(d("2026-11-02")), None));
        assert_eq!(open("..2026-11-02").unwrap(), (None, Some(d("2026-11-02"))));
        assert_eq!(
            open("2026-11-02").unwrap(),
            (Some(d("2026-11-02")), Some(d("2026-11-02")))
        );
        for bad in ["2026-11-05..2026-11-01", "yesterday", "2026-13-01.."] {
            let e = open(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("model checks/x.sql:2:") && e.contains("days"),
                "{e}"
            );
        }
    }
}
