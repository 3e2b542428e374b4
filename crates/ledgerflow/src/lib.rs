//! ledgerflow: a lambda-architecture analytics pipeline over blockchain
//! ledger data. Day-partitioned Parquet (batch layer) plus the open day
//! (speed layer) become metric tables in PostgreSQL or SQLite, idempotently.
//!
//! Start at [`runner`] (one (model, day) run) and [`catalog::unified`] (the
//! per-day boundary rule). ARCHITECTURE.md has the map.

pub mod catalog;
pub mod checks;
pub mod compact;
pub mod config;
pub mod dashboard;
pub mod day;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod generate;
pub mod ingest;
pub mod ledger;
pub mod location;
pub mod models;
pub mod names;
pub mod project;
pub mod realtime;
pub mod runner;
pub mod schedule;
pub mod secret;
pub mod sinks;
pub mod sql_file;
pub mod webhook;

pub use error::{Error, Result};
/// The MongoDB driver ledgerflow speaks to its speed layer with.
pub use mongodb;
