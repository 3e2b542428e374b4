//! The checks between a model's query and its write: its declared checks
//! and the SQL checks guarding it, evaluated on the day's output, recorded
//! in `ledgerflow_checks`, and turned into a failed model when one of
//! severity `error` fails (so nothing of the day is written).

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use chrono::{Days, NaiveDate};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::Runner;
use crate::checks::eval::{self, Subject};
use crate::checks::{CheckKind, CheckResult, CheckStatus};
use crate::error::{Error, Result};
use crate::ledger::{RunFilter, RunState};
use crate::models::{self, ModelSpec};

/// What the guard looks at: the model's day, its session and its output.
pub(super) struct Output<'a> {
    pub ctx: &'a SessionContext,
    pub day: NaiveDate,
    pub run_id: Option<i64>,
    pub schema: &'a SchemaRef,
    pub batches: &'a [RecordBatch],
}

impl Runner {
    /// Every check of `model` on `out` (none with `run.checks = false`),
    /// recorded nowhere yet: see [`judge`](Self::judge).
    pub(super) async fn evaluate(
        &self,
        model: &ModelSpec,
        out: &Output<'_>,
    ) -> Result<Vec<CheckResult>> {
        if !self.config.run.checks {
            return Ok(Vec::new());
        }
        self.evaluate_checks(model, out).await
    }

    /// Records `results` of `model` on `day`. `Err` only when they cannot
    /// be recorded, or (as [`Error::CheckFailed`]) when a check of
    /// severity `error` failed.
    pub(super) async fn judge(
        &self,
        model: &ModelSpec,
        day: NaiveDate,
        results: Vec<CheckResult>,
    ) -> Result<Vec<CheckResult>> {
        if results.is_empty() {
            return Ok(results);
        }
        self.record_checks(&results).await?;
        for r in results.iter().filter(|r| r.status == CheckStatus::Warn) {
            tracing::warn!(model = %model.name, day = %day, "{}", r.summary());
        }
        let failures: Vec<String> = results
            .iter()
            .filter(|r| r.blocks())
            .map(CheckResult::summary)
            .collect();
        if !failures.is_empty() {
            return Err(Error::CheckFailed {
                model: model.name.clone(),
                day,
                failures: failures.join("; "),
            });
        }
        Ok(results)
    }

    pub(super) async fn record_checks(&self, results: &[CheckResult]) -> Result<()> {
        super::check_history::record_checks(self.sink.as_ref(), &self.config, results).await
    }

    /// The results of `model`'s checks on `out`, recorded nowhere.
    pub(super) async fn evaluate_checks(
        &self,
        model: &ModelSpec,
        out: &Output<'_>,
    ) -> Result<Vec<CheckResult>> {
        let sql_checks: Vec<_> = self
            .checks
            .iter()
            .filter(|c| c.guards(&model.name, out.day))
            .collect();
        if model.checks.is_empty() && sql_checks.is_empty() {
            return Ok(Vec::new());
        }
        let history = if model
            .checks
            .iter()
            .any(|c| matches!(c.kind, CheckKind::Volume { .. }))
        {
            self.volume_history(&model.name, out.day).await?
        } else {
            Vec::new()
        };
        let subject = Subject {
            model: &model.name,
            day: out.day,
            run_id: out.run_id,
            key: &model.key,
            schema: out.schema.clone(),
            batches: out.batches,
            history: &history,
        };
        let mut results = eval::declared(&subject, &model.checks).await;
        if sql_checks.is_empty() {
            return Ok(results);
        }
        // The model's output under its name, beside the inputs and its
        // upstreams, for the time of its SQL checks.
        let engine = |source| Error::Engine {
            model: model.name.clone(),
            day: out.day,
            source,
        };
        let schema = out
            .batches
            .first()
            .map_or(out.schema.clone(), |b| b.schema());
        let table = MemTable::try_new(schema, vec![out.batches.to_vec()]).map_err(engine)?;
        out.ctx
            .register_table(model.name.as_str(), Arc::new(table))
            .map_err(engine)?;
        let (start, end) = crate::day::bounds(out.day);
        for check in sql_checks {
            let params = models::window_params(out.day, start, end);
            results.push(
                check
                    .evaluate(out.ctx, &model.name, out.day, params, out.run_id)
                    .await,
            );
        }
        out.ctx
            .deregister_table(model.name.as_str())
            .map_err(engine)?;
        Ok(results)
    }

    /// Rows written on the model's latest successful days before `day`
    /// (the newest success of each day), newest day first.
    async fn volume_history(&self, model: &str, day: NaiveDate) -> Result<Vec<i64>> {
        let runs = self
            .sink
            .ledger_list(&RunFilter {
                model: Some(model.to_string()),
                state: Some(RunState::Success),
                from: day.checked_sub_days(Days::new(60)),
                to: day.pred_opt(),
                limit: Some(500),
            })
            .await?;
        let mut by_day: Vec<(NaiveDate, i64)> = Vec::new();
        for r in runs {
            if let Some(rows) = r.rows_written {
                if !by_day.iter().any(|(d, _)| *d == r.day) {
                    by_day.push((r.day, rows));
                }
            }
        }
        by_day.sort_by_key(|(day, _)| std::cmp::Reverse(*day));
        Ok(by_day.into_iter().map(|(_, rows)| rows).collect())
    }
}
