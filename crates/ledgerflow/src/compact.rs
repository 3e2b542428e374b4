//! `ledgerflow compact --date D`: closes a day. Its canonical rows (reorg
//! rule applied) move from the speed layer into batch partitions of a few
//! large sorted files, written under temporary names and committed marker
//! last, blocks first, so the day flips to the batch layer only when both
//! tables are complete. Row counts are checked against the speed layer
//! while writing and again on the committed partitions before anything is
//! removed from the landing dir. The models' numbers do not change: the
//! same rows are read either way.

use chrono::NaiveDate;
use futures::StreamExt;
use serde::Serialize;

use crate::catalog::lock::StoreLock;
use crate::catalog::meta::MetaDir;
use crate::catalog::schema::Entity;
use crate::catalog::unified::{Catalog, Layer};
use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct CompactOptions {
    /// Compact a day that is still open (today or later, UTC), or whose
    /// last block has fewer than `speed.finality_blocks` confirmations.
    pub force: bool,
    /// Delete the landing files that were compacted, once committed.
    pub remove_landing: bool,
    /// "Today" for the open-day check (the scheduler's clock in tests).
    pub today: Option<NaiveDate>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompactReport {
    pub day: NaiveDate,
    /// `compacted`, or `already committed` (nothing written).
    pub action: String,
    pub blocks: u64,
    pub transactions: u64,
    pub orphaned_blocks: usize,
    pub landing_files: usize,
    pub removed_landing_files: usize,
}

/// Sort order of the batch files: by time, so a minute window reads few
/// row groups.
fn order_by(entity: Entity) -> &'static str {
    match entity {
        Entity::Blocks => "\"timestamp\", number, hash",
        Entity::Transactions => "block_timestamp, block_number, transaction_index, hash",
    }
}

pub async fn compact_day(
    config: &Config,
    catalog: &Catalog,
    day: NaiveDate,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let today = opts.today.unwrap_or_else(crate::day::today);
    if day >= today && !opts.force {
        return Err(Error::Usage(format!(
            "{day} is still open (today is {today}, UTC): blocks may still land; compact it after it closes, or pass --force"
        )));
    }
    if opts.remove_landing && catalog.speed.landing().is_none() {
        return Err(Error::Usage(format!(
            "--remove-landing removes landing files, but the speed layer is {}: its documents expire by their TTL and are never deleted by ledgerflow",
            catalog.speed.kind()
        )));
    }
    // Two compactions of one day would interleave their deletes, uploads
    // and markers (on S3 the final names are overwritten, not created).
    let docs = MetaDir::open(&config.batch_location()?, &config.batch.s3)?;
    let lock = StoreLock::acquire(
        &docs,
        &format!("_compact/{day}.lock"),
        config.ledger.lease,
        &format!("compaction of {day}"),
    )?;
    let plan = catalog.plan_day(day).await?;
    let mut report = CompactReport {
        day,
        action: String::new(),
        blocks: 0,
        transactions: 0,
        orphaned_blocks: plan.orphans.len(),
        landing_files: 0,
        removed_landing_files: 0,
    };
    match plan.layer {
        Layer::None => return Err(catalog.day_not_found(day)),
        Layer::Batch => {
            report.action = "already committed".into();
        }
        Layer::Speed => {
            let needed = config.speed.finality_blocks;
            if plan.confirmations < needed && !opts.force {
                return Err(Error::Usage(format!(
                    "{day} is not final: its last canonical block has {} confirmations and speed.finality_blocks = {needed}; a reorg could still change the day. Compact it once more blocks of {} have landed, or pass --force",
                    plan.confirmations,
                    day.succ_opt().unwrap_or(day)
                )));
            }
            catalog.validate(&plan).await?;
            report.landing_files = plan.file_count();
            let session = crate::engine::session(config)?;
            catalog
                .register(&session, std::slice::from_ref(&plan))
                .await?;
            // Blocks first: the day is batch only once every table's marker
            // exists, so a crash before the last marker leaves it speed.
            for entity in Entity::ALL {
                let rows = write_entity(catalog, &session, entity, day, &lock).await?;
                match entity {
                    Entity::Blocks => report.blocks = rows,
                    Entity::Transactions => report.transactions = rows,
                }
            }
            verify(config, catalog, day, &report).await?;
            report.action = "compacted".into();
        }
    }
    if opts.remove_landing {
        // Only once the day reads from the batch layer.
        if !catalog.batch.day_committed(day).await? {
            return Err(Error::data(
                catalog.batch.files.describe_day("blocks", day),
                "not committed: landing files kept",
            ));
        }
        let landing = catalog.speed.landing().expect("checked above");
        for entity in Entity::ALL {
            for meta in landing.list_day(entity.name(), day).await? {
                landing.files.delete(&meta.location).await?;
                report.removed_landing_files += 1;
            }
        }
    }
    tracing::info!(day = %day, action = %report.action, blocks = report.blocks, transactions = report.transactions, "compact");
    Ok(report)
}

async fn write_entity(
    catalog: &Catalog,
    session: &datafusion::prelude::SessionContext,
    entity: Entity,
    day: NaiveDate,
    lock: &StoreLock,
) -> Result<u64> {
    let name = entity.name();
    let engine = |e| Error::Engine {
        model: format!("<compact {name}>"),
        day,
        source: e,
    };
    let expected = count(session, name, day).await?;
    let df = session
        .sql(&format!(
            "SELECT * FROM {name} ORDER BY {}",
            order_by(entity)
        ))
        .await
        .map_err(engine)?;
    let mut stream = df.execute_stream().await.map_err(engine)?;
    let mut writer = catalog
        .batch
        .begin_partition(name, day, entity.schema())
        .await?
        .sorted_by(entity.time_column())?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(engine)?;
        // The view's schema is the canonical one up to nullability flags.
        let batch =
            arrow::record_batch::RecordBatch::try_new(entity.schema(), batch.columns().to_vec())
                .map_err(|e| Error::data(format!("compacting {name} of {day}"), e))?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).await?;
    }
    if rows != expected {
        return Err(Error::data(
            catalog.batch.files.describe_day(name, day),
            format!("wrote {rows} rows but the speed layer has {expected}: not committed"),
        ));
    }
    lock.ensure_held()?;
    writer.commit().await
}

async fn count(
    session: &datafusion::prelude::SessionContext,
    table: &str,
    day: NaiveDate,
) -> Result<u64> {
    let engine = |e| Error::Engine {
        model: format!("<compact {table}>"),
        day,
        source: e,
    };
    let batches = session
        .sql(&format!("SELECT count(*) FROM {table}"))
        .await
        .map_err(engine)?
        .collect()
        .await
        .map_err(engine)?;
    let n = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0);
    Ok(n as u64)
}

/// Reads the committed partitions back: the day must now plan as batch and
/// hold exactly the rows that were written.
async fn verify(
    config: &Config,
    catalog: &Catalog,
    day: NaiveDate,
    report: &CompactReport,
) -> Result<()> {
    let plan = catalog.plan_day(day).await?;
    if plan.layer != Layer::Batch {
        return Err(Error::data(
            catalog.batch.files.describe_day("blocks", day),
            "compacted but not read back as committed",
        ));
    }
    let session = crate::engine::session(config)?;
    catalog
        .register(&session, std::slice::from_ref(&plan))
        .await?;
    for (entity, want) in [
        (Entity::Blocks, report.blocks),
        (Entity::Transactions, report.transactions),
    ] {
        let got = count(&session, entity.name(), day).await?;
        if got != want {
            return Err(Error::data(
                catalog.batch.files.describe_day(entity.name(), day),
                format!("committed partition holds {got} rows, expected {want}"),
            ));
        }
    }
    Ok(())
}
