//! An input table of which a run copied only some columns: a scan that
//! needs only those reads the copy, any other scan the original. The copy
//! is a speed day's micro-batches read once, orphans dropped
//! ([`super::unified::Catalog::copy_speed_day`]); copying just the columns
//! the day's models read halves what is written, and a check or model that
//! reads another column still gets the right rows, only slower.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

#[derive(Debug)]
pub struct CopiedTable {
    original: Arc<dyn TableProvider>,
    copy: Arc<dyn TableProvider>,
}

impl CopiedTable {
    /// `copy`'s columns must be some of `original`'s, of the same types.
    pub fn new(original: Arc<dyn TableProvider>, copy: Arc<dyn TableProvider>) -> Self {
        Self { original, copy }
    }

    /// `projection` (of the original's columns) as indices into the copy,
    /// if the copy has every one of them.
    fn in_copy(&self, projection: Option<&Vec<usize>>) -> Option<Vec<usize>> {
        let (schema, copied) = (self.original.schema(), self.copy.schema());
        let wanted = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        wanted
            .iter()
            .map(|&i| copied.index_of(schema.field(i).name()).ok())
            .collect()
    }
}

#[async_trait]
impl TableProvider for CopiedTable {
    fn schema(&self) -> SchemaRef {
        self.original.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    // Filters are not taken (the default): the plan keeps them above the
    // scan, so their columns are in `projection`, and the physical
    // optimizer still pushes them into the Parquet scan below.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match self.in_copy(projection) {
            Some(indices) => self.copy.scan(state, Some(&indices), &[], limit).await,
            None => self.original.scan(state, projection, &[], limit).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn table(columns: &[(&str, Vec<i64>)]) -> Arc<dyn TableProvider> {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, _)| Field::new(*n, DataType::Int64, false))
                .collect::<Vec<_>>(),
        ));
        let arrays = columns
            .iter()
            .map(|(_, v)| Arc::new(Int64Array::from(v.clone())) as _)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
        Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())
    }

    async fn one(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap();
        text.to_string()
    }

    #[tokio::test]
    async fn a_scan_reads_the_copy_only_when_it_has_every_column() {
        // The copy holds other values than the original so that the test
        // sees which one each query read.
        let original = table(&[("a", vec![1, 2]), ("b", vec![10, 20]), ("c", vec![5, 5])]);
        let copy = table(&[("a", vec![100, 200]), ("b", vec![1000, 2000])]);
        let ctx = SessionContext::new();
        ctx.register_table("t", Arc::new(CopiedTable::new(original, copy)))
            .unwrap();
        let from_copy = one(&ctx, "SELECT sum(b) AS s FROM t WHERE a > 150").await;
        assert!(from_copy.contains("2000"), "{from_copy}");
        let from_original = one(&ctx, "SELECT sum(b) AS s FROM t WHERE c = 5").await;
        assert!(from_original.contains("30"), "{from_original}");
        let star = one(&ctx, "SELECT count(*) AS n, max(c) AS m FROM t").await;
        assert!(star.contains("| 2 | 5 |"), "{star}");
    }
}
