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

/// Outputs of the models a run computed, by name, for their dependents.
pub type Outputs = std::collections::HashMap<
    String,
    (
        datafusion::arrow::datatypes::SchemaRef,
        Vec<datafusion::arrow::record_batch::RecordBatch>,
    ),
>;

/// Makes every model `model` depends on (transitively) readable in `ctx` as
/// a table named after it, holding its output for `day`: the batches this
/// run computed when `outputs` has them, else its query bound for the same
/// day (a view, computed inside the dependent's query: the upstream was
/// skipped as unchanged, or is not part of this run).
pub async fn bind_upstreams(
    ctx: &datafusion::prelude::SessionContext,
    model: &ModelSpec,
    all: &[ModelSpec],
    outputs: &Outputs,
    day: chrono::NaiveDate,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    use datafusion::catalog::TableProvider;
    let engine = |source| Error::Engine {
        model: model.name.clone(),
        day,
        source,
    };
    for up in dag::upstreams(model, all) {
        // DataFusion folds unquoted table names to lower case.
        if crate::catalog::schema::Entity::ALL
            .iter()
            .any(|e| e.name().eq_ignore_ascii_case(&up.name))
        {
            return Err(Error::Model {
                file: model.file.clone(),
                line: 1,
                message: format!(
                    "depends_on `{}`: a model read by others cannot share an input table's name",
                    up.name
                ),
            });
        }
        let table: std::sync::Arc<dyn TableProvider> = match outputs.get(&up.name) {
            Some((schema, batches)) => {
                // The batches' own schema: the plan's may differ in
                // nullability or metadata, which MemTable refuses.
                let schema = batches.first().map_or(schema.clone(), |b| b.schema());
                std::sync::Arc::new(
                    datafusion::datasource::MemTable::try_new(schema, vec![batches.clone()])
                        .map_err(engine)?,
                )
            }
            None => bind(ctx, up, day, start, end).await?.into_view(),
        };
        ctx.deregister_table(up.name.as_str()).map_err(engine)?;
        ctx.register_table(up.name.as_str(), table)
            .map_err(engine)?;
    }
    Ok(())
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
