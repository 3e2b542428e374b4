//! `[engine]`: the query engine's memory, spilling and parallelism.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Memory the query engine may use before it spills to disk (e.g.
    /// "1 GiB"). Default: 1 GiB.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// Directory for spill files (relative to this file). Default:
    /// `.ledgerflow/spill`.
    #[serde(default = "default_spill_dir")]
    pub spill_dir: String,
    /// Parallelism of query execution. Default: the number of cores.
    #[serde(default)]
    pub target_partitions: Option<usize>,
    /// Rows per Arrow batch. Default: 8192.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How many model queries run at once. One query already uses every
    /// core of a small machine. A model's checks and write hold no slot,
    /// so the next query overlaps them. Locally the slots are shared by
    /// the days in flight. Default: 1.
    #[serde(default = "default_parallel_models")]
    pub parallel_models: usize,
    /// Days of a `backfill` in flight at once: a day's queries run while
    /// the day before is written; each model's days still commit oldest
    /// first. Each day in flight has its own `memory_limit` pool; locally
    /// they share the `parallel_models` query slots, the oldest day's
    /// queries first, so a later day's query fills an earlier day's write.
    /// Default: 2, locally and on a cluster (there, set it to the
    /// executors' slots / 2). Locally on 2 cores a week was 4% and a month
    /// 8-14% faster than one day at a time, for 35-60 MiB more at its peak
    /// (docs/benchmarks.md).
    #[serde(default = "default_parallel_days")]
    pub parallel_days: usize,
    /// Where the day's model queries run: "local" (this process) or
    /// "ballista" (planned here, executed on the Ballista cluster at
    /// `engine.url`; written here, exactly once, as locally). Default:
    /// "local".
    #[serde(default)]
    pub mode: EngineMode,
    /// The Ballista scheduler, `df://host:port` (ballista mode only).
    #[serde(default)]
    pub url: Option<String>,
    /// When memory a query freed goes back to the system: "bounded" keeps
    /// it for reuse while the process holds less than
    /// [`EngineConfig::resident_budget`] and returns it once the process
    /// holds more; "lazy" always keeps it (fastest, the peak grows with
    /// the range); "eager" returns it at once (the least memory, ~30-50%
    /// more time: the kernel zeroes the pages again). Default: "bounded".
    #[serde(default)]
    pub release_memory: ReleaseMemory,
    /// DataFusion's own settings, passed as they are, for what ledgerflow
    /// does not expose: keys below `datafusion.` (`[engine.datafusion]`
    /// `execution.batch_size = 4096` sets `datafusion.execution.batch_size`).
    /// Applied after ledgerflow's own settings. Default: none.
    #[serde(default)]
    pub datafusion: toml::Table,
    /// The longest a model's query of `run`, `backfill` or `schedule` may
    /// run (here or on the cluster; the wait for a query slot not counted;
    /// the realtime loop's short recomputations are not limited) before it
    /// is stopped and the model's day fails, retryably, with nothing
    /// written: a hung cluster job or a runaway query cannot hold a
    /// schedule forever. "0s" means no limit (as PostgreSQL's
    /// `statement_timeout = 0`). Default: 1h.
    #[serde(default = "default_query_timeout", with = "humantime_serde")]
    pub query_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineMode {
    #[default]
    Local,
    Ballista,
}

impl EngineConfig {
    /// The resident memory above which `release_memory = "bounded"` gives
    /// freed memory back: a `memory_limit` for each day pool that can have
    /// a query running at once. Locally the days in flight share
    /// `parallel_models` query slots, and a day waiting for its slot holds
    /// little (its write's rows, let go once copied); on a cluster each
    /// day in flight has its queries running. Nothing beside the pools
    /// (the binary, the runtime, reads in flight) is added: a mainnet
    /// week's live peak at 512 MiB is ~330 MiB, and the 128 MiB once added
    /// only let freed memory pile up to 640 MiB, over DuckDB's ~580, for
    /// no time measurably saved (docs/benchmarks.md). Memory in use is
    /// never cut, so a process whose live set is over the budget purges
    /// about ten times a second.
    pub fn resident_budget(&self) -> ByteSize {
        let queries = match self.mode {
            EngineMode::Local => self.parallel_days.min(self.parallel_models),
            EngineMode::Ballista => self.parallel_days,
        };
        ByteSize::b(
            self.memory_limit
                .as_u64()
                .saturating_mul(queries.max(1) as u64),
        )
    }

    /// `[engine.datafusion]` as DataFusion's (key, value) pairs, each key
    /// spelled out from `datafusion.` (nested tables joined by dots).
    pub fn datafusion_options(&self) -> Vec<(String, String)> {
        fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
            for (key, value) in table {
                let key = format!("{prefix}.{key}");
                match value {
                    toml::Value::Table(t) => flatten(&key, t, out),
                    toml::Value::String(s) => out.push((key, s.clone())),
                    other => out.push((key, other.to_string())),
                }
            }
        }
        let mut out = Vec::new();
        flatten("datafusion", &self.datafusion, &mut out);
        out
    }

    /// `query_timeout`, or `None` for no limit ("0s").
    pub fn query_limit(&self) -> Option<std::time::Duration> {
        (!self.query_timeout.is_zero()).then_some(self.query_timeout)
    }

    /// Sets `[engine.datafusion]` on `options`; the first key DataFusion
    /// refuses, with its reason, as the error.
    pub fn apply_datafusion(
        &self,
        options: &mut datafusion::config::ConfigOptions,
    ) -> std::result::Result<(), String> {
        for (key, value) in self.datafusion_options() {
            options
                .set(&key, &value)
                .map_err(|e| format!("{key}: {e}"))?;
        }
        Ok(())
    }

    /// The Ballista scheduler's gRPC address (`http://host:port`) from
    /// `engine.url` (`df://host:port`), or why it is not one.
    pub fn scheduler_address(&self) -> std::result::Result<String, String> {
        let url = self
            .url
            .as_deref()
            .ok_or("ballista mode needs `engine.url = \"df://host:port\"`")?;
        let rest = url
            .strip_prefix("df://")
            .ok_or_else(|| format!("`{url}`: expected df://host:port"))?;
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .ok_or_else(|| format!("`{url}`: expected df://host:port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("`{url}`: expected df://host:port"));
        }
        Ok(format!("http://{host}:{port}"))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseMemory {
    #[default]
    Bounded,
    Lazy,
    Eager,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            memory_limit: default_memory_limit(),
            spill_dir: default_spill_dir(),
            target_partitions: None,
            batch_size: default_batch_size(),
            parallel_models: default_parallel_models(),
            parallel_days: default_parallel_days(),
            mode: EngineMode::default(),
            url: None,
            release_memory: ReleaseMemory::default(),
            datafusion: toml::Table::new(),
            query_timeout: default_query_timeout(),
        }
    }
}

pub(super) fn default_memory_limit() -> ByteSize {
    ByteSize::gib(1)
}

pub(super) fn default_spill_dir() -> String {
    ".ledgerflow/spill".into()
}

pub(super) fn default_batch_size() -> usize {
    8192
}

pub(super) fn default_parallel_models() -> usize {
    1
}

pub(super) fn default_query_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}

pub(super) fn default_parallel_days() -> usize {
    2
}
