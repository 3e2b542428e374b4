//! The built-in deterministic data generator (ethereum-like blocks and
//! transactions) and the writers that lay its output into both layers:
//! closed days as committed batch partitions, open days as landing-dir
//! micro-batches with reorgs.

pub mod arrow_rows;
pub mod chain;
pub mod live;
pub mod partner;

use chrono::NaiveDate;
use serde::Serialize;

use crate::catalog::batch::BatchLayer;
use crate::catalog::schema::Entity;
use crate::catalog::speed::SpeedLayer;
use crate::error::{Error, Result};
use chain::{Block, GenParams, Tx};

/// Transactions buffered before they become one Arrow batch.
const TX_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Default, Serialize)]
pub struct GenerateSummary {
    pub days: usize,
    pub blocks: u64,
    pub orphaned_blocks: u64,
    pub transactions: u64,
    pub files: u64,
}

impl GenerateSummary {
    fn count(&mut self, block: &Block, txs: usize) {
        self.blocks += 1;
        self.orphaned_blocks += u64::from(!block.canonical);
        self.transactions += txs as u64;
    }
}

/// Writes one closed day as committed batch partitions (canonical blocks
/// only: the batch layer holds the settled chain). `progress` gets the
/// number of blocks written so far.
pub async fn write_batch_day(
    batch: &BatchLayer,
    params: &GenParams,
    day: NaiveDate,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GenerateSummary> {
    let mut summary = GenerateSummary {
        days: 1,
        ..Default::default()
    };
    let mut txs_out = batch
        .begin_partition(
            Entity::Transactions.name(),
            day,
            Entity::Transactions.schema(),
        )
        .await?
        .sorted_by(Entity::Transactions.time_column())?;
    let mut blocks: Vec<Block> = Vec::new();
    let mut txs: Vec<Tx> = Vec::with_capacity(TX_CHUNK);
    for generated in chain::day_blocks(params, day, false) {
        summary.count(&generated.block, generated.txs.len());
        blocks.push(generated.block);
        txs.extend(generated.txs);
        if txs.len() >= TX_CHUNK {
            txs_out.write(&tx_batch(&txs)?).await?;
            txs.clear();
        }
        progress(summary.blocks);
    }
    if !txs.is_empty() {
        txs_out.write(&tx_batch(&txs)?).await?;
    }
    let mut blocks_out = batch
        .begin_partition(Entity::Blocks.name(), day, Entity::Blocks.schema())
        .await?
        .sorted_by(Entity::Blocks.time_column())?;
    blocks_out.write(&block_batch(&blocks)?).await?;
    blocks_out.commit().await?;
    // The transactions marker lands last: only then is the day committed.
    txs_out.commit().await?;
    summary.files = 2;
    Ok(summary)
}

/// Writes one open day to the speed layer as micro-batches of
/// `blocks_per_file` blocks (landing files, or MongoDB inserts), in arrival
/// order, with orphaned blocks.
pub async fn write_speed_day(
    speed: &SpeedLayer,
    params: &GenParams,
    day: NaiveDate,
    blocks_per_file: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GenerateSummary> {
    let mut summary = GenerateSummary {
        days: 1,
        ..Default::default()
    };
    let mut blocks: Vec<Block> = Vec::new();
    let mut txs: Vec<Tx> = Vec::new();
    let mut seq = 0u64;
    for generated in chain::day_blocks(params, day, true) {
        summary.count(&generated.block, generated.txs.len());
        blocks.push(generated.block);
        txs.extend(generated.txs);
        if blocks.len() >= blocks_per_file.max(1) {
            flush_micro_batch(speed, day, seq, &mut blocks, &mut txs).await?;
            seq += 1;
        }
        progress(summary.blocks);
    }
    if !blocks.is_empty() {
        flush_micro_batch(speed, day, seq, &mut blocks, &mut txs).await?;
        seq += 1;
    }
    summary.files = seq * 2;
    Ok(summary)
}

/// Appends one micro-batch to the speed layer.
pub async fn flush_micro_batch(
    speed: &SpeedLayer,
    day: NaiveDate,
    seq: u64,
    blocks: &mut Vec<Block>,
    txs: &mut Vec<Tx>,
) -> Result<()> {
    // Transactions first: a reader that sees a block also sees its
    // transactions.
    let (tx_rows, block_rows) = (tx_batch(txs)?, block_batch(blocks)?);
    match speed {
        SpeedLayer::Landing(landing) => {
            landing
                .append(Entity::Transactions, day, seq, tx_rows)
                .await?;
            landing.append(Entity::Blocks, day, seq, block_rows).await?;
        }
        SpeedLayer::Mongo(mongo) => {
            mongo.insert(Entity::Transactions, &tx_rows).await?;
            mongo.insert(Entity::Blocks, &block_rows).await?;
        }
    }
    blocks.clear();
    txs.clear();
    Ok(())
}

fn tx_batch(txs: &[Tx]) -> Result<arrow::record_batch::RecordBatch> {
    arrow_rows::transactions_batch(txs).map_err(|e| Error::data("generating transactions", e))
}

fn block_batch(blocks: &[Block]) -> Result<arrow::record_batch::RecordBatch> {
    arrow_rows::blocks_batch(blocks).map_err(|e| Error::data("generating blocks", e))
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};

    use super::*;
    use crate::catalog::store::PartitionStore;
    use crate::models::{builtin, dag, ModelSpec, Outputs};

    /// The files of a generated day say they are sorted by time, and the
    /// query engine believes them: the realtime dashboard's grouping by
    /// (minute, address) streams minute by minute, over several files read
    /// in parallel, instead of holding the whole day's groups.
    #[tokio::test]
    async fn a_generated_day_is_read_as_sorted_and_the_realtime_grouping_streams() {
        let dir = tempfile::tempdir().unwrap();
        let batch = BatchLayer {
            files: PartitionStore::local(dir.path()).unwrap(),
            marker: "_SUCCESS".into(),
            rows_per_file: 2_000,
        };
        let params = GenParams {
            seed: 7,
            scale: 0.01,
            reorg_rate: 0.0,
            ..Default::default()
        };
        let day = NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
        write_batch_day(&batch, &params, day, &|_| {})
            .await
            .unwrap();
        let files = batch.list_day("transactions", day).await.unwrap();
        assert!(files.len() > 2, "several files: {}", files.len());

        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        for entity in Entity::ALL {
            let partition = PartitionStore::day_prefix(entity.name(), day);
            let path = dir.path().join(partition.as_ref());
            ctx.register_parquet(
                entity.name(),
                path.to_str().unwrap(),
                ParquetReadOptions::default().schema(&entity.schema()),
            )
            .await
            .unwrap();
        }
        let all = dag::order(
            builtin::MODELS
                .iter()
                .map(|(file, sql)| ModelSpec::parse(file, sql).unwrap())
                .collect(),
        )
        .unwrap();
        let realtime = all.iter().find(|m| m.name == "realtime_dashboard").unwrap();
        let (start, end) = crate::day::bounds(day);
        let (_, df) = crate::models::plan(&ctx, realtime, &all, &Outputs::new(), day, start, end)
            .await
            .unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let groupings: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("AggregateExec") && l.contains("address"))
            .collect();
        assert!(!groupings.is_empty(), "{text}");
        for line in groupings {
            assert!(
                line.contains("ordering_mode="),
                "not streaming: {line}\n{text}"
            );
        }
    }
}
