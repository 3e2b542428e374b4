//! Models: SQL files (DataFusion SQL) with a small header, like dbt models.
//! `spec` parses one file; `dag` orders a project's models; `builtin` holds
//! the three seed models a new project starts with.

pub mod builtin;
pub mod dag;
pub mod spec;

pub use spec::{Grain, ModelSpec};

use std::path::Path;

use crate::error::{Error, Result};

/// Loads every `*.sql` file of `dir`, sorted by name, in dependency order.
pub fn load_dir(dir: &Path) -> Result<Vec<ModelSpec>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    let mut models = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        models.push(ModelSpec::parse(&path.display().to_string(), &text)?);
    }
    dag::order(models)
}

/// The parameters a model's SQL is bound with: `$day`, the window `[$start,
/// $end)` (a day, or the minutes a realtime pass recomputes) and `$run_at`.
pub fn window_params(
    day: chrono::NaiveDate,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Vec<(&'static str, datafusion::scalar::ScalarValue)> {
    use datafusion::scalar::ScalarValue;
    let ts = |t: chrono::DateTime<chrono::Utc>| {
        ScalarValue::TimestampMicrosecond(
            Some(t.timestamp_micros()),
            Some(crate::catalog::schema::UTC.into()),
        )
    };
    let days_since_epoch = (day - chrono::NaiveDate::default()).num_days() as i32;
    vec![
        ("day", ScalarValue::Date32(Some(days_since_epoch))),
        ("start", ts(start)),
        ("end", ts(end)),
        ("run_at", ts(chrono::Utc::now())),
    ]
}

/// Plans `model`'s SQL in `ctx` with the window parameters bound; a SQL
/// error names the model file and line.
pub async fn bind(
    ctx: &datafusion::prelude::SessionContext,
    model: &ModelSpec,
    day: chrono::NaiveDate,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<datafusion::prelude::DataFrame> {
    ctx.sql(&model.sql)
        .await
        .and_then(|df| df.with_param_values(window_params(day, start, end)))
        .map_err(|e| {
            let message = e.to_string();
            Error::Model {
                file: model.file.clone(),
                line: model.error_line(&message),
                message,
            }
        })
}
