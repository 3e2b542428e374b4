//! The library's typed errors. Each variant says which layer failed and names
//! the file, column, setting, day or host involved; the binary adds context
//! and maps them to exit codes ([`Error::exit_code`]).

use std::path::PathBuf;

use chrono::NaiveDate;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether running the same thing again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Retry {
    /// Something outside was down, busy or late (a connection lost, a
    /// serialization failure, a timeout, a source down, a day not landed
    /// yet): a later attempt may succeed.
    Transient,
    /// The same inputs fail the same way (a SQL or plan error, a constraint
    /// violation, a schema mismatch, bad configuration): retrying only
    /// repeats it; someone must change something.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ledgerflow.toml is unreadable, mistyped, or names an impossible setting.
    #[error("configuration error in {path}: {message}")]
    Config { path: PathBuf, message: String },

    /// A command-line value or project layout is wrong (exit 2).
    #[error("{0}")]
    Usage(String),

    /// Another process holds a lock this command needs (a day's
    /// compaction, an ingest into the layer), or took it over before this
    /// one committed: nothing was committed, and the same command succeeds
    /// once the lock is free (exit 1, transient). The message names the
    /// lock and, where known, its holder.
    #[error("{0}")]
    LockHeld(String),

    /// A day that has data in neither layer.
    #[error("no data for {day}: the batch layer has no committed partition at {batch} and the speed layer has no files at {speed} (pass --allow-empty to write an empty day)")]
    DayNotFound {
        day: NaiveDate,
        batch: String,
        speed: String,
    },

    /// A Parquet file that cannot be opened or decoded.
    #[error("corrupt or unreadable Parquet file {file}: {message}")]
    CorruptFile { file: String, message: String },

    /// A file whose schema lacks a column or types it differently.
    #[error("{file}: column `{column}` {problem} (expected {expected})")]
    Schema {
        file: String,
        column: String,
        expected: String,
        problem: String,
    },

    /// A model file's header or SQL is wrong; `line` is 1-based in the file.
    #[error("model {file}:{line}: {message}")]
    Model {
        file: String,
        line: usize,
        message: String,
    },

    /// The query engine failed while planning or executing a model.
    #[error("engine error in model `{model}` for {day}: {source}")]
    Engine {
        model: String,
        day: NaiveDate,
        #[source]
        source: datafusion::error::DataFusionError,
    },

    /// A model's query ran past `engine.query_timeout` and was stopped
    /// (`place` says where it ran, and what became of a cluster job).
    #[error("model `{model}` for {day}: the query ran longer than engine.query_timeout ({limit}) {place}; stopped, nothing written")]
    QueryTimeout {
        model: String,
        day: NaiveDate,
        limit: String,
        place: String,
    },

    /// A query the Ballista cluster ran or could not run: the scheduler
    /// unreachable, a job that failed (an executor lost beyond the
    /// cluster's retries), a plan that cannot run remotely.
    #[error("model `{model}` for {day} on the Ballista cluster {url}: {message}")]
    Cluster {
        model: String,
        day: NaiveDate,
        url: String,
        message: String,
        transient: bool,
    },

    /// A model's query could not read its inputs from their store.
    #[error("model `{model}` for {day}: reading {location}: {message}")]
    InputStore {
        model: String,
        day: NaiveDate,
        /// The layer's root (bucket and prefix).
        location: String,
        message: String,
        transient: bool,
    },

    /// Object store I/O (local disk, S3, HDFS). The message is the
    /// store's innermost one (the server's code and message, not its XML),
    /// after the location (bucket and prefix, never credentials).
    #[error("{location}: {}", concise(cause))]
    ObjectStore {
        location: String,
        cause: object_store::Error,
    },

    /// Local file I/O.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The serving database refused or could not be reached. `target` is
    /// `host:port/database`, never the password.
    #[error("serving database {target}: {message}")]
    Serving {
        target: String,
        message: String,
        /// Whether the failure was the connection or the server's state
        /// (lost, busy, shutting down, serialization) rather than the
        /// statement or the data.
        transient: bool,
    },

    /// A model's output does not fit the sink table that already exists.
    #[error("sink table {table}: {message}")]
    SinkSchema { table: String, message: String },

    /// The scheduler cannot lead (another one does) or cannot go on.
    #[error("{0}")]
    Scheduler(String),

    /// An input of `ingest` refused as a whole: hostile entry, over a limit,
    /// corrupt compression, unreadable CSV, or a known name with new content.
    /// `input` names the archive (and entry, line, column when known).
    #[error("rejected {input}: {reason}")]
    Rejected { input: String, reason: String },

    /// A table of an ingest that could not be merged for a day (too many bad
    /// rows, an incompatible type change under the `fail` policy).
    #[error("ingest table `{table}` for {day}: {message}")]
    IngestTable {
        table: String,
        day: NaiveDate,
        message: String,
    },

    /// The speed layer (MongoDB) cannot be reached. `target` is
    /// `host:port/database`, never the password. Under
    /// `speed.on_unavailable = "skip"` a run records it as skipped (exit 99).
    #[error("speed layer {target} is unavailable: {message}")]
    SourceUnavailable { target: String, message: String },

    /// The speed layer answered, but with something unusable: a refused
    /// query, or a document that does not fit the ledger schema.
    #[error("speed layer {target}: {message}")]
    Speed { target: String, message: String },

    /// A day gone from the speed layer (older than its TTL) that was never
    /// committed to the batch layer: reading it would give partial numbers.
    #[error("{day} is neither committed in the batch layer ({batch}) nor within the speed layer's TTL ({ttl} at {speed}): compact days before they expire, or ingest the day into the batch layer")]
    BeyondTtl {
        day: NaiveDate,
        batch: String,
        speed: String,
        ttl: String,
    },

    /// A write whose inputs were read before those of a write of the same
    /// (table, day) that has committed: dropped, so older data never
    /// replaces newer.
    #[error("{table} for {day}: superseded by a run that read its inputs later and committed first (version {by} > {version}); nothing written")]
    Superseded {
        table: String,
        day: NaiveDate,
        version: i64,
        by: i64,
    },

    /// Anything else from Arrow or Parquet while writing files.
    #[error("{context}: {message}")]
    Data { context: String, message: String },

    /// A check of severity `error` failed on a model's output: nothing of
    /// the day was written.
    #[error("{model} for {day}: {failures}; nothing written")]
    CheckFailed {
        model: String,
        day: NaiveDate,
        /// The failing checks' summaries, `; `-separated.
        failures: String,
    },
}

impl Error {
    /// Exit code for the binary: 2 for usage and configuration errors, 1 for
    /// a failed run (see DESIGN.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            // A model error that reaches the exit code was found while loading
            // the project (header, cycle); SQL errors of a run are run failures.
            Error::Config { .. } | Error::Usage(_) | Error::Model { .. } => 2,
            _ => 1,
        }
    }

    /// Whether a retry can help. The scheduler retries only transient
    /// failures and the realtime loop waits out only those.
    pub fn retry(&self) -> Retry {
        use std::io::ErrorKind;
        let transient = match self {
            Error::Serving { transient, .. }
            | Error::InputStore { transient, .. }
            | Error::Cluster { transient, .. } => *transient,
            Error::ObjectStore { cause, .. } => store_transient(cause),
            Error::SourceUnavailable { .. }
            | Error::LockHeld(_)
            | Error::Scheduler(_)
            // A hung job, or a cluster busy then: the next attempt may not be.
            | Error::QueryTimeout { .. }
            // Its data may still land.
            | Error::DayNotFound { .. } => true,
            Error::Io { source, .. } => !matches!(
                source.kind(),
                ErrorKind::PermissionDenied | ErrorKind::InvalidInput | ErrorKind::InvalidData
            ),
            Error::Engine { source, .. } => engine_transient(source),
            Error::Config { .. }
            | Error::Usage(_)
            | Error::Model { .. }
            | Error::CorruptFile { .. }
            | Error::Schema { .. }
            | Error::SinkSchema { .. }
            | Error::Rejected { .. }
            | Error::IngestTable { .. }
            | Error::Speed { .. }
            | Error::BeyondTtl { .. }
            | Error::Superseded { .. }
            | Error::CheckFailed { .. }
            | Error::Data { .. } => false,
        };
        if transient {
            Retry::Transient
        } else {
            Retry::Permanent
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn rejected(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Rejected {
            input: input.into(),
            reason: reason.into(),
        }
    }

    pub fn data(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Data {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

/// A store that refuses (credentials, a missing bucket, a bad path) will
/// refuse again; a timeout, a 5xx or a connection error may pass.
pub fn store_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::NotSupported { .. }
        | E::InvalidPath { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => false,
        other => {
            let text = concise(other);
            ![
                "NoSuchBucket",
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "403 Forbidden",
            ]
            .iter()
            .any(|code| text.contains(code))
        }
    }
}

/// I/O, object store and memory failures of the engine are transient; plan,
/// SQL, schema and execution errors of the query itself are not.
fn engine_transient(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError as E;
    match e.find_root() {
        E::IoError(_) | E::ObjectStore(_) | E::ResourcesExhausted(_) => true,
        E::ArrowError(inner, _) => matches!(**inner, arrow::error::ArrowError::IoError(..)),
        _ => false,
    }
}

/// The innermost message of an object-store error (each layer of
/// object_store's errors repeats the one below), with an S3 error
/// document reduced to its code and message.
pub fn concise(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let text = inner.to_string();
    let Some((head, xml)) = text.split_once("<?xml") else {
        return text;
    };
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = xml.find(&open)? + open.len();
        let end = xml[start..].find(&close)? + start;
        Some(xml[start..end].to_string())
    };
    let head = head.trim_end_matches([' ', ':']);
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{head}: {code}: {message}"),
        (Some(code), None) => format!("{head}: {code}"),
        _ => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_help_with_outages_not_with_mistakes() {
        let serving = |transient| Error::Serving {
            target: "db".into(),
            message: "x".into(),
            transient,
        };
        assert_eq!(serving(true).retry(), Retry::Transient);
        assert_eq!(serving(false).retry(), Retry::Permanent);
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let engine = |source| Error::Engine {
            model: "m".into(),
            day,
            source,
        };
        use datafusion::error::DataFusionError as E;
        assert_eq!(
            engine(E::Plan("no such column".into())).retry(),
            Retry::Permanent
        );
        assert_eq!(
            engine(E::ResourcesExhausted("memory".into())).retry(),
            Retry::Transient
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(
            engine(E::Context("reading".into(), Box::new(E::IoError(io)))).retry(),
            Retry::Transient
        );
        assert_eq!(Error::Usage("bad flag".into()).retry(), Retry::Permanent);
        let held = Error::LockHeld("another process holds the ingest lock".into());
        assert_eq!(held.retry(), Retry::Transient);
        assert_eq!(held.exit_code(), 1);
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(Error::io("/spill", full).retry(), Retry::Transient);
    }

    #[test]
    fn store_errors_read_as_the_server_said() {
        let e = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>".into(),
        };
        assert_eq!(
            concise(&e),
            "Server returned non-2xx status code: 404 Not Found: NoSuchBucket: The specified bucket does not exist"
        );
        assert!(!store_transient(&e));
        let down = object_store::Error::Generic {
            store: "S3",
            source: "error sending request: connection refused".into(),
        };
        assert!(store_transient(&down));
    }
}
