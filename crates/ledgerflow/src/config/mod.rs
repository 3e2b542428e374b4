//! `ledgerflow.toml`, typed. The structs are the reference documentation of
//! every setting (docs/configuration.md mirrors them, checked by a test). Loading parses and
//! applies environment overrides; [`Config::validate`] checks what parsing
//! cannot, before anything is built.

mod engine;
mod ingest;
mod jobs;
mod run;
mod scheduler;
mod serving;
mod speed;
mod storage;

pub use engine::*;
pub use ingest::*;
pub use jobs::*;
pub use run::*;
pub use scheduler::*;
pub use serving::*;
pub use speed::*;
pub use storage::*;

use std::path::{Path, PathBuf};

use bytesize::ByteSize;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::location::Location;

/// Environment variables that override the file (useful in CI and Airflow).
pub const ENV_SERVING_URL: &str = "LEDGERFLOW_SERVING_URL";
pub const ENV_BATCH_URL: &str = "LEDGERFLOW_BATCH_URL";
pub const ENV_SPEED_URL: &str = "LEDGERFLOW_SPEED_URL";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Project-wide settings.
    #[serde(default)]
    pub project: ProjectConfig,
    /// The batch layer: committed day partitions.
    pub batch: BatchConfig,
    /// The speed layer: the open day.
    pub speed: SpeedConfig,
    /// The serving database: metric tables and the run ledger.
    pub serving: ServingConfig,
    /// Query engine limits.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The run ledger.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// How a day's models are committed.
    #[serde(default)]
    pub run: RunConfig,
    /// The long-running scheduler (`ledgerflow schedule`).
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Scheduled jobs (`[[jobs]]`), validated by `schedule` and `status`.
    #[serde(default)]
    pub jobs: Vec<JobConfig>,
    /// Partner ingestion (`ledgerflow ingest`): limits, drift and quarantine
    /// policies.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The web page and `/metrics` (`ledgerflow serve`).
    #[serde(default)]
    pub serve: ServeConfig,
    /// Directory of the config file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the config was read from, for error messages.
    #[serde(skip)]
    pub source_path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Directory of model SQL files. Default: `models`.
    #[serde(default = "default_models_dir")]
    pub models_dir: String,
    /// Directory of SQL check files (`checks/*.sql`); missing = none.
    /// Default: `checks`.
    #[serde(default = "default_checks_dir")]
    pub checks_dir: String,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        Self {
            models_dir: default_models_dir(),
            checks_dir: default_checks_dir(),
        }
    }
}

pub use crate::secret::{Secret, SecretUrl};

fn default_true() -> bool {
    true
}

fn default_models_dir() -> String {
    "models".into()
}

fn default_checks_dir() -> String {
    "checks".into()
}

impl Config {
    /// Reads, parses and applies environment overrides; then validates.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("cannot read: {e} (run `ledgerflow init DIR` to create a project)"),
        })?;
        let mut config = Self::parse(&text, path)?;
        config.apply_env(|k| std::env::var(k).ok());
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.source_path = path.to_path_buf();
        config.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(config)
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get(ENV_SERVING_URL).filter(|v| !v.is_empty()) {
            self.serving.url = v.into();
        }
        if let Some(v) = get(ENV_BATCH_URL).filter(|v| !v.is_empty()) {
            self.batch.url = v;
        }
        if let Some(v) = get(ENV_SPEED_URL).filter(|v| !v.is_empty()) {
            self.speed.url = v.into();
        }
    }

    /// A configuration error naming `key`.
    pub fn invalid(&self, key: &str, message: impl std::fmt::Display) -> Error {
        Error::Config {
            path: self.source_path.clone(),
            message: format!("`{key}`: {message}"),
        }
    }

    /// Checks every setting that parsing cannot, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        crate::names::validate(&self.serving.schema)
            .map_err(|m| self.invalid("serving.schema", m))?;
        if self.batch.marker.is_empty() || self.batch.marker.contains('/') {
            return Err(self.invalid("batch.marker", "must be a plain file name"));
        }
        if self.batch.rows_per_file == 0 {
            return Err(self.invalid("batch.rows_per_file", "must be at least 1"));
        }
        let lease = self.ledger.lease;
        if lease < std::time::Duration::from_secs(1)
            || lease > std::time::Duration::from_secs(86_400)
        {
            return Err(self.invalid("ledger.lease", "must be between 1s and 1d"));
        }
        if self.speed.max_lag_blocks < 0 {
            return Err(self.invalid("speed.max_lag_blocks", "must be 0 or more"));
        }
        if self.speed.finality_blocks < 0 {
            return Err(self.invalid("speed.finality_blocks", "must be 0 or more"));
        }
        self.batch_location()?;
        if self.batch.s3.max_retries > 10 {
            return Err(self.invalid("batch.s3.max_retries", "must be at most 10"));
        }
        if self.batch.s3.timeout.is_zero() || self.batch.s3.connect_timeout.is_zero() {
            return Err(self.invalid(
                "batch.s3.timeout / batch.s3.connect_timeout",
                "must be above zero",
            ));
        }
        if let SpeedTarget::Mongo { settings, .. } = self.speed_target()? {
            // MongoDB's own naming rules: a database name has no `/\. "$`,
            // a collection name no `$` (and neither a NUL).
            for (key, name, forbidden) in [
                ("speed.mongodb.database", &settings.database, "/\\. \"$\0"),
                (
                    "speed.mongodb.blocks_collection",
                    &settings.blocks_collection,
                    "$\0",
                ),
                (
                    "speed.mongodb.transactions_collection",
                    &settings.transactions_collection,
                    "$\0",
                ),
            ] {
                if name.is_empty() || name.contains(|c| forbidden.contains(c)) {
                    return Err(self.invalid(key, format!("`{name}` is not a valid MongoDB name")));
                }
            }
            if settings.connect_timeout.is_zero() {
                return Err(self.invalid("speed.mongodb.connect_timeout", "must be above zero"));
            }
        }
        if self
            .speed
            .ttl
            .is_some_and(|t| t < std::time::Duration::from_secs(3600))
        {
            return Err(self.invalid("speed.ttl", "must be at least 1h"));
        }
        if self.speed.poll_interval.is_zero() {
            return Err(self.invalid("speed.poll_interval", "must be above zero"));
        }
        if self.engine.memory_limit < ByteSize::mib(64) {
            return Err(self.invalid("engine.memory_limit", "must be at least 64 MiB"));
        }
        if self.engine.batch_size == 0 {
            return Err(self.invalid("engine.batch_size", "must be at least 1"));
        }
        self.engine
            .apply_datafusion(&mut datafusion::config::ConfigOptions::new())
            .map_err(|m| self.invalid("engine.datafusion", m))?;
        if self.scheduler.poll_interval.is_zero() {
            return Err(self.invalid("scheduler.poll_interval", "must be above zero"));
        }
        if self.scheduler.lease < std::time::Duration::from_secs(2) {
            return Err(self.invalid("scheduler.lease", "must be at least 2s"));
        }
        if self.scheduler.webhook_attempts == 0 {
            return Err(self.invalid("scheduler.webhook_attempts", "must be at least 1"));
        }
        if let Some(url) = &self.scheduler.webhook {
            crate::webhook::check_url(url).map_err(|m| self.invalid("scheduler.webhook", m))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, job) in self.jobs.iter().enumerate() {
            job.parse_times()
                .map_err(|(key, m)| self.invalid(&format!("jobs[{i}] ({}).{key}", job.name), m))?;
            if !names.insert(job.name.as_str()) {
                return Err(self.invalid(
                    &format!("jobs[{i}].name"),
                    format!("job `{}` is defined twice", job.name),
                ));
            }
        }
        if self.engine.parallel_days == 0 {
            return Err(self.invalid("engine.parallel_days", "must be at least 1"));
        }
        if self.engine.mode == EngineMode::Ballista {
            if !cfg!(feature = "ballista") {
                return Err(self.invalid(
                    "engine.mode",
                    "ballista needs a build with the `ballista` feature (on by default; this one was built with --no-default-features)",
                ));
            }
            self.engine
                .scheduler_address()
                .map_err(|m| self.invalid("engine.url", m))?;
        } else if self.engine.url.is_some() {
            return Err(self.invalid("engine.url", "set, but `engine.mode` is not \"ballista\""));
        }
        if self.engine.parallel_models == 0 {
            return Err(self.invalid("engine.parallel_models", "must be at least 1"));
        }
        if self.engine.target_partitions == Some(0) {
            return Err(self.invalid("engine.target_partitions", "must be at least 1"));
        }
        let ingest = &self.ingest;
        if ingest.max_entries == 0 || ingest.max_ratio == 0 || ingest.infer_rows == 0 {
            return Err(self.invalid(
                "ingest.max_entries / max_ratio / infer_rows",
                "must be at least 1",
            ));
        }
        if ingest.max_line < ByteSize::kib(1) {
            return Err(self.invalid("ingest.max_line", "must be at least 1 KiB"));
        }
        if !(0.0..=1.0).contains(&ingest.max_bad_rows_ratio) {
            return Err(self.invalid("ingest.max_bad_rows_ratio", "must be in [0, 1]"));
        }
        if ingest.poll_seconds == 0 {
            return Err(self.invalid("ingest.poll_seconds", "must be at least 1"));
        }
        for table in ingest.expected.keys() {
            crate::names::validate(table).map_err(|m| self.invalid("ingest.expected", m))?;
        }
        for table in ingest.table_policy.keys() {
            crate::names::validate(table).map_err(|m| self.invalid("ingest.table_policy", m))?;
        }
        Ok(())
    }

    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Where the batch layer lives.
    pub fn batch_location(&self) -> Result<Location> {
        self.location("batch.url", &self.batch.url)
    }

    /// The batch layer as a local directory, for the parts that need one
    /// (an error naming `batch.url` otherwise).
    pub fn batch_root(&self) -> Result<PathBuf> {
        match self.batch_location()? {
            Location::Local(root) => Ok(root),
            other => Err(self.invalid(
                "batch.url",
                format!("is {other}; this needs a local directory"),
            )),
        }
    }

    pub fn speed_target(&self) -> Result<SpeedTarget> {
        let url = self.speed.url.expose().trim();
        if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
            return Ok(SpeedTarget::Mongo {
                uri: SecretUrl::new(url),
                settings: self.speed.mongodb.clone().unwrap_or_default(),
            });
        }
        if self.speed.mongodb.is_some() {
            return Err(self.invalid(
                "speed.mongodb",
                "set, but `speed.url` is a landing directory, not a mongodb:// URL",
            ));
        }
        Ok(SpeedTarget::Landing {
            location: self.location("speed.url", url)?,
        })
    }

    fn location(&self, key: &str, value: &str) -> Result<Location> {
        let location = Location::parse(value, &self.base_dir).map_err(|m| self.invalid(key, m))?;
        if matches!(location, Location::Hdfs { .. }) && !cfg!(feature = "hdfs") {
            return Err(self.invalid(
                key,
                "hdfs:// needs a build with the `hdfs` feature (on by default; this one was built with --no-default-features)",
            ));
        }
        Ok(location)
    }

    pub fn models_dir(&self) -> PathBuf {
        self.resolve(&self.project.models_dir)
    }

    pub fn checks_dir(&self) -> PathBuf {
        self.resolve(&self.project.checks_dir)
    }

    pub fn spill_dir(&self) -> PathBuf {
        self.resolve(&self.engine.spill_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[batch]
url = "data/batch"
[speed]
url = "data/landing"
[serving]
url = "sqlite://serving.db"
"#;

    /// `engine.mode = "ballista"` needs `engine.url = "df://host:port"`;
    /// a url without the mode is refused; two days in flight by default in either mode.
    #[test]
    fn ballista_mode_needs_a_scheduler_url() {
        let with = |engine: &str| {
            let text = format!("{MINIMAL}[engine]\n{engine}\n");
            Config::parse(&text, Path::new("l.toml")).and_then(|c| c.validate().map(|_| c))
        };
        assert_eq!(with("").unwrap().engine.parallel_days, 2);
        assert_eq!(with("parallel_days = 1").unwrap().engine.parallel_days, 1);
        let ballista = with("mode = \"ballista\"\nurl = \"df://10.0.0.5:50050\"");
        if !cfg!(feature = "ballista") {
            let err = ballista.unwrap_err().to_string();
            assert!(err.contains("`ballista` feature"), "{err}");
            return;
        }
        let c = ballista.unwrap();
        assert_eq!(
            c.engine.scheduler_address().unwrap(),
            "http://10.0.0.5:50050"
        );
        assert_eq!(c.engine.parallel_days, 2);
        for (engine, says) in [
            ("mode = \"ballista\"", "`engine.url`: ballista mode needs"),
            (
                "mode = \"ballista\"\nurl = \"http://h:1\"",
                "expected df://host:port",
            ),
            (
                "mode = \"ballista\"\nurl = \"df://h\"",
                "expected df://host:port",
            ),
            (
                "url = \"df://h:1\"",
                "`engine.url`: set, but `engine.mode` is not",
            ),
            ("mode = \"spark\"", "unknown variant `spark`"),
        ] {
            let err = with(engine).unwrap_err().to_string();
            assert!(err.contains(says), "{engine}: {err}");
        }
    }

    /// MongoDB-only keys live in `[speed.mongodb]`: read with a mongodb://
    /// URL, refused beside a landing dir, and no longer flat in `[speed]`.
    #[test]
    fn mongodb_settings_are_a_section_of_their_own() {
        let mongo = MINIMAL.replace(
            "[speed]\n",
            "[speed]\nmongodb = { database = \"chain\", follow = \"poll\" }\n",
        );
        let c = Config::parse(&mongo, Path::new("l.toml")).unwrap();
        let mut c2 = c.clone();
        c2.speed.url = String::from("mongodb://h:27017/?directConnection=true").into();
        match c2.speed_target().unwrap() {
            SpeedTarget::Mongo { settings, .. } => {
                assert_eq!(settings.database, "chain");
                assert_eq!(settings.follow, FollowMode::Poll);
                assert_eq!(settings.blocks_collection, "blocks");
            }
            other => panic!("{other:?}"),
        }
        c2.validate().unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("`speed.mongodb`: set, but `speed.url` is a landing directory"),
            "{err}"
        );
        let flat = MINIMAL.replace("[speed]\n", "[speed]\ndatabase = \"chain\"\n");
        let err = Config::parse(&flat, Path::new("l.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `database`") && err.contains("`mongodb`"),
            "{err}"
        );
    }

    /// The configuration reference (docs/configuration.md) and the config
    /// structs name the same keys: each section's fields, as serde lists them when it meets
    /// an unknown one, against the table's first column.
    #[test]
    fn readme_documents_every_key_and_no_other() {
        let table = include_str!("../../../../docs/configuration.md");
        let mut documented = std::collections::BTreeSet::new();
        for line in table.lines().filter(|l| l.starts_with("| `")) {
            let cell = line.split('|').nth(1).expect("a first cell");
            let keys: Vec<&str> = cell
                .split(" / ")
                .map(|k| k.trim().trim_matches('`'))
                .collect();
            let (section, _) = keys[0].rsplit_once('.').expect("section.key");
            documented.insert(keys[0].to_string());
            for k in &keys[1..] {
                documented.insert(format!("{section}.{k}"));
            }
        }
        let mut fields = std::collections::BTreeSet::new();
        let sections = [
            "project",
            "batch",
            "batch.s3",
            "speed",
            "speed.mongodb",
            "serving",
            "engine",
            "ledger",
            "run",
            "scheduler",
            "ingest",
            "serve",
            "jobs[]",
        ];
        for section in sections {
            let text = match section {
                "jobs[]" => format!(
                    "{MINIMAL}[[jobs]]\nname = \"j\"\ncron = \"0 0 * * *\"\nzzz_unknown = 1\n"
                ),
                s if MINIMAL.contains(&format!("[{s}]\n")) => {
                    MINIMAL.replace(&format!("[{s}]\n"), &format!("[{s}]\nzzz_unknown = 1\n"))
                }
                s => format!("{MINIMAL}[{s}]\nzzz_unknown = 1\n"),
            };
            let err = Config::parse(&text, Path::new("l.toml"))
                .unwrap_err()
                .to_string();
            let expected = err
                .split("expected ")
                .nth(1)
                .unwrap_or_else(|| panic!("{section}: {err}"));
            for name in expected.split('`').skip(1).step_by(2) {
                let key = format!("{section}.{name}");
                // A subsection is a field of its parent.
                if !sections.contains(&key.as_str()) {
                    fields.insert(key);
                }
            }
        }
        assert!(fields.len() > 60, "{fields:?}");
        let undocumented: Vec<_> = fields.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&fields).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "keys missing from docs/configuration.md: {undocumented:?}; documented keys that do not exist: {unknown:?}"
        );
    }

    /// No password of a connection URL appears in the config's or the
    /// targets' `Debug` (issue 21: secrets).
    #[test]
    fn url_passwords_never_reach_debug_output() {
        let text = MINIMAL
            .replace("sqlite://serving.db", "postgres://app:hunter2@db:5432/m")
            .replace(
                "data/landing",
                "mongodb://u:hunter3@mongo:27017/?directConnection=true",
            );
        let c = Config::parse(&text, Path::new("l.toml")).unwrap();
        c.validate().unwrap();
        let shown = format!("{c:?} {:?}", c.speed_target().unwrap());
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert!(shown.contains("postgres://app:***@db:5432/m"), "{shown}");
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = Config::parse(MINIMAL, Path::new("/p/ledgerflow.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.batch_root().unwrap(), PathBuf::from("/p/data/batch"));
        assert_eq!(c.batch.s3.timeout, std::time::Duration::from_secs(30));
        assert_eq!(c.batch.marker, "_SUCCESS");
        assert_eq!(c.engine.memory_limit, ByteSize::gib(1));
        assert_eq!(c.resolve("serving.db"), PathBuf::from("/p/serving.db"));
    }

    #[test]
    fn typo_names_the_key() {
        let text = MINIMAL.replace("[serving]", "[serving]\nschem = \"x\"");
        let err = Config::parse(&text, Path::new("l.toml")).unwrap_err();
        assert!(err.to_string().contains("schem"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn env_overrides_and_bad_values() {
        let mut c = Config::parse(MINIMAL, Path::new("l.toml")).unwrap();
        c.apply_env(|k| (k == ENV_SERVING_URL).then(|| "mysql://x".to_string()));
        // (Which schemes serve is the registry's to say: sinks::registry.)
        assert_eq!(c.serving.url.expose(), "mysql://x");
        let mut c = Config::parse(MINIMAL, Path::new("l.toml")).unwrap();
        c.serving.schema = "a".repeat(64);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("serving.schema"));
    }

    #[test]
    fn release_memory_is_bounded_lazy_or_eager() {
        let c = Config::parse(MINIMAL, Path::new("l.toml")).unwrap();
        assert_eq!(c.engine.release_memory, ReleaseMemory::Bounded);
        // 1 GiB for the one query at a time.
        assert_eq!(c.engine.resident_budget(), ByteSize::mib(1024));
        for (name, mode) in [
            ("eager", ReleaseMemory::Eager),
            ("lazy", ReleaseMemory::Lazy),
        ] {
            let text = format!("{MINIMAL}\n[engine]\nrelease_memory = \"{name}\"\n");
            let c = Config::parse(&text, Path::new("l.toml")).unwrap();
            assert_eq!(c.engine.release_memory, mode);
        }
        // Locally the days in flight share the query slots.
        let budget = |engine: &str| {
            let text = format!("{MINIMAL}\n[engine]\nmemory_limit = \"512 MiB\"\n{engine}\n");
            Config::parse(&text, Path::new("l.toml"))
                .unwrap()
                .engine
                .resident_budget()
        };
        assert_eq!(budget(""), ByteSize::mib(512));
        assert_eq!(budget("parallel_models = 2"), ByteSize::mib(2 * 512));
        assert_eq!(
            budget("parallel_days = 3\nparallel_models = 2"),
            ByteSize::mib(2 * 512)
        );
        assert_eq!(
            budget("parallel_days = 1\nparallel_models = 2"),
            ByteSize::mib(512)
        );
        let text = format!("{MINIMAL}\n[engine]\nrelease_memory = \"soon\"\n");
        let err = Config::parse(&text, Path::new("l.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("release_memory") || err.contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn datafusion_settings_pass_through_and_a_wrong_one_is_named() {
        let text = format!(
            "{MINIMAL}\n[engine.datafusion]\nexecution.skip_partial_aggregation_probe_ratio_threshold = 0.1\noptimizer.prefer_existing_sort = true\n\"execution.parquet.pushdown_filters\" = \"false\"\n"
        );
        let c = Config::parse(&text, Path::new("l.toml")).unwrap();
        c.validate().unwrap();
        let mut options = c.engine.datafusion_options();
        options.sort();
        assert_eq!(
            options,
            [
                (
                    "datafusion.execution.parquet.pushdown_filters".to_string(),
                    "false".to_string()
                ),
                (
                    "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold"
                        .to_string(),
                    "0.1".to_string()
                ),
                (
                    "datafusion.optimizer.prefer_existing_sort".to_string(),
                    "true".to_string()
                ),
            ]
        );
        let text = format!("{MINIMAL}\n[engine.datafusion]\nexecution.no_such_thing = 1\n");
        let err = Config::parse(&text, Path::new("l.toml"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("datafusion.execution.no_such_thing"), "{err}");
    }

    #[test]
    fn hdfs_needs_its_feature() {
        let text = MINIMAL.replace("url = \"data/batch\"", "url = \"hdfs://nn:9000/ledger\"");
        let c = Config::parse(&text, Path::new("l.toml")).unwrap();
        match (c.batch_location(), cfg!(feature = "hdfs")) {
            (Ok(location), true) => assert_eq!(location.to_string(), "hdfs://nn:9000/ledger"),
            (Err(e), false) => assert!(e.to_string().contains("`hdfs` feature"), "{e}"),
            (other, feature) => panic!("hdfs feature {feature}: {other:?}"),
        }
    }

    #[test]
    fn s3_settings_and_secrets() {
        let text = MINIMAL.replace(
            "url = \"data/batch\"",
            "url = \"s3://ledger-data/batch\"\n[batch.s3]\nendpoint = \"http://127.0.0.1:8333\"\nallow_http = true\nurl_style = \"virtual_hosted\"\nsecret_access_key = \"hunter2\"",
        );
        let c = Config::parse(&text, Path::new("l.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.batch_location().unwrap().to_string(),
            "s3://ledger-data/batch"
        );
        assert_eq!(c.batch.s3.url_style, S3UrlStyle::VirtualHosted);
        assert!(!format!("{c:?}").contains("hunter2"));
        let err = c.batch_root().unwrap_err().to_string();
        assert!(
            err.contains("batch.url") && err.contains("s3://ledger-data/batch"),
            "{err}"
        );
        let mut c = Config::parse(MINIMAL, Path::new("l.toml")).unwrap();
        c.apply_env(|k| (k == ENV_BATCH_URL).then(|| "s3://k:hunter2@b/p".to_string()));
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("batch.url") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
