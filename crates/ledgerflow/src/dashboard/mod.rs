//! What `ledgerflow serve` shows, read-only: the partition grid (models x
//! days with each cell's state), a cell's attempts, and the Prometheus
//! metrics. Built from the ledger and the catalog; nothing here writes.

pub mod grid;
pub mod metrics;

pub use grid::{CellState, Grid};
