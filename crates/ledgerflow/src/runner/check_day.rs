//! `ledgerflow check`: a day's checks on demand, writing nothing but their
//! results. Each day model is recomputed from the day's inputs and its
//! checks evaluated on that output; with `deep`, the output is compared
//! with what the serving table holds for the day (a manual edit, a stale
//! writer); and a day present in both layers has its canonical totals
//! compared across them (a lost micro-batch, a bad compaction, a partner
//! file that differs).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use chrono::NaiveDate;

use super::guard::Output;
use super::Runner;
use crate::catalog::unified::{DayPlan, Layer};
use crate::checks::{CheckResult, CheckStatus, Severity};
use crate::error::{Error, Result};
use crate::models::{self, Grain, ModelSpec};
use crate::sinks::values::{self, Column};
use crate::sinks::WriteMode;

/// The check name of the serving-vs-recomputation comparison.
pub const MATCHES_SERVING: &str = "matches_serving";
/// The check name (and model) of the cross-layer comparison.
pub const LAYERS_AGREE: &str = "layers_agree";
pub const INPUTS: &str = "_inputs";
/// The check name (and model) of the realtime freshness check.
pub const REALTIME_FRESH: &str = "realtime_fresh";
pub const REALTIME: &str = "_realtime";

/// Days past the checkpoint's searched for the speed layer's newest block.
const FRESHNESS_DAYS: u64 = 7;

/// Differing rows shown in a result.
const SAMPLE_ROWS: usize = 5;

#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Also compare each model's recomputed day with the serving table.
    pub deep: bool,
}

impl Runner {
    /// Checks one day of `models` (day-grain ones; in dependency order) and
    /// records the results (no run id).
    pub async fn check_day(
        &self,
        day: NaiveDate,
        models: &[ModelSpec],
        opts: CheckOptions,
    ) -> Result<Vec<CheckResult>> {
        let plan = self.readable_day(day).await?;
        let ctx = self.models_session(&plan, models).await?;
        let (start, end) = crate::day::bounds(day);
        let mut outputs = models::Outputs::new();
        let mut results = Vec::new();
        for model in models.iter().filter(|m| m.grain == Grain::Day) {
            models::bind_upstreams(&ctx, model, &self.models, &outputs, day, start, end).await?;
            let df = models::bind(&ctx, model, day, start, end).await?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df
                .collect()
                .await
                .map_err(|e| self.catalog.engine_error(&model.name, &plan, e))?;
            let out = Output {
                ctx: &ctx,
                day,
                run_id: None,
                schema: &schema,
                batches: &batches,
            };
            results.extend(self.evaluate_checks(model, &out).await?);
            if opts.deep {
                results.push(self.matches_serving(model, &out).await?);
            }
            if models::dag::is_read_by(&model.name, models) {
                outputs.keep(&ctx.runtime_env().memory_pool, &model.name, schema, batches);
            }
        }
        drop(outputs);
        if plan.layer == Layer::Batch {
            results.extend(self.layers_agree(&plan).await?);
        }
        self.record_checks(&results).await?;
        Ok(results)
    }

    /// The checks of a day that are not a model's, run by the scheduler
    /// after each successful tick: the layers of a batch day the speed
    /// layer still holds, and freshness. Recorded; a result that did not
    /// pass is logged.
    pub async fn reconcile(&self, day: NaiveDate) -> Result<Vec<CheckResult>> {
        let mut results = Vec::new();
        if !self.config.run.checks {
            return Ok(results);
        }
        let plan = self.catalog.plan_day(day).await?;
        if plan.layer == Layer::Batch {
            if let Some(r) = self.layers_agree(&plan).await? {
                self.record_checks(std::slice::from_ref(&r)).await?;
                results.push(r);
            }
        }
        results.extend(self.freshness().await?);
        for r in results.iter().filter(|r| r.status != CheckStatus::Pass) {
            tracing::warn!(day = %r.day, "{}", r.summary());
        }
        Ok(results)
    }

    /// Freshness: how many blocks the realtime tables (their checkpoint)
    /// trail the speed layer's newest block, against `speed.max_lag_blocks`.
    /// `None` without realtime models or a checkpoint. Recorded.
    pub async fn freshness(&self) -> Result<Option<CheckResult>> {
        let result = self.freshness_unrecorded().await?;
        if let Some(r) = &result {
            self.record_checks(std::slice::from_ref(r)).await?;
        }
        Ok(result)
    }

    /// [`freshness`](Self::freshness) without recording it.
    pub async fn freshness_unrecorded(&self) -> Result<Option<CheckResult>> {
        let Some(position) = self.realtime_position().await? else {
            return Ok(None);
        };
        let (day, at, newest) = (position.day, position.at_block, position.newest_block);
        let lag = position.lag_blocks();
        let max = self.config.speed.max_lag_blocks;
        let mut r = result(REALTIME, day, REALTIME_FRESH);
        r.observed = Some(format!(
            "realtime tables at block {at}, speed layer at {newest}: {lag} block(s) behind"
        ));
        r.expected = Some(format!(
            "at most {max} block(s) behind (speed.max_lag_blocks)"
        ));
        if lag > max {
            r.status = CheckStatus::Fail;
        }
        Ok(Some(r))
    }

    /// The realtime checkpoint and the speed layer's newest block; `None`
    /// without realtime models or a checkpoint.
    pub async fn realtime_position(&self) -> Result<Option<RealtimePosition>> {
        if !self.models.iter().any(|m| m.grain == Grain::Realtime) {
            return Ok(None);
        }
        let stream = crate::realtime::DEFAULT_STREAM;
        let Some(at) = self.sink.checkpoint(stream).await? else {
            return Ok(None);
        };
        let journal = crate::realtime::checkpoint_journal(&at);
        let Some((day, at)) = crate::realtime::checkpoint_block(&at) else {
            return Ok(None);
        };
        let mut newest = at;
        let last = crate::day::today().min(day + chrono::Days::new(FRESHNESS_DAYS));
        for d in crate::day::range(day, last.max(day)) {
            for h in self.catalog.speed.headers(d).await? {
                newest = newest.max(h.number);
            }
        }
        Ok(Some(RealtimePosition {
            day,
            at_block: at,
            newest_block: newest,
            journal,
        }))
    }

    /// The recomputed day against the serving table's rows of the day,
    /// row by row by key (floats within a relative 1e-9: an aggregation's
    /// order may move the last bits).
    async fn matches_serving(&self, model: &ModelSpec, out: &Output<'_>) -> Result<CheckResult> {
        let mut result = result(&model.name, out.day, MATCHES_SERVING);
        let WriteMode::ReplaceDay { column } = &model.write else {
            result.detail = Some("only replace_day models can be compared by day".into());
            result.status = CheckStatus::Error;
            return Ok(result);
        };
        let served = self
            .sink
            .read_day(&model.name, column, out.day, out.schema)
            .await?;
        let Some(served) = served else {
            result.status = CheckStatus::Fail;
            result.detail = Some(format!(
                "table `{}` is not in the serving database",
                model.name
            ));
            return Ok(result);
        };
        let recomputed = canonical_rows(out.batches).map_err(|m| Error::Data {
            context: format!("{} for {}", model.name, out.day),
            message: m,
        })?;
        let key: Vec<usize> = model
            .key
            .iter()
            .filter_map(|k| out.schema.index_of(k).ok())
            .collect();
        let floats: Vec<bool> = out
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type() == &DataType::Float64)
            .collect();
        let by_key = |rows: Vec<Vec<String>>| -> BTreeMap<Vec<String>, Vec<String>> {
            rows.into_iter()
                .map(|r| (key.iter().map(|&i| r[i].clone()).collect(), r))
                .collect()
        };
        let (served_n, recomputed_n) = (served.len(), recomputed.len());
        let (served, recomputed) = (by_key(served), by_key(recomputed));
        let names: Vec<&str> = out
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let mut differing = Vec::new();
        for (k, row) in &recomputed {
            let why = match served.get(k) {
                None => Some("missing from the serving table".to_string()),
                Some(s) => (0..row.len())
                    .find(|&i| !same(&s[i], &row[i], floats[i]))
                    .map(|i| format!("{}: served {}, recomputed {}", names[i], s[i], row[i])),
            };
            if let Some(why) = why {
                differing.push((k.clone(), why));
            }
        }
        for k in served.keys().filter(|k| !recomputed.contains_key(*k)) {
            differing.push((k.clone(), "not in the recomputation".to_string()));
        }
        result.failing_rows = differing.len() as i64;
        result.observed = Some(format!("{served_n} rows served"));
        result.expected = Some(format!("{recomputed_n} rows recomputed, all equal"));
        if !differing.is_empty() {
            result.status = CheckStatus::Fail;
            let shown: Vec<String> = differing
                .iter()
                .take(SAMPLE_ROWS)
                .map(|(k, why)| {
                    let key: Vec<String> = key
                        .iter()
                        .zip(k)
                        .map(|(&i, v)| format!("{}={v}", names[i]))
                        .collect();
                    format!("{} ({why})", key.join(", "))
                })
                .collect();
            result.sample = Some(shown.join("; "));
        }
        Ok(result)
    }

    /// A day committed in the batch layer that the speed layer still holds:
    /// its canonical block count, transaction count and value moved must be
    /// the same in both.
    async fn layers_agree(&self, batch: &DayPlan) -> Result<Option<CheckResult>> {
        let speed = self.catalog.plan_speed(batch.day).await?;
        if speed.layer == Layer::None {
            return Ok(None);
        }
        let (b, s) = (self.totals(batch).await?, self.totals(&speed).await?);
        let mut result = result(INPUTS, batch.day, LAYERS_AGREE);
        let show =
            |t: &[String; 3]| format!("{} blocks, {} transactions, {} wei moved", t[0], t[1], t[2]);
        result.observed = Some(format!("speed layer: {}", show(&s)));
        result.expected = Some(format!("batch layer: {}", show(&b)));
        if b != s {
            result.status = CheckStatus::Fail;
        }
        Ok(Some(result))
    }

    /// (blocks, transactions, value moved) of a planned day, as text.
    async fn totals(&self, plan: &DayPlan) -> Result<[String; 3]> {
        let ctx = self.session_for(plan).await?;
        let sql = "SELECT \
            (SELECT count(*) FROM blocks WHERE \"timestamp\" >= $start AND \"timestamp\" < $end) AS blocks, \
            (SELECT count(*) FROM transactions WHERE block_timestamp >= $start AND block_timestamp < $end) AS transactions, \
            (SELECT CAST(coalesce(sum(value) FILTER (WHERE receipt_status IS DISTINCT FROM 0), 0) AS DECIMAL(38, 0)) \
             FROM transactions WHERE block_timestamp >= $start AND block_timestamp < $end) AS moved";
        let (start, end) = crate::day::bounds(plan.day);
        let engine = |e| self.catalog.engine_error(INPUTS, plan, e);
        let batches = ctx
            .sql(sql)
            .await
            .and_then(|df| df.with_param_values(models::window_params(plan.day, start, end)))
            .map_err(engine)?
            .collect()
            .await
            .map_err(engine)?;
        let row: &RecordBatch = batches.first().ok_or_else(|| Error::Data {
            context: format!("totals of {}", plan.day),
            message: "no row".into(),
        })?;
        let cell = |i: usize| array_value_to_string(row.column(i), 0).unwrap_or_default();
        Ok([cell(0), cell(1), cell(2)])
    }
}

/// An on-demand check's result: no run, severity error.
fn result(model: &str, day: NaiveDate, check: &str) -> CheckResult {
    CheckResult::pass(None, model, day, check, Severity::Error)
}

/// Every row of `batches` as [`values::canonical_text`].
fn canonical_rows(batches: &[RecordBatch]) -> std::result::Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    for b in batches {
        let columns: Vec<Column> = b
            .columns()
            .iter()
            .map(|c| Column::new(c.as_ref() as &dyn Array))
            .collect::<std::result::Result<_, _>>()?;
        for row in 0..b.num_rows() {
            rows.push(
                columns
                    .iter()
                    .map(|c| c.value(row).and_then(values::canonical_text))
                    .collect::<std::result::Result<_, _>>()?,
            );
        }
    }
    Ok(rows)
}

fn same(served: &str, recomputed: &str, float: bool) -> bool {
    if served == recomputed {
        return true;
    }
    if !float {
        return false;
    }
    match (served.parse::<f64>(), recomputed.parse::<f64>()) {
        (Ok(a), Ok(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn floats_compare_within_a_relative_epsilon() {
        assert!(same("0.1", "0.1", false));
        assert!(!same("1", "2", false));
        assert!(same("0.30000000000000004", "0.3", true));
        assert!(!same("0.3", "0.31", true));
        assert!(!same("0.3", "0.30000000000000004", false));
    }
}

/// Where the realtime tables stand against the speed layer.
#[derive(Debug, Clone)]
pub struct RealtimePosition {
    /// The checkpoint's day.
    pub day: NaiveDate,
    /// The highest block the realtime tables reflect.
    pub at_block: i64,
    /// The speed layer's newest block.
    pub newest_block: i64,
    /// The loop's recent commits and reorgs.
    pub journal: crate::realtime::journal::Journal,
}

impl RealtimePosition {
    pub fn lag_blocks(&self) -> i64 {
        (self.newest_block - self.at_block).max(0)
    }

    /// Seconds the realtime tables have been behind at `now` (unix
    /// seconds): zero when they hold the speed layer's newest block, else
    /// the time since their last commit (the newer blocks have waited at
    /// most that long). `None` when behind with no commit time stored.
    pub fn lag_seconds(&self, now: i64) -> Option<f64> {
        if self.lag_blocks() == 0 {
            return Some(0.0);
        }
        self.journal
            .last_commit()
            .map(|at| (now - at).max(0) as f64)
    }
}
