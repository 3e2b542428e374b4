//! `ledgerflow explain`: a model's plan for a day, as a run would plan it
//! (the day's inputs from its layer, its `-- datafusion:` settings, the
//! models it reads computed inside it), without writing anything. With
//! `analyze` the query runs here and each operator shows its rows, time and
//! spills: what a user tuning a model's settings needs to see.

use arrow::util::display::array_value_to_string;
use chrono::NaiveDate;

use super::Runner;
use crate::error::{Error, Result};
use crate::models;

/// A day's plan of one model, as text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explained {
    pub model: String,
    pub day: NaiveDate,
    /// `batch` or `speed`: where the day's inputs were read from.
    pub layer: String,
    /// (plan type, plan), as DataFusion names them: `logical_plan`,
    /// `physical_plan`, or `Plan with Metrics` when analyzed.
    pub plans: Vec<(String, String)>,
}

impl Runner {
    /// The plan of `model` for `day`. `verbose`: every planning step too;
    /// `analyze`: run the query here (on a cluster too: the plan is this
    /// host's) and show each operator's metrics.
    pub async fn explain(
        &self,
        model: &str,
        day: NaiveDate,
        verbose: bool,
        analyze: bool,
    ) -> Result<Explained> {
        let spec = self
            .select(&[model.to_string()])?
            .pop()
            .expect("select returns the model it was given");
        let plan = self.readable_day(day).await?;
        let ctx = self
            .models_session(&plan, std::slice::from_ref(&spec))
            .await?;
        let (start, end) = crate::day::bounds(day);
        let none = models::Outputs::new();
        models::bind_upstreams(&ctx, &spec, &self.models, &none, day, start, end).await?;
        let df = models::bind(&ctx, &spec, day, start, end).await?;
        let engine = |e| self.catalog.engine_error(&spec.name, &plan, e);
        let batches = df
            .explain(verbose, analyze)
            .map_err(engine)?
            .collect()
            .await
            .map_err(engine)?;
        let mut plans = Vec::new();
        for b in &batches {
            for row in 0..b.num_rows() {
                let text = |i: usize| {
                    array_value_to_string(b.column(i), row)
                        .map_err(|e| Error::data(format!("{}'s plan", spec.name), e))
                };
                plans.push((text(0)?, text(1)?));
            }
        }
        Ok(Explained {
            model: spec.name,
            day,
            layer: plan.layer.as_str().to_string(),
            plans,
        })
    }
}
