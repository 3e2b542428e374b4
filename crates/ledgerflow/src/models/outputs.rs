//! The outputs a run keeps for the models that read them, held in the
//! session's memory pool: a kept output takes memory from the queries that
//! run while it waits (they spill sooner), and one the pool cannot hold is
//! not kept: its dependents recompute it inside their own query. Kept
//! outputs take at most half the pool, so the queries beside them keep
//! room for what cannot spill. (An output waiting for its write is not in
//! the pool: it is one model's rows at a time, or a day's with
//! `run.commit = "day"`.)

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::utils::memory::RecordBatchMemoryCounter;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

#[derive(Debug, Clone)]
struct Kept {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// Released when the last copy of this entry is dropped (the runner's
    /// copy for a dependent's query lives until that query has run).
    held: Arc<MemoryReservation>,
}

/// Outputs of the models a run computed, by name, for their dependents.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    kept: HashMap<String, Kept>,
}

impl Outputs {
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// Keeps `name`'s output if `pool` can hold it within half its size
    /// (with what is kept already); false when it cannot (its dependents
    /// then recompute it). The other half stays for the queries that run
    /// meanwhile: some of their operators take a fixed amount up front and
    /// fail instead of spilling when the pool is full.
    pub fn keep(
        &mut self,
        pool: &Arc<dyn MemoryPool>,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> bool {
        // An aggregate emits one large batch as zero-copy slices: each
        // buffer counts once (summed per batch, a mainnet day's
        // user_activity_agg came to 4.6 GB).
        let mut counter = RecordBatchMemoryCounter::new();
        for batch in &batches {
            counter.count_batch(batch);
        }
        let bytes = counter.memory_usage();
        let not_kept = |reason: &str| {
            tracing::info!(
                model = name,
                bytes,
                reason,
                "output not kept: its dependents recompute it"
            );
            false
        };
        let kept_already: usize = self.kept.values().map(|k| k.held.size()).sum();
        if let MemoryLimit::Finite(limit) = pool.memory_limit() {
            if kept_already + bytes > limit / 2 {
                return not_kept("over half the memory pool");
            }
        }
        let held =
            MemoryConsumer::new(format!("{name} output kept for its dependents")).register(pool);
        if let Err(e) = held.try_grow(bytes) {
            return not_kept(&e.to_string());
        }
        self.kept.insert(
            name.to_string(),
            Kept {
                schema,
                batches,
                held: Arc::new(held),
            },
        );
        true
    }

    pub fn get(&self, name: &str) -> Option<(&SchemaRef, &[RecordBatch])> {
        self.kept
            .get(name)
            .map(|k| (&k.schema, k.batches.as_slice()))
    }

    /// Keeps only the outputs `keep` says are still to be read.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.kept.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::utils::memory::get_record_batch_memory_size;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    fn rows(n: usize) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..n as i64))],
        )
        .unwrap();
        (schema, vec![batch])
    }

    #[test]
    fn a_kept_output_is_held_in_the_pool_until_its_last_copy_is_dropped() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 20));
        let (schema, batches) = rows(10_000);
        let bytes = get_record_batch_memory_size(&batches[0]);
        let mut outputs = Outputs::new();
        assert!(outputs.keep(&pool, "user_activity_agg", schema, batches));
        assert_eq!(pool.reserved(), bytes);
        let reading = outputs.clone();
        outputs.retain(|_| false);
        assert!(outputs.get("user_activity_agg").is_none());
        assert_eq!(pool.reserved(), bytes, "a query still reads it");
        assert_eq!(
            reading.get("user_activity_agg").unwrap().1[0].num_rows(),
            10_000
        );
        drop(reading);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn slices_of_one_batch_are_held_once() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 20));
        let (schema, whole) = rows(10_000);
        let bytes = get_record_batch_memory_size(&whole[0]);
        let slices: Vec<RecordBatch> = (0..10).map(|i| whole[0].slice(i * 1_000, 1_000)).collect();
        let mut outputs = Outputs::new();
        assert!(outputs.keep(&pool, "sliced", schema, slices));
        assert_eq!(pool.reserved(), bytes);
    }

    #[test]
    fn outputs_keep_at_most_half_the_pool_and_a_sort_still_runs_beside_them() {
        use datafusion::execution::memory_pool::FairSpillPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use datafusion::prelude::{SessionConfig, SessionContext};
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(2 << 20));
        let mut outputs = Outputs::new();
        let (schema, first) = rows(60_000); // ~480 KB
        assert!(outputs.keep(&pool, "first", schema, first));
        let (schema, second) = rows(80_000); // 640 KB: together over 1 MiB
        assert!(!outputs.keep(&pool, "second", schema, second));
        // A query beside the kept output sorts more than the rest of the
        // pool: it spills, it does not fail.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool.clone())
            .build_arc()
            .unwrap();
        let config = SessionConfig::new().with_target_partitions(1).set_usize(
            "datafusion.execution.sort_spill_reservation_bytes",
            256 << 10,
        );
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sorted = rt.block_on(async {
            ctx.sql("SELECT value FROM generate_series(1, 400000) ORDER BY value DESC")
                .await?
                .collect()
                .await
        });
        let rows: usize = sorted
            .expect("the sort spills")
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 400_000);
        assert!(outputs.get("first").is_some());
    }

    #[test]
    fn an_output_the_pool_cannot_hold_is_not_kept() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(64 << 10));
        let mut outputs = Outputs::new();
        let (schema, small) = rows(1_000);
        assert!(outputs.keep(&pool, "small", schema, small));
        let (schema, large) = rows(100_000);
        assert!(!outputs.keep(&pool, "large", schema, large));
        assert!(outputs.get("large").is_none());
        assert!(outputs.get("small").is_some());
        assert!(pool.reserved() < 64 << 10);
    }
}
