//! Models: SQL files (DataFusion SQL) with a small header, like dbt models.
//! `spec` parses one file; `dag` orders a project's models; `builtin` holds
//! the three seed models a new project starts with.

pub mod builtin;
pub mod columns;
pub mod dag;
pub mod outputs;
pub mod spec;

pub use outputs::Outputs;

pub use spec::{Grain, ModelSpec};

use std::path::Path;

use crate::error::{Error, Result};

/// Loads every `*.sql` file of `dir`, sorted by name, in dependency order.
pub fn load_dir(dir: &Path) -> Result<Vec<ModelSpec>> {
    let models = crate::sql_file::read_dir(dir)?
        .iter()
        .map(|(file, text)| ModelSpec::parse(file, text))
        .collect::<Result<Vec<_>>>()?;
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
    let days_since_epoch = crate::day::epoch_days(day);
    vec![
        ("day", ScalarValue::Date32(Some(days_since_epoch))),
        ("start", ts(start)),
        ("end", ts(end)),
        ("run_at", ts(chrono::Utc::now())),
    ]
}

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
                    datafusion::datasource::MemTable::try_new(schema, vec![batches.to_vec()])
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

/// The one way a model runs over a window, for the runner (a day) and the
/// realtime loop (minutes): its upstreams made readable, its SQL planned
/// with the window bound, and its output's shape checked against what its
/// header promises (the key columns; a DATE column to replace by day; a
/// timestamp minute first for a realtime model).
pub async fn plan(
    ctx: &datafusion::prelude::SessionContext,
    model: &ModelSpec,
    all: &[ModelSpec],
    outputs: &Outputs,
    day: chrono::NaiveDate,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Result<(arrow::datatypes::SchemaRef, datafusion::prelude::DataFrame)> {
    bind_upstreams(ctx, model, all, outputs, day, start, end).await?;
    let df = bind(ctx, model, day, start, end).await?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    check_output(model, &schema)?;
    Ok((schema, df))
}

fn check_output(model: &ModelSpec, schema: &arrow::datatypes::Schema) -> Result<()> {
    use arrow::datatypes::DataType;
    let refuse = |message: String| {
        Err(Error::Model {
            file: model.file.clone(),
            line: 1,
            message,
        })
    };
    if model.grain == Grain::Realtime {
        let first = &model.key[0];
        if !matches!(
            schema.field_with_name(first).map(|f| f.data_type()),
            Ok(DataType::Timestamp(..))
        ) {
            return refuse(format!(
                "a realtime model's first key column `{first}` must be a timestamp (the minute)"
            ));
        }
    }
    for k in &model.key {
        if schema.field_with_name(k).is_err() {
            return refuse(format!("key column `{k}` is not in the model's output"));
        }
    }
    if let spec::WriteMode::ReplaceDay { column } = &model.write {
        if !matches!(
            schema.field_with_name(column).map(|f| f.data_type()),
            Ok(DataType::Date32)
        ) {
            return refuse(format!(
                "replace_day needs a DATE output column `{column}` (set `-- partition:`)"
            ));
        }
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
    let planned = match settings_context(ctx, &model.datafusion) {
        Ok(Some(own)) => own.sql(&model.sql).await,
        Ok(None) => ctx.sql(&model.sql).await,
        Err(e) => Err(e),
    };
    planned
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

/// A context for a model with `-- datafusion:` settings: the same tables,
/// memory pool and query planner as `ctx` (its state cloned), with the
/// model's settings over the session's. None when it has none.
fn settings_context(
    ctx: &datafusion::prelude::SessionContext,
    settings: &[(String, String)],
) -> datafusion::error::Result<Option<datafusion::prelude::SessionContext>> {
    if settings.is_empty() {
        return Ok(None);
    }
    let state = ctx.state();
    // Not a fresh default catalog: the builder would register it in the
    // catalog list this state shares with `ctx`, over the tables there.
    let mut config = state
        .config()
        .clone()
        .with_create_default_catalog_and_schema(false);
    for (key, value) in settings {
        config.options_mut().set(key, value)?;
    }
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    Ok(Some(datafusion::prelude::SessionContext::new_with_state(
        state,
    )))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn model(header: &str) -> ModelSpec {
        ModelSpec::parse("models/m.sql", &format!("{header}\nSELECT 1")).unwrap()
    }

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn an_output_must_have_the_shape_its_header_promises() {
        let minute = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let daily = model("-- key: day, address\n-- grain: day\n-- write: replace_day");
        let ok = schema(&[("day", DataType::Date32), ("address", DataType::Utf8)]);
        assert!(check_output(&daily, &ok).is_ok());
        let no_key = schema(&[("day", DataType::Date32)]);
        let err = check_output(&daily, &no_key).unwrap_err().to_string();
        assert!(
            err.contains("key column `address`") && err.contains("models/m.sql"),
            "{err}"
        );
        let text_day = schema(&[("day", DataType::Utf8), ("address", DataType::Utf8)]);
        let err = check_output(&daily, &text_day).unwrap_err().to_string();
        assert!(err.contains("replace_day needs a DATE"), "{err}");

        let realtime = model("-- key: minute\n-- grain: realtime\n-- write: upsert");
        assert!(check_output(&realtime, &schema(&[("minute", minute)])).is_ok());
        let err = check_output(&realtime, &schema(&[("minute", DataType::Int64)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be a timestamp"), "{err}");
    }

    /// A model's `-- datafusion:` settings reach its own query (and change
    /// its plan) and nothing else; it still reads the session's tables.
    #[tokio::test]
    async fn a_models_datafusion_settings_apply_to_its_query_alone() {
        let ctx = datafusion::prelude::SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_target_partitions(4),
        );
        ctx.sql("CREATE TABLE t (k BIGINT, v BIGINT) AS VALUES (1, 10), (2, 20), (1, 5)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let sql = "SELECT k AS day, sum(v) AS total FROM t GROUP BY k ORDER BY k";
        let head = "-- key: day\n-- grain: day\n-- write: upsert\n";
        let plain = ModelSpec::parse("models/m.sql", &format!("{head}{sql}")).unwrap();
        let own = ModelSpec::parse(
            "models/m.sql",
            &format!("{head}-- datafusion: optimizer.repartition_aggregations = false\n{sql}"),
        )
        .unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let (start, end) = crate::day::bounds(day);
        let repartitions = |df: &datafusion::prelude::DataFrame| {
            let df = df.clone();
            async move {
                let plan = df.create_physical_plan().await.unwrap();
                let text = datafusion::physical_plan::displayable(plan.as_ref())
                    .indent(true)
                    .to_string();
                text.contains("RepartitionExec: partitioning=Hash")
            }
        };
        let with = bind(&ctx, &own, day, start, end).await.unwrap();
        let without = bind(&ctx, &plain, day, start, end).await.unwrap();
        assert!(!repartitions(&with).await);
        assert!(repartitions(&without).await);
        assert!(
            ctx.state()
                .config()
                .options()
                .optimizer
                .repartition_aggregations
        );
        // The session still has its tables.
        assert!(ctx.table_exist("t").unwrap());
        let rows = with.collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        assert!(
            text.contains("| 1   | 15    |") && text.contains("| 2   | 20    |"),
            "{text}"
        );
    }
}
