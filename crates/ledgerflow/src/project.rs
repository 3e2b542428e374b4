//! `ledgerflow init DIR`: a new project on embedded defaults (Parquet batch
//! layer, landing-dir speed layer, SQLite serving database).

use std::path::Path;

use crate::error::{Error, Result};
use crate::models::builtin;

pub const CONFIG_FILE: &str = "ledgerflow.toml";

pub const DEFAULT_CONFIG: &str = r#"# ledgerflow project. Paths are relative to this file.
# Every key is documented in docs/configuration.md.

[project]
# Directory of model SQL files (one table per file).
models_dir = "models"
# Directory of SQL checks (each returns the rows that violate it).
checks_dir = "checks"

[batch]
# Batch layer root: <url>/<table>/date=YYYY-MM-DD/*.parquet (env: LEDGERFLOW_BATCH_URL).
# A local path, file:///abs, s3://bucket/prefix or hdfs://namenode:port/path.
url = "data/batch"
# A partition is committed once this marker exists; it is written last.
marker = "_SUCCESS"
# Rows per Parquet file when ledgerflow writes a partition.
rows_per_file = 500000

# For s3:// URLs (the batch layer and an s3:// landing dir). Credentials come
# from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a web identity, or the
# instance's metadata), not from this file.
# [batch.s3]
# endpoint = "http://127.0.0.1:8333"   # S3-compatible servers; default AWS
# region = "us-east-1"
# allow_http = false
# url_style = "path"                   # or "virtual_hosted"
# timeout = "30s"
# connect_timeout = "5s"
# max_retries = 3
# retry_timeout = "30s"

[speed]
# Speed layer: landing dir of micro-batch Parquet files, or MongoDB
# ("mongodb://host:27017/?directConnection=true") (env: LEDGERFLOW_SPEED_URL).
url = "data/landing"
# Retention: a day older than this and not committed in the batch layer is
# an error. Default: the TTL index on blocks.timestamp (MongoDB).
# ttl = "48h"
# When the speed layer is down: "fail" (exit 1) or "skip" (exit 99).
# on_unavailable = "fail"
# How often `realtime` looks for new data.
# poll_interval = "100ms"
# Confirmations a day's last block needs before `compact` closes the day.
# finality_blocks = 64

# With a mongodb:// speed.url only (refused beside a landing dir).
# [speed.mongodb]
# database = "ledger"
# Collections; time fields `timestamp` and `block_timestamp` as BSON dates,
# wei as Decimal128 or decimal strings.
# blocks_collection = "blocks"
# transactions_collection = "transactions"
# connect_timeout = "5s"
# create_indexes = true
# realtime follows by "auto" | "change_stream" | "poll".
# follow = "auto"

[serving]
# sqlite://PATH or postgres://user@host:port/db (env: LEDGERFLOW_SERVING_URL).
url = "sqlite://serving.db"
# PostgreSQL schema for metric tables and the run ledger.
schema = "public"

[engine]
# Memory the query engine may use before spilling to spill_dir.
memory_limit = "1 GiB"
spill_dir = ".ledgerflow/spill"
# target_partitions = 2     # default: number of cores
# batch_size = 8192
# parallel_models = 1       # model queries at once (writes overlap the next)
# parallel_days = 2         # backfill days in flight (a day's queries fill the day before's writes)
# release_memory = "bounded" # freed memory kept under memory_limit x min(parallel_days, parallel_models); "lazy" | "eager"
# query_timeout = "1h"      # a model query running longer is stopped, its day failed (retryable); "0s": no limit

# [ledger]
# lease = "1m"              # an open run without a heartbeat this long is abandoned

# [run]
# commit = "model"          # or "day": a day's models in one transaction
# checks = true             # false skips every check (declared and checks/*.sql)

# `ledgerflow schedule` (one leader per serving database; see README).
# [scheduler]
# poll_interval = "1s"
# grace_period = "30s"      # SIGTERM: running runs may finish this long
# lease = "10s"             # a vanished leader's lock is released within ~this
# webhook = "https://hooks.example.com/ledgerflow"   # SLA alerts (JSON POST)

# [[jobs]]
# name = "daily"
# cron = "30 0 * * *"       # 5 fields, or 6 with seconds first
# timezone = "UTC"
# day = "yesterday"         # today | yesterday | today-N, from the tick's date
# models = []               # default: all, in dependency order
# retries = 3
# retry_delay = "1m"        # doubles per retry, with jitter
# retry_max_delay = "30m"
# sla = "02:00"             # done by 02:00 in `timezone` (or a duration: "2h")
# catchup = false           # after downtime only the latest interval runs
# max_catchup = 3
# max_active_runs = 1
"#;

/// Writes ledgerflow.toml, the default models and their checks into `dir`. Refuses to
/// touch an existing project.
pub fn init(dir: &Path) -> Result<()> {
    let config = dir.join(CONFIG_FILE);
    if config.exists() || dir.join("models").exists() {
        return Err(Error::Usage(format!(
            "{} already holds a project; refusing to overwrite it",
            dir.display()
        )));
    }
    let models = dir.join("models");
    std::fs::create_dir_all(&models).map_err(|e| Error::io(&models, e))?;
    std::fs::write(&config, DEFAULT_CONFIG).map_err(|e| Error::io(&config, e))?;
    for (name, sql) in builtin::MODELS {
        let path = models.join(name);
        std::fs::write(&path, sql).map_err(|e| Error::io(&path, e))?;
    }
    let checks = dir.join("checks");
    std::fs::create_dir_all(&checks).map_err(|e| Error::io(&checks, e))?;
    for (name, sql) in crate::checks::builtin::CHECKS {
        let path = checks.join(name);
        std::fs::write(&path, sql).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// The default project's config rooted at `dir`, serving into `serving_url`.
#[cfg(test)]
pub(crate) fn test_config(dir: &Path, serving_url: &str) -> crate::config::Config {
    let mut c = crate::config::Config::parse(DEFAULT_CONFIG, &dir.join(CONFIG_FILE))
        .expect("default config parses");
    c.serving.url = serving_url.to_owned().into();
    c.validate().expect("default config is valid");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_valid_project_and_refuses_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        init(&dir).unwrap();
        let c = crate::config::Config::load(&dir.join(CONFIG_FILE)).unwrap();
        let models = crate::models::load_dir(&c.models_dir()).unwrap();
        assert_eq!(models.len(), 3);
        let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        let checks = crate::checks::sql::load_dir(&c.checks_dir(), &names).unwrap();
        assert_eq!(checks.len(), 2);
        assert!(init(&dir).unwrap_err().to_string().contains("refusing"));
    }
}
