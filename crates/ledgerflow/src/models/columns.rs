//! Which input columns a day's models read. A speed day of many
//! micro-batches is copied once per run, and only these columns need to be.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use super::{ModelSpec, Outputs};
use crate::catalog::schema::Entity;
use crate::error::{Error, Result};

/// The columns of each input table that `models` read on `day`, by table
/// name; a table no model reads is absent. Planned (not run) in `probe`, a
/// session of its own: the input tables are registered there empty, and a
/// model's upstreams are planned inside it, as views, so what they read
/// counts too.
pub async fn read_by(
    probe: &SessionContext,
    models: &[ModelSpec],
    all: &[ModelSpec],
    day: NaiveDate,
) -> Result<BTreeMap<&'static str, BTreeSet<String>>> {
    let engine = |model: &ModelSpec| {
        let model = model.name.clone();
        move |source| Error::Engine { model, day, source }
    };
    for entity in Entity::ALL {
        let catalog = |source| Error::Engine {
            model: format!("<catalog {}>", entity.name()),
            day,
            source,
        };
        // An empty table is scanned, not inlined like a view: the scan
        // shows which of its columns the optimized plan needs.
        let empty = MemTable::try_new(entity.schema(), vec![vec![]]).map_err(catalog)?;
        probe.deregister_table(entity.name()).ok();
        probe
            .register_table(entity.name(), Arc::new(empty))
            .map_err(catalog)?;
    }
    let (start, end) = crate::day::bounds(day);
    let mut read: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for model in models {
        let (_, df) = super::plan(probe, model, all, &Outputs::new(), day, start, end).await?;
        let optimized = df.into_optimized_plan().map_err(engine(model))?;
        optimized
            .apply_with_subqueries(|node| {
                let LogicalPlan::TableScan(scan) = node else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let Some(entity) = Entity::ALL
                    .into_iter()
                    .find(|e| scan.table_name.table() == e.name())
                else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                let schema = scan.source.schema();
                let columns = read.entry(entity.name()).or_default();
                match &scan.projection {
                    Some(p) => columns.extend(p.iter().map(|&i| schema.field(i).name().clone())),
                    None => columns.extend(schema.fields().iter().map(|f| f.name().clone())),
                }
                for filter in &scan.filters {
                    columns.extend(filter.column_refs().into_iter().map(|c| c.name.clone()));
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .map_err(engine(model))?;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{builtin, dag};

    fn builtin_models() -> Vec<ModelSpec> {
        let parsed = builtin::MODELS
            .iter()
            .map(|(file, sql)| ModelSpec::parse(file, sql).unwrap())
            .collect();
        dag::order(parsed).unwrap()
    }

    fn names(read: &BTreeMap<&str, BTreeSet<String>>, table: &str) -> Vec<String> {
        read.get(table)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_builtin_models_read_few_of_the_input_columns() {
        let all = builtin_models();
        let day = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        let read = read_by(&SessionContext::new(), &all, &all, day)
            .await
            .unwrap();
        assert_eq!(
            names(&read, "transactions"),
            [
                "block_timestamp",
                "from_address",
                "gas_price",
                "receipt_gas_used",
                "receipt_status",
                "to_address",
                "value"
            ]
        );
        let blocks = names(&read, "blocks");
        assert!(blocks.contains(&"gas_limit".to_string()), "{blocks:?}");
        assert!(!blocks.contains(&"hash".to_string()), "{blocks:?}");
        // An upstream planned inside its dependent counts: the daily
        // metrics alone read user activity's inputs through it.
        let daily: Vec<ModelSpec> = all
            .iter()
            .filter(|m| m.name == "block_daily_metrics")
            .cloned()
            .collect();
        let read = read_by(&SessionContext::new(), &daily, &all, day)
            .await
            .unwrap();
        assert!(names(&read, "transactions").contains(&"from_address".to_string()));
    }

    #[tokio::test]
    async fn select_star_reads_every_column_and_an_unread_table_is_absent() {
        let star = ModelSpec::parse(
            "models/star.sql",
            "-- key: hash\n-- grain: day\n-- write: upsert\nSELECT * FROM transactions",
        )
        .unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        let models = std::slice::from_ref(&star);
        let read = read_by(&SessionContext::new(), models, models, day)
            .await
            .unwrap();
        assert_eq!(
            read["transactions"].len(),
            Entity::Transactions.schema().fields().len()
        );
        assert!(!read.contains_key("blocks"));
    }
}
