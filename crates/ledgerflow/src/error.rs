//! The library's typed errors. Each variant says which layer failed and names
//! the file, column, setting, day or host involved; the binary adds context
//! and maps them to exit codes ([`Error::exit_code`]).

use std::path::PathBuf;

use chrono::NaiveDate;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ledgerflow.toml is unreadable, mistyped, or names an impossible setting.
    #[error("configuration error in {path}: {message}")]
    Config { path: PathBuf, message: String },

    /// A command-line value or project layout is wrong (exit 2).
    #[error("{0}")]
    Usage(String),

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

    /// Object store (batch layer) I/O.
    #[error("batch layer {location}: {source}")]
    ObjectStore {
        location: String,
        #[source]
        source: object_store::Error,
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
    Serving { target: String, message: String },

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

    /// Anything else from Arrow or Parquet while writing files.
    #[error("{context}: {message}")]
    Data { context: String, message: String },
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
