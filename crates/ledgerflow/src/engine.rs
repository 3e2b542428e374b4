//! The DataFusion session: a bounded memory pool that spills to a
//! configured directory, and the parallelism of this machine.

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
    let session_config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(engine.batch_size)
        .with_information_schema(false)
        // Push the models' window and key predicates into the Parquet scan.
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true);
    Ok(SessionContext::new_with_config_rt(session_config, runtime))
}
