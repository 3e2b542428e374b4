//! Where ledger data lives: the batch layer (committed day partitions), the
//! speed layer (the open day), and the unified view a model reads.

pub mod batch;
pub mod copied_table;
pub mod hdfs;
pub mod lock;
pub mod meta;
pub mod reorg;
pub mod schema;
pub mod speed;
pub mod store;
pub mod unified;
