//! Test helpers for ledgerflow: a temporary project that runs the real
//! binary against a real serving database (a PostgreSQL schema of its own,
//! or a SQLite file), readers that turn the metric tables back into plain
//! Rust rows, and the independent reference computation they are checked
//! against.

pub mod cluster;
pub mod mongo;
pub mod netns;
pub mod project;
pub mod reference;
pub mod s3;
pub mod serving;
pub mod storm;
