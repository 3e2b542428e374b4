//! Evaluates a model's declared checks on its output for a day, before it
//! is written: the output is registered as the table `output` of a session
//! of its own, and each check is a query over it.

use std::sync::Arc;

use arrow::array::{Array, Int64Array};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::NaiveDate;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::spec::{CheckKind, CheckSpec};
use super::{CheckResult, CheckStatus};

/// Failing keys shown per check.
const SAMPLE_ROWS: usize = 5;

/// What the checks of one (model, day) look at.
pub struct Subject<'a> {
    pub model: &'a str,
    pub day: NaiveDate,
    pub run_id: Option<i64>,
    /// Columns that name a failing row in a sample (the model's key).
    pub key: &'a [String],
    pub schema: SchemaRef,
    pub batches: &'a [RecordBatch],
    /// Rows written on the model's most recent successful days before
    /// `day`, newest first (for `volume`).
    pub history: &'a [i64],
}

/// Every check's result, in the order declared. Never fails: a check that
/// cannot be evaluated is a result of status `error`.
pub async fn declared(subject: &Subject<'_>, checks: &[CheckSpec]) -> Vec<CheckResult> {
    if checks.is_empty() {
        return Vec::new();
    }
    let ctx = SessionContext::new();
    let registered = MemTable::try_new(
        subject
            .batches
            .first()
            .map_or(subject.schema.clone(), |b| b.schema()),
        vec![subject.batches.to_vec()],
    )
    .map_err(|e| e.to_string())
    .and_then(|t| {
        ctx.register_table("output", Arc::new(t))
            .map_err(|e| e.to_string())
    });
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        let outcome = match &registered {
            Ok(_) => evaluate(&ctx, subject, check).await,
            Err(e) => Err(e.clone()),
        };
        let mut result = CheckResult::pass(
            subject.run_id,
            subject.model,
            subject.day,
            &check.name,
            check.severity,
        );
        match outcome {
            Ok(o) => {
                result.status = if o.passed {
                    CheckStatus::Pass
                } else {
                    check.severity.failed()
                };
                result.observed = o.observed;
                result.expected = o.expected;
                result.failing_rows = o.failing_rows;
                result.sample = o.sample;
            }
            Err(e) => {
                result.status = CheckStatus::Error;
                result.detail = Some(e);
            }
        }
        results.push(result);
    }
    results
}

#[derive(Default)]
struct Outcome {
    passed: bool,
    observed: Option<String>,
    expected: Option<String>,
    failing_rows: i64,
    sample: Option<String>,
}

async fn evaluate(
    ctx: &SessionContext,
    subject: &Subject<'_>,
    check: &CheckSpec,
) -> Result<Outcome, String> {
    let column = |name: &str| -> Result<String, String> {
        subject
            .schema
            .fields()
            .iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .map(|f| format!("\"{}\"", f.name()))
            .ok_or_else(|| {
                format!(
                    "column `{name}` is not in the output of `{}`",
                    subject.model
                )
            })
    };
    let columns = |names: &[String]| -> Result<Vec<String>, String> {
        names.iter().map(|n| column(n)).collect()
    };
    let rows = || {
        subject
            .batches
            .iter()
            .map(|b| b.num_rows() as i64)
            .sum::<i64>()
    };
    match &check.kind {
        CheckKind::NotNull(names) => {
            let cols = columns(names)?;
            let cond = cols
                .iter()
                .map(|c| format!("{c} IS NULL"))
                .collect::<Vec<_>>()
                .join(" OR ");
            violations(ctx, subject, &cond).await
        }
        CheckKind::AcceptedValues {
            column: name,
            values,
        } => {
            let c = column(name)?;
            let cond = format!("{c} IS NOT NULL AND {c} NOT IN ({})", values.join(", "));
            violations(ctx, subject, &cond).await
        }
        CheckKind::Range {
            column: name,
            min,
            max,
        } => {
            let c = column(name)?;
            let mut parts = Vec::new();
            if let Some(min) = min {
                parts.push(format!("{c} < {min}"));
            }
            if let Some(max) = max {
                parts.push(format!("{c} > {max}"));
            }
            violations(ctx, subject, &parts.join(" OR ")).await
        }
        CheckKind::Expression(sql) => {
            violations(ctx, subject, &format!("NOT coalesce(({sql}), false)")).await
        }
        CheckKind::Unique(names) => {
            let cols = columns(names)?.join(", ");
            let groups = query(
                ctx,
                &format!(
                    "SELECT {cols}, count(*) AS ledgerflow_n FROM output GROUP BY {cols} HAVING count(*) > 1"
                ),
            )
            .await?;
            let mut failing = 0i64;
            for b in &groups {
                let n = b
                    .column(b.num_columns() - 1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or("count is not Int64")?;
                failing += n.iter().flatten().sum::<i64>();
            }
            let trimmed: Vec<RecordBatch> = groups
                .iter()
                .map(|b| b.project(&(0..b.num_columns() - 1).collect::<Vec<_>>()))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            Ok(Outcome {
                passed: failing == 0,
                failing_rows: failing,
                sample: sample(&trimmed)?,
                ..Default::default()
            })
        }
        CheckKind::RowCount { min, max } => {
            let n = rows();
            let passed = min.is_none_or(|m| n >= m as i64) && max.is_none_or(|m| n <= m as i64);
            let bound = |b: &Option<u64>| b.map_or("*".to_string(), |v| v.to_string());
            Ok(Outcome {
                passed,
                observed: Some(n.to_string()),
                expected: Some(format!("{}..{}", bound(min), bound(max))),
                ..Default::default()
            })
        }
        CheckKind::Volume {
            max_change_pct,
            days,
        } => {
            let n = rows();
            let recent: Vec<i64> = subject.history.iter().take(*days).copied().collect();
            // Too little history to call anything unusual.
            if recent.len() < 3 {
                return Ok(Outcome {
                    passed: true,
                    observed: Some(n.to_string()),
                    expected: Some(format!(
                        "a median of {days} earlier days ({} known)",
                        recent.len()
                    )),
                    ..Default::default()
                });
            }
            let median = median(&recent);
            let change = if median == 0.0 {
                if n == 0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                100.0 * (n as f64 - median).abs() / median
            };
            Ok(Outcome {
                passed: change <= *max_change_pct,
                observed: Some(format!("{n} rows ({change:.1}% from the median)")),
                expected: Some(format!(
                    "within {max_change_pct}% of {median} (median of {} days)",
                    recent.len()
                )),
                ..Default::default()
            })
        }
    }
}

fn median(values: &[i64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) as f64 / 2.0
    } else {
        v[mid] as f64
    }
}

/// Rows of `output` where `cond` holds: their count and a sample of
/// their keys.
async fn violations(
    ctx: &SessionContext,
    subject: &Subject<'_>,
    cond: &str,
) -> Result<Outcome, String> {
    let counted = query(ctx, &format!("SELECT count(*) FROM output WHERE {cond}")).await?;
    let failing = counted
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>())
        .map_or(0, |a| a.value(0));
    let mut sample_rows = None;
    if failing > 0 {
        let key: Vec<String> = subject
            .key
            .iter()
            .filter(|k| subject.schema.field_with_name(k).is_ok())
            .map(|k| format!("\"{k}\""))
            .collect();
        let shown = if key.is_empty() {
            "*".to_string()
        } else {
            key.join(", ")
        };
        let rows = query(
            ctx,
            &format!("SELECT {shown} FROM output WHERE {cond} LIMIT {SAMPLE_ROWS}"),
        )
        .await?;
        sample_rows = sample(&rows)?;
    }
    Ok(Outcome {
        passed: failing == 0,
        failing_rows: failing,
        sample: sample_rows,
        ..Default::default()
    })
}

pub(super) async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, String> {
    ctx.sql(sql)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())
}

/// `col=value, col=value; ...` for up to [`SAMPLE_ROWS`] rows.
pub(super) fn sample(batches: &[RecordBatch]) -> Result<Option<String>, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    'outer: for b in batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for row in 0..b.num_rows() {
            if rows.len() == SAMPLE_ROWS {
                break 'outer;
            }
            let fields: Vec<String> = b
                .schema()
                .fields()
                .iter()
                .zip(&formatters)
                .map(|(f, fmt)| format!("{}={}", f.name(), fmt.value(row)))
                .collect();
            rows.push(fields.join(", "));
        }
    }
    Ok((!rows.is_empty()).then(|| rows.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::spec::parse;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};

    fn output() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("address", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("b"),
                ])),
                Arc::new(Int64Array::from(vec![Some(1), Some(-2), Some(3), None])),
            ],
        )
        .unwrap();
        (schema, vec![batch])
    }

    async fn run(checks: &[&str], history: &[i64]) -> Vec<CheckResult> {
        let (schema, batches) = output();
        let key = vec!["address".to_string()];
        let subject = Subject {
            model: "m",
            day: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            run_id: Some(7),
            key: &key,
            schema,
            batches: &batches,
            history,
        };
        let specs: Vec<CheckSpec> = checks.iter().map(|c| parse(c).unwrap()).collect();
        declared(&subject, &specs).await
    }

    #[tokio::test]
    async fn each_kind_counts_its_violations() {
        let r = run(
            &[
                "not_null(address)",
                "not_null(n) warn",
                "unique(address)",
                "accepted_values(address, ['a', 'b'])",
                "accepted_values(address, ['a'])",
                "range(n, 0, *)",
                "range(n, -5, 5)",
                "expression(n < 3)",
                "row_count(1, 3)",
                "row_count(4, *)",
                "not_null(nosuch)",
            ],
            &[],
        )
        .await;
        let got: Vec<(&str, CheckStatus, i64)> = r
            .iter()
            .map(|r| (r.check.as_str(), r.status, r.failing_rows))
            .collect();
        assert_eq!(
            got,
            [
                ("not_null(address)", CheckStatus::Fail, 1),
                ("not_null(n)", CheckStatus::Warn, 1),
                ("unique(address)", CheckStatus::Fail, 2),
                ("accepted_values(address, ['a', 'b'])", CheckStatus::Pass, 0),
                ("accepted_values(address, ['a'])", CheckStatus::Fail, 2),
                ("range(n, 0, *)", CheckStatus::Fail, 1),
                ("range(n, -5, 5)", CheckStatus::Pass, 0),
                // 3 fails, and NULL fails an expression.
                ("expression(n < 3)", CheckStatus::Fail, 2),
                ("row_count(1, 3)", CheckStatus::Fail, 0),
                ("row_count(4, *)", CheckStatus::Pass, 0),
                ("not_null(nosuch)", CheckStatus::Error, 0),
            ]
        );
        assert_eq!(r[0].sample.as_deref(), Some("address=NULL"));
        assert_eq!(r[2].sample.as_deref(), Some("address=b"));
        assert_eq!(r[8].observed.as_deref(), Some("4"));
        assert!(r[10].detail.as_deref().unwrap().contains("nosuch"));
        assert!(r.iter().all(|r| r.run_id == Some(7)));
        assert!(r[0].blocks() && !r[1].blocks() && !r[3].blocks() && r[10].blocks());
    }

    #[tokio::test]
    async fn volume_compares_with_the_median_of_recent_days() {
        let check = "volume(change <= 50% vs median of the last 3 days)";
        // Median of 4, 8, 9 is 8: 4 rows is a 50% drop, allowed.
        assert_eq!(
            run(&[check], &[4, 8, 9, 1000]).await[0].status,
            CheckStatus::Pass
        );
        // Median of 10, 10, 40 is 10: 4 rows is -60%.
        let r = &run(&[check], &[10, 40, 10]).await[0];
        assert_eq!(r.status, CheckStatus::Fail, "{r:?}");
        assert!(r.observed.as_deref().unwrap().contains("60.0%"), "{r:?}");
        // Two days of history are not enough to judge.
        assert_eq!(
            run(&[check], &[100, 100]).await[0].status,
            CheckStatus::Pass
        );
    }
}
