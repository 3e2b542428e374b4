//! `ledgerflow cluster`: a Ballista scheduler and its executors as
//! processes of this binary, so a cluster needs nothing but ledgerflow and
//! the project's configuration. Every process reads the batch layer (and an
//! S3 landing dir) through the project's own object stores, built from
//! `[batch.s3]` and the standard AWS environment, never from a message.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::RuntimeProducer;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;
use object_store::ObjectStore;

use crate::catalog::store::PartitionStore;
use crate::config::{Config, SpeedTarget};
use crate::error::{Error, Result};

/// How a scheduler listens and judges its executors.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    /// The address executors report task status to (default: the bind
    /// address; set it when binding 0.0.0.0).
    pub external_host: Option<String>,
    /// An executor silent this long is lost: its tasks run elsewhere.
    pub executor_timeout: Duration,
}

/// Where an executor listens, whom it serves and how much it runs at once.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler_host: String,
    pub scheduler_port: u16,
    pub bind_host: String,
    /// The address the scheduler and clients reach it at (default: the
    /// address its connection to the scheduler comes from).
    pub external_host: Option<String>,
    /// Arrow Flight (results and shuffle reads).
    pub port: u16,
    /// Task launches from the scheduler.
    pub grpc_port: u16,
    /// Tasks at once.
    pub slots: usize,
    pub work_dir: PathBuf,
}

fn cluster_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("ballista {what}: {e}"))
}

/// The project's remote stores (batch layer, an S3 landing dir) with the
/// URLs the plans name them by.
fn project_stores(config: &Config) -> Result<Vec<(url::Url, Arc<dyn ObjectStore>)>> {
    let mut stores = Vec::new();
    let batch = PartitionStore::open(&config.batch_location()?, &config.batch.s3)?;
    stores.extend(batch.engine_store());
    if let SpeedTarget::Landing { location } = config.speed_target()? {
        stores.extend(PartitionStore::open(&location, &config.batch.s3)?.engine_store());
    }
    Ok(stores)
}

fn register(runtime: &RuntimeEnv, stores: &[(url::Url, Arc<dyn ObjectStore>)]) {
    for (url, store) in stores {
        runtime.register_object_store(url, store.clone());
    }
}

/// Serves as the cluster's scheduler until SIGINT or SIGTERM.
pub async fn run_scheduler(config: &Config, opts: &SchedulerOptions) -> Result<()> {
    let stores = project_stores(config)?;
    let session_builder: ballista_scheduler::scheduler_server::SessionBuilder =
        Arc::new(move |c: SessionConfig| {
            let state = ballista_core::utils::default_session_builder(c)?;
            register(state.runtime_env(), &stores);
            Ok(state)
        });
    let timeout = opts.executor_timeout.as_secs().max(1);
    let scheduler = SchedulerConfig {
        bind_host: opts.bind.ip().to_string(),
        bind_port: opts.bind.port(),
        external_host: opts
            .external_host
            .clone()
            .unwrap_or_else(|| opts.bind.ip().to_string()),
        executor_timeout_seconds: timeout,
        expire_dead_executor_interval_seconds: (timeout / 3).max(1),
        override_session_builder: Some(session_builder),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&scheduler)
        .await
        .map_err(|e| cluster_error("scheduler", e))?;
    tokio::select! {
        served = start_server(cluster, opts.bind, Arc::new(scheduler)) => {
            served.map_err(|e| cluster_error(&format!("scheduler on {}", opts.bind), e))
        }
        _ = shutdown() => Ok(()),
    }
}

/// Serves as one executor until SIGINT or SIGTERM (Ballista's own handling).
pub async fn run_executor(config: &Config, opts: &ExecutorOptions) -> Result<()> {
    let stores = project_stores(config)?;
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| Error::io(&opts.work_dir, e))?;
    let work_dir = opts.work_dir.display().to_string();
    let spill = work_dir.clone();
    let runtime: RuntimeProducer = Arc::new(move |_: &SessionConfig| {
        let runtime = RuntimeEnvBuilder::new()
            .with_temp_file_path(spill.clone())
            .build()?;
        register(&runtime, &stores);
        Ok(Arc::new(runtime))
    });
    let executor = ExecutorProcessConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        port: opts.port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler_host.clone(),
        scheduler_port: opts.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.slots,
        work_dir: Some(work_dir),
        memory_pool_size: Some(config.engine.memory_limit.as_u64()),
        executor_heartbeat_interval_seconds: 2,
        override_runtime_producer: Some(runtime),
        ..Default::default()
    };
    start_executor_process(Arc::new(executor))
        .await
        .map_err(|e| cluster_error(&format!("executor on port {}", opts.port), e))
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
