//! One logical table per entity over both layers, following DESIGN.md's
//! boundary rule: a day whose batch partitions are committed is read from
//! the batch layer only, any other day from the speed layer only, with the
//! reorg rule applied. So no day is ever counted twice, even while a day
//! exists in both layers.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::NaiveDate;
use datafusion::catalog::TableProvider;
use datafusion::common::JoinType;
use datafusion::datasource::MemTable;
use datafusion::prelude::{col, DataFrame, ParquetReadOptions, SessionContext};
use object_store::ObjectMeta;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::batch::BatchLayer;
use super::copied_table::CopiedTable;
use super::reorg;
use super::schema::{self, Entity};
use super::speed::copy::TableCopy;
use super::speed::{self, Scratch, SpeedLayer};
use super::store::PartitionStore;
use crate::config::Config;
use crate::error::{Error, Result};

/// Re-listings of a batch day whose markers change while it is listed.
const MAX_PLAN_ATTEMPTS: usize = 3;
/// A landing speed day of more files than this is copied once per run
/// ([`Catalog::copy_speed_day`]).
pub const COPY_ABOVE_FILES: usize = 64;

/// Column of the in-memory table of canonical block hashes.
const CANONICAL_HASH: &str = "__ledgerflow_canonical_hash";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Batch,
    Speed,
    /// Neither layer has the day.
    None,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Batch => "batch",
            Layer::Speed => "speed",
            Layer::None => "none",
        }
    }
}

/// Where one day comes from, decided once per run.
#[derive(Debug, Clone)]
pub struct DayPlan {
    pub day: NaiveDate,
    pub layer: Layer,
    pub files: BTreeMap<Entity, Vec<ObjectMeta>>,
    /// Hashes of orphaned blocks (speed layer only), sorted.
    pub orphans: Vec<String>,
    /// Hashes of the canonical blocks (speed layer only): rows are kept
    /// only if their block is one of these, which also drops transactions
    /// whose block had not landed when the day was listed.
    pub canonical: Vec<String>,
    /// Blocks known above the day's highest canonical block, the next
    /// day's included (speed layer only; see `speed.finality_blocks`).
    pub confirmations: i64,
    /// A MongoDB day's copy in the spill dir (kept while the plan lives).
    pub scratch: Option<Arc<Scratch>>,
}

impl DayPlan {
    /// `blocks=batch,transactions=batch`, for the ledger.
    pub fn source_layers(&self) -> String {
        Entity::ALL
            .iter()
            .map(|e| format!("{}={}", e.name(), self.layer.as_str()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn file_count(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }

    /// Feeds what identifies this day's inputs into a fingerprint: layer,
    /// and every file's name, size, modification time and etag (for a
    /// MongoDB day: the hash of every document read).
    pub fn hash_into(&self, hasher: &mut Sha256) {
        hasher.update(self.day.to_string());
        hasher.update(self.layer.as_str());
        // The orphans depend on the days around this one too (a block of
        // the next day can orphan this day's last): the files alone do not
        // say which rows count.
        if self.layer == Layer::Speed {
            hasher.update(self.orphans.len().to_le_bytes());
            for orphan in &self.orphans {
                hasher.update(orphan);
                hasher.update([0]);
            }
        }
        if let Some(scratch) = &self.scratch {
            hasher.update(&scratch.content);
            return;
        }
        for (entity, files) in &self.files {
            hasher.update(entity.name());
            for f in files {
                hasher.update(f.location.as_ref());
                hasher.update(f.size.to_le_bytes());
                hasher.update(f.last_modified.timestamp_micros().to_le_bytes());
                hasher.update(f.e_tag.as_deref().unwrap_or(""));
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub batch: BatchLayer,
    pub speed: SpeedLayer,
    spill_dir: std::path::PathBuf,
}

impl Catalog {
    pub fn open(config: &Config) -> Result<Self> {
        Ok(Self {
            batch: BatchLayer::open(config)?,
            speed: SpeedLayer::open(config)?,
            spill_dir: config.spill_dir(),
        })
    }

    /// Decides the layer of `day` and lists exactly its partitions (no other
    /// day's directory is listed: partition pruning by construction).
    pub async fn plan_day(&self, day: NaiveDate) -> Result<DayPlan> {
        let mut files = BTreeMap::new();
        // The markers must be the same before and after listing: a partition
        // being rewritten meanwhile would otherwise be read half old, half new.
        for _ in 0..MAX_PLAN_ATTEMPTS {
            let Some(before) = self.batch.markers(day).await? else {
                break;
            };
            for entity in Entity::ALL {
                files.insert(entity, self.batch.list_day(entity.name(), day).await?);
            }
            if self.batch.markers(day).await?.as_ref() == Some(&before) {
                return Ok(DayPlan {
                    day,
                    layer: Layer::Batch,
                    files,
                    orphans: Vec::new(),
                    canonical: Vec::new(),
                    confirmations: 0,
                    scratch: None,
                });
            }
            files.clear();
        }
        if self.batch.day_committed(day).await? {
            return Err(Error::data(
                self.batch.files.describe_day("blocks", day),
                format!("the batch partitions of {day} kept changing while being listed"),
            ));
        }
        self.plan_speed(day).await
    }

    /// Plans `day` from the speed layer alone, whatever the batch layer
    /// holds (`Layer::None` when the speed layer has no block of it): the
    /// day's canonical chain judged with its neighbours.
    pub async fn plan_speed(&self, day: NaiveDate) -> Result<DayPlan> {
        let speed = self
            .speed
            .day(
                day,
                &self.spill_dir,
                self.batch.files.describe_day("blocks", day),
            )
            .await?;
        if speed.headers.is_empty() {
            return Ok(DayPlan {
                day,
                layer: Layer::None,
                files: BTreeMap::new(),
                orphans: Vec::new(),
                canonical: Vec::new(),
                confirmations: 0,
                scratch: None,
            });
        }
        // One chain across days: the day is judged with its neighbours.
        let before = match day.pred_opt() {
            Some(d) => self.headers_of(d).await?,
            None => Vec::new(),
        };
        let after = match day.succ_opt() {
            Some(d) => self.headers_of(d).await?,
            None => Vec::new(),
        };
        let judged = reorg::judge_day(&before, &speed.headers, &after);
        Ok(DayPlan {
            day,
            layer: Layer::Speed,
            files: speed.files,
            orphans: judged.orphans,
            canonical: judged.canonical,
            confirmations: judged.confirmations,
            scratch: speed.scratch,
        })
    }

    /// The block headers of `day` from the layer it is read from: the
    /// committed batch partition, else the speed layer.
    async fn headers_of(&self, day: NaiveDate) -> Result<Vec<reorg::Header>> {
        if self.batch.day_committed(day).await? {
            let files = self.batch.list_day(Entity::Blocks.name(), day).await?;
            return super::speed::read_headers(&self.batch.files, &files).await;
        }
        self.speed.headers(day).await
    }

    /// The error for a day found in neither layer, naming both places.
    pub fn day_not_found(&self, day: NaiveDate) -> Error {
        Error::DayNotFound {
            day,
            batch: self.batch.files.describe_day("blocks", day),
            speed: self.speed.describe_day(day),
        }
    }

    fn store_of<'a>(&'a self, plan: &'a DayPlan) -> &'a PartitionStore {
        match (&plan.scratch, &self.speed) {
            (Some(scratch), _) => &scratch.store,
            _ if plan.layer == Layer::Batch => &self.batch.files,
            (None, SpeedLayer::Landing(landing)) => &landing.files,
            // A MongoDB plan without files has nothing to read.
            (None, SpeedLayer::Mongo(_)) => &self.batch.files,
        }
    }

    /// An engine error of `model` over `plan`: one caused by the store the
    /// day's files are in names that store (bucket and prefix).
    pub fn engine_error(
        &self,
        model: &str,
        plan: &DayPlan,
        e: datafusion::error::DataFusionError,
    ) -> Error {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = cause {
            if let Some(store_err) = err.downcast_ref::<object_store::Error>() {
                return Error::InputStore {
                    model: model.to_string(),
                    day: plan.day,
                    location: self.store_of(plan).location().to_string(),
                    message: crate::error::concise(store_err),
                    transient: crate::error::store_transient(store_err),
                };
            }
            cause = err.source();
        }
        Error::Engine {
            model: model.to_string(),
            day: plan.day,
            source: e,
        }
    }

    /// Reads every file's footer and checks its schema, so a corrupt file or
    /// a missing/mistyped column fails before anything runs, named.
    pub async fn validate(&self, plan: &DayPlan) -> Result<()> {
        let store = self.store_of(plan);
        for (entity, files) in &plan.files {
            if plan.layer == Layer::Batch {
                self.batch
                    .check_files(entity.name(), plan.day, files)
                    .await?;
            }
            let expected = entity.schema();
            for (meta, actual) in files.iter().zip(store.file_schemas(files).await?) {
                schema::check_file(&store.describe(&meta.location), &expected, &actual)?;
            }
        }
        Ok(())
    }

    /// Whether [`copy_speed_day`](Self::copy_speed_day) copies `plan`'s day:
    /// a landing day of more than [`COPY_ABOVE_FILES`] files.
    pub fn copies(&self, plan: &DayPlan) -> bool {
        matches!(self.speed, SpeedLayer::Landing(_))
            && plan.layer == Layer::Speed
            && plan.scratch.is_none()
            && plan.file_count() > COPY_ABOVE_FILES
    }

    /// Copies a landing speed day of more than [`COPY_ABOVE_FILES`] files
    /// into Parquet files in the spill dir (canonical rows only,
    /// [`super::speed::copy`]) and registers those in `ctx` instead of the
    /// micro-batches; the copy lives as long as the returned directory.
    /// The day's models then read it like a compacted day: each query
    /// otherwise opened every micro-batch file and ran the reorg join
    /// again (a mainnet day: ~0.7 s per query over 1,462 files).
    ///
    /// `read` holds the columns of each table the day's models read
    /// (`None`: unknown, copy them all). Only those and the day's time
    /// column are copied, and a table no model reads is not; a query that
    /// reads another column reads the micro-batches ([`CopiedTable`]).
    pub async fn copy_speed_day(
        &self,
        ctx: &SessionContext,
        plan: &DayPlan,
        read: Option<&BTreeMap<&str, BTreeSet<String>>>,
    ) -> Result<Option<tempfile::TempDir>> {
        if !self.copies(plan) {
            return Ok(None);
        }
        let SpeedLayer::Landing(landing) = &self.speed else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let dir = crate::engine::scratch_dir(&self.spill_dir, "speed-copy-")?;
        let canonical: Arc<HashSet<String>> = Arc::new(plan.canonical.iter().cloned().collect());
        let parts = ctx.state().config().target_partitions();
        let mut copied_columns = Vec::new();
        for entity in Entity::ALL {
            let Some(files) = plan.files.get(&entity).filter(|f| !f.is_empty()) else {
                continue;
            };
            let name = entity.name();
            let expected = entity.schema();
            let columns: Vec<usize> = match read.map(|r| r.get(name)) {
                None => (0..expected.fields().len()).collect(),
                Some(None) => continue,
                Some(Some(read)) => (0..expected.fields().len())
                    .filter(|&i| {
                        let column = expected.field(i).name();
                        read.contains(column) || column == entity.time_column()
                    })
                    .collect(),
            };
            let whole = columns.len() == expected.fields().len();
            let engine = |e| self.engine_error(&format!("<catalog {name}>"), plan, e);
            let arrow = |e: arrow::error::ArrowError| engine(e.into());
            let schema = Arc::new(expected.project(&columns).map_err(arrow)?);
            let path = dir.path().join(name);
            let copy = TableCopy {
                files: files.clone(),
                schema: schema.clone(),
                hash_column: entity.block_hash_column(),
                time_column: entity.time_column(),
                canonical: canonical.clone(),
                read_whole_below: speed::copy::READ_WHOLE_BELOW,
            };
            let done = speed::copy::copy_table(&landing.files, copy, &path, parts).await?;
            copied_columns.push(format!(
                "{name} {}/{} ({} rows{})",
                columns.len(),
                expected.fields().len(),
                done.rows,
                if done.time_ordered {
                    ", in time order"
                } else {
                    ""
                },
            ));
            let mut options = ParquetReadOptions::default().schema(&schema);
            if done.time_ordered {
                // Observed, not assumed (see `copy_table`): the engine then
                // aggregates by minute as a stream, as over a compacted day.
                options = options
                    .file_sort_order(vec![vec![col(entity.time_column()).sort(true, false)]]);
            }
            let url = format!("file://{}/", path.display());
            let copy = ctx
                .read_parquet(url, options)
                .await
                .map_err(engine)?
                .into_view();
            let original = ctx.table_provider(name).await.map_err(engine)?;
            ctx.deregister_table(name).map_err(engine)?;
            let table: Arc<dyn TableProvider> = if whole {
                copy
            } else {
                Arc::new(CopiedTable::new(original, copy))
            };
            ctx.register_table(name, table).map_err(engine)?;
        }
        tracing::info!(day = %plan.day, files = plan.file_count(), columns = copied_columns.join(", "), seconds = started.elapsed().as_secs_f64(), "speed day copied for its models");
        Ok(Some(dir))
    }

    /// Registers `blocks` and `transactions` in `ctx` as the union of the
    /// planned days, each from its one layer, orphans removed.
    pub async fn register(&self, ctx: &SessionContext, plans: &[DayPlan]) -> Result<()> {
        for entity in Entity::ALL {
            let expected = entity.schema();
            let mut union: Option<DataFrame> = None;
            for plan in plans {
                let Some(files) = plan.files.get(&entity).filter(|f| !f.is_empty()) else {
                    continue;
                };
                let store = self.store_of(plan);
                store.register_with(ctx);
                let urls: Vec<String> = files.iter().map(|m| store.url(&m.location)).collect();
                let engine_err = |e| Error::Engine {
                    model: format!("<catalog {}>", entity.name()),
                    day: plan.day,
                    source: e,
                };
                let mut df = ctx
                    .read_parquet(urls, ParquetReadOptions::default().schema(&expected))
                    .await
                    .map_err(engine_err)?;
                if plan.layer == Layer::Speed {
                    // Semi-join on the canonical hashes: orphans and rows of
                    // blocks not (yet) seen both drop out.
                    let canonical = RecordBatch::try_new(
                        Arc::new(Schema::new(vec![Field::new(
                            CANONICAL_HASH,
                            DataType::Utf8,
                            false,
                        )])),
                        vec![Arc::new(StringArray::from(plan.canonical.clone()))],
                    )
                    .map_err(|e| engine_err(e.into()))?;
                    let canonical = ctx.read_batch(canonical).map_err(engine_err)?;
                    df = df
                        .join(
                            canonical,
                            JoinType::LeftSemi,
                            &[entity.block_hash_column()],
                            &[CANONICAL_HASH],
                            None,
                        )
                        .map_err(engine_err)?;
                }
                union = Some(match union {
                    None => df,
                    Some(u) => u.union(df).map_err(engine_err)?,
                });
            }
            let name = entity.name();
            let registered = match union {
                Some(df) => ctx.register_table(name, df.into_view()),
                None => {
                    let empty = MemTable::try_new(expected.clone(), vec![vec![]]).map_err(|e| {
                        Error::Engine {
                            model: format!("<catalog {name}>"),
                            day: plans.first().map(|p| p.day).unwrap_or_default(),
                            source: e,
                        }
                    })?;
                    ctx.register_table(name, Arc::new(empty))
                }
            };
            registered.map_err(|e| Error::Engine {
                model: format!("<catalog {name}>"),
                day: plans.first().map(|p| p.day).unwrap_or_default(),
                source: e,
            })?;
        }
        Ok(())
    }
}
