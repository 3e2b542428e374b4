//! `engine.mode = "ballista"`: a model's day runs on an Apache DataFusion
//! Ballista cluster. The query is planned here, in the day's session (its
//! planned file list, the reorg filter, the bound `$day` parameters), and
//! the physical plan is submitted to the scheduler; the rows come back here,
//! where they are checked and written exactly once as in local mode.
//!
//! What the plan reads must reach the executors: Parquet files by URL
//! (object storage shared by every executor, or local paths on a one-host
//! cluster) and small in-memory tables serialized inside the plan (the
//! canonical block hashes of a speed day). Upstream model outputs are not
//! shipped: a dependent recomputes its upstreams' queries inside its own
//! plan (`models::bind_upstreams` without outputs).

use arrow::record_batch::RecordBatch;
use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use chrono::NaiveDate;
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionConfig};
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::TryStreamExt;

use crate::config::{Config, EngineMode};
use crate::error::{Error, Result};

/// The cluster a run submits its model queries to.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `df://host:port`, for messages.
    url: String,
    /// The scheduler's gRPC address, `http://host:port`.
    address: String,
    /// One Ballista session per run: its jobs are grouped under it.
    session_id: String,
}

impl Cluster {
    /// The configured cluster, `None` in local mode.
    pub fn open(config: &Config) -> Result<Option<Cluster>> {
        if config.engine.mode != EngineMode::Ballista {
            return Ok(None);
        }
        let address = config
            .engine
            .scheduler_address()
            .map_err(|m| config.invalid("engine.url", m))?;
        Ok(Some(Cluster {
            url: config.engine.url.clone().unwrap_or_default(),
            address,
            session_id: format!("ledgerflow-{}", crate::ledger::this_process()),
        }))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `df` on the cluster and collects its rows.
    pub async fn collect(
        &self,
        model: &str,
        day: NaiveDate,
        df: DataFrame,
    ) -> Result<Vec<RecordBatch>> {
        let started = std::time::Instant::now();
        let session_config = df.task_ctx().session_config().clone();
        let plan = df.create_physical_plan().await.map_err(|e| Error::Engine {
            model: model.to_string(),
            day,
            source: e,
        })?;
        let planned = started.elapsed();
        let fail = |e: DataFusionError| self.error(model, day, e);
        let codec = session_config.ballista_physical_extension_codec();
        let session_config =
            session_config.with_ballista_job_name(&format!("ledgerflow {model} {day}"));
        let mut stream = execute_physical_plan::<PhysicalPlanNode>(
            self.address.clone(),
            &BallistaConfig::default(),
            plan,
            codec.as_ref(),
            self.session_id.clone(),
            session_config,
        )
        .await
        .map_err(fail)?;
        // Push mode: the stream's first batch comes once the job (its
        // stages and shuffles) is done; the rest is the results' fetch.
        let mut batches = Vec::new();
        let mut job = None;
        while let Some(batch) = stream.try_next().await.map_err(fail)? {
            job.get_or_insert_with(|| started.elapsed());
            batches.push(batch);
        }
        let done = started.elapsed();
        let job = job.unwrap_or(done);
        tracing::info!(
            model,
            %day,
            plan_s = planned.as_secs_f64(),
            job_s = (job - planned).as_secs_f64(),
            fetch_s = (done - job).as_secs_f64(),
            rows = batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            "ballista query"
        );
        Ok(batches)
    }

    /// A cluster error, named; transient when another attempt can succeed
    /// (the scheduler unreachable, a job lost with its executors).
    fn error(&self, model: &str, day: NaiveDate, e: DataFusionError) -> Error {
        let message = e.to_string();
        // A plan the cluster cannot take, or a cluster of another major
        // version (Ballista's own check), fails again on a retry.
        let permanent = [
            "failed to serialize",
            "failed to encode",
            "same major version",
            "Error planning",
            "NotImplemented",
        ];
        Error::Cluster {
            model: model.to_string(),
            day,
            url: self.url.clone(),
            transient: !permanent.iter().any(|p| message.contains(p)),
            message,
        }
    }
}

/// The session settings a plan for the cluster is made with: Ballista's
/// (sort-merge joins, no round-robin repartition, no view types, which its
/// shuffle cannot carry).
pub fn session_config(config: SessionConfig) -> SessionConfig {
    config.upgrade_for_ballista()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_error_names_the_url_and_says_whether_a_retry_helps() {
        let cluster = Cluster {
            url: "df://10.0.0.5:50050".into(),
            address: "http://10.0.0.5:50050".into(),
            session_id: "s".into(),
        };
        let day = crate::day::nov(1);
        let err = |m: &str| cluster.error("m", day, DataFusionError::Execution(m.into()));
        let down = err("tonic::transport::Error(Transport, ConnectError(Connection refused))");
        assert!(
            down.to_string()
                .contains("on the Ballista cluster df://10.0.0.5:50050"),
            "{down}"
        );
        assert_eq!(down.retry(), crate::error::Retry::Transient);
        let lost = err("Job 038J failed: all executors were lost");
        assert_eq!(lost.retry(), crate::error::Retry::Transient);
        let other = err("Ballista client 55.0.0 cannot be used with scheduler 56.0.0. The client and the scheduler must have the same major version.");
        assert_eq!(other.retry(), crate::error::Retry::Permanent);
        assert_eq!(other.exit_code(), 1);
    }
}
