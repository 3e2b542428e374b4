//! The DataFusion session: a bounded memory pool that spills to a
//! configured directory, and the parallelism of this machine. With the
//! `ballista` feature, `ballista` submits a day's model queries to a
//! cluster and `cluster` runs one (its scheduler and executors).

#[cfg(feature = "ballista")]
pub mod ballista;
#[cfg(feature = "ballista")]
pub mod cluster;
#[cfg(all(test, feature = "ballista"))]
mod rollback_tests;

use std::path::Path;
use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::config::Config;
use crate::error::{Error, Result};

/// A fresh directory under the spill dir (created if needed), removed when
/// dropped: a MongoDB day's Parquet copy, quarantine files staged for a
/// remote batch layer.
pub fn scratch_dir(spill_dir: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    std::fs::create_dir_all(spill_dir).map_err(|e| Error::io(spill_dir, e))?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(spill_dir)
        .map_err(|e| Error::io(spill_dir, e))
}

pub fn session(config: &Config) -> Result<SessionContext> {
    let engine = &config.engine;
    let spill_dir = config.spill_dir();
    std::fs::create_dir_all(&spill_dir).map_err(|e| Error::io(&spill_dir, e))?;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(
            engine.memory_limit.as_u64() as usize
        )))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill_dir])),
        )
        .build_arc()
        .map_err(|e| Error::Config {
            path: config.source_path.clone(),
            message: format!("`engine`: {e}"),
        })?;
    let partitions = engine
        .target_partitions
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut session_config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(engine.batch_size)
        .with_information_schema(false)
        // Push the models' window and key predicates into the Parquet scan.
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
        // A grouping that keeps more than half its rows as groups (user
        // activity: ~2.4 M address sides into ~680 k addresses) is
        // aggregated once, after the repartition, instead of twice. A
        // mainnet week: ~10% less time, ~150 MiB less for that query.
        // DataFusion's own threshold (0.8) kept both steps there.
        .set_str(
            "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold",
            "0.5",
        );
    engine
        .apply_datafusion(session_config.options_mut())
        .map_err(|m| config.invalid("engine.datafusion", m))?;
    #[cfg(feature = "ballista")]
    let session_config = match engine.mode {
        crate::config::EngineMode::Ballista => ballista::session_config(session_config),
        crate::config::EngineMode::Local => session_config,
    };
    Ok(SessionContext::new_with_config_rt(session_config, runtime))
}

/// Where a run's day model queries execute: here, or on a Ballista cluster
/// (`engine.mode`). Either way the rows come back to this process, which
/// checks and writes them.
#[derive(Debug, Clone)]
pub struct Queries {
    place: Place,
    /// `engine.query_timeout`; `None`: no limit.
    limit: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
enum Place {
    Local,
    #[cfg(feature = "ballista")]
    Cluster(ballista::Cluster),
}

impl Queries {
    pub fn open(config: &Config) -> Result<Queries> {
        let limit = config.engine.query_limit();
        #[cfg(feature = "ballista")]
        if let Some(cluster) = ballista::Cluster::open(config)? {
            return Ok(Queries {
                place: Place::Cluster(cluster),
                limit,
            });
        }
        Ok(Queries {
            place: Place::Local,
            limit,
        })
    }

    /// The cluster's URL when queries run remotely: an upstream's output
    /// then is recomputed inside its dependent's plan instead of being
    /// shipped, and only inputs the executors can read are allowed.
    pub fn remote(&self) -> Option<&str> {
        match &self.place {
            Place::Local => None,
            #[cfg(feature = "ballista")]
            Place::Cluster(c) => Some(c.url()),
        }
    }

    /// Executes `df` and collects its rows, within `engine.query_timeout`;
    /// `local` names an error of a query run here.
    pub async fn collect(
        &self,
        model: &str,
        day: chrono::NaiveDate,
        df: datafusion::prelude::DataFrame,
        local: impl FnOnce(datafusion::error::DataFusionError) -> Error,
    ) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        let query = async {
            match &self.place {
                Place::Local => df.collect().await.map_err(local),
                #[cfg(feature = "ballista")]
                Place::Cluster(c) => c.collect(model, day, df).await,
            }
        };
        let Some(limit) = self.limit else {
            return query.await;
        };
        // The deadline is seen when the query yields: at an await on its
        // inputs, or when its scans have used their task's budget
        // (DataFusion's cooperative scheduling). Dropping a local query
        // stops its tasks. Ballista's client keeps the job id to itself,
        // so a cluster job is not cancelled from here: dropping its status
        // stream tells `ledgerflow cluster scheduler`, which cancels it
        // (vendor/README.md); a stock scheduler runs it on, unread.
        tokio::time::timeout(limit, query)
            .await
            .unwrap_or_else(|_| {
                let place = match self.remote() {
                    None => "here".to_string(),
                    Some(url) => format!(
                        "on the Ballista cluster {url} (its job left to the scheduler, which cancels it if it is `ledgerflow cluster scheduler`)"
                    ),
                };
                Err(Error::QueryTimeout {
                    model: model.to_string(),
                    day,
                    limit: humantime::format_duration(limit).to_string(),
                    place,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold(ctx: &SessionContext) -> f64 {
        ctx.copied_config()
            .options()
            .execution
            .skip_partial_aggregation_probe_ratio_threshold
    }

    /// A query past `engine.query_timeout` stops with a timeout naming
    /// the model, the day and the limit; the session serves the next
    /// query; "0s" is no limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_past_the_timeout_is_stopped_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledgerflow.toml");
        let text = |timeout: &str| {
            format!(
                "[batch]\nurl = \"data/batch\"\n[speed]\nurl = \"data/landing\"\n\
                 [serving]\nurl = \"sqlite://serving.db\"\n[engine]\nspill_dir = \"spill\"\n\
                 query_timeout = \"{timeout}\"\n"
            )
        };
        let config = Config::parse(&text("150ms"), &path).unwrap();
        let ctx = session(&config).unwrap();
        let queries = Queries::open(&config).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        // 10^12 rows: days, where the limit allows 150 ms.
        let endless = "SELECT sum(value) FROM generate_series(1, 1000000000000)";
        let df = ctx.sql(endless).await.unwrap();
        let err = queries
            .collect("m", day, df, |e| panic!("not a timeout: {e}"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::QueryTimeout { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("model `m` for 2026-11-01")
                && message.contains("engine.query_timeout (150ms) here"),
            "{message}"
        );
        assert_eq!(err.retry(), crate::error::Retry::Transient);
        let df = ctx
            .sql("SELECT sum(x) FROM (VALUES (1), (2)) AS v(x)")
            .await
            .unwrap();
        let rows = queries
            .collect("m", day, df, |e| panic!("{e}"))
            .await
            .unwrap();
        let sum = rows[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>();
        assert_eq!(sum.map(|a| a.value(0)), Some(3));

        let config = Config::parse(&text("0s"), &path).unwrap();
        assert_eq!(config.engine.query_limit(), None);
        let config = Config::parse(&text("1m"), &path).unwrap();
        assert_eq!(
            config.engine.query_limit(),
            Some(std::time::Duration::from_secs(60))
        );
    }

    #[test]
    fn datafusion_settings_from_the_config_come_after_ledgerflows_own() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[batch]\nurl = \"data/batch\"\n[speed]\nurl = \"data/landing\"\n\
                    [serving]\nurl = \"sqlite://serving.db\"\n[engine]\nspill_dir = \"spill\"\n";
        let path = dir.path().join("ledgerflow.toml");
        let config = Config::parse(text, &path).unwrap();
        assert_eq!(threshold(&session(&config).unwrap()), 0.5);
        let tuned = format!(
            "{text}[engine.datafusion]\nexecution.skip_partial_aggregation_probe_ratio_threshold = 0.9\n"
        );
        let config = Config::parse(&tuned, &path).unwrap();
        assert_eq!(threshold(&session(&config).unwrap()), 0.9);
    }
}
