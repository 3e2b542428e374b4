//! `ledgerflow realtime`: keeps the realtime models (grain `realtime`, e.g.
//! realtime_dashboard) fresh from the speed layer.
//!
//! Each pass takes what arrived (a landing file, change-stream events, or
//! new heights when polling), works out which minutes changed (new blocks,
//! transactions, blocks a reorg moved on or off the canonical chain),
//! recomputes only those minutes with the models' SQL over their canonical
//! rows, and in one serving transaction replaces those minutes (so minutes
//! a reorg emptied disappear) and stores the checkpoint. A crash anywhere
//! loses nothing and doubles nothing: on restart the minutes of the last
//! `REORG_WINDOW` heights before the checkpoint and of every orphan are
//! recomputed from the source, and a replace is idempotent.

pub mod chain;
pub mod follow;
pub mod journal;
pub mod landing_follow;
pub mod mongo_follow;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampMicrosecondType;
use chrono::{DateTime, NaiveDate, Utc};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};

use self::chain::{minute_of, ChainState, MINUTE_MICROS};
use self::follow::{Follower, MinuteRows};
use self::journal::Journal;
use crate::catalog::schema::Entity;
use crate::catalog::speed::SpeedLayer;
use crate::config::Config;
use crate::error::{Error, Result, Retry};
use crate::models::{Grain, ModelSpec};
use crate::sinks::{Checkpoint, Sink, WriteMode, WriteRequest};

/// Heights below the checkpoint's highest block recomputed after a restart:
/// deeper reorgs than this are not expected in a speed layer.
pub const REORG_WINDOW: i64 = 64;

/// Checkpoint name in the serving database.
pub const DEFAULT_STREAM: &str = "realtime";

/// Minutes recomputed per transaction: a first start or a reload of a
/// mainnet day is done in bounded memory, an hour or two at a time.
const MINUTES_PER_COMMIT: usize = 120;

/// Longest wait between retries while a source or the serving database is
/// down.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    day: NaiveDate,
    last_block: i64,
    source: serde_json::Value,
    #[serde(default)]
    journal: Journal,
}

/// The day and highest block a stored checkpoint reflects (`None` for one
/// that does not parse).
pub fn checkpoint_block(text: &str) -> Option<(NaiveDate, i64)> {
    serde_json::from_str::<Position>(text)
        .ok()
        .map(|p| (p.day, p.last_block))
}

/// The loop's recent commits and reorgs stored with a checkpoint (empty
/// for one written before they were kept, or that does not parse).
pub fn checkpoint_journal(text: &str) -> Journal {
    serde_json::from_str::<Position>(text)
        .map(|p| p.journal)
        .unwrap_or_default()
}

/// One committed pass, for progress output and the freshness benchmark.
#[derive(Debug, Clone)]
pub struct Committed {
    pub minutes: usize,
    pub rows: u64,
    pub highest_block: i64,
    pub at: Instant,
}

pub type OnCommit = Arc<dyn Fn(&Committed) + Send + Sync>;

#[derive(Clone, Default)]
pub struct RealtimeOptions {
    /// Stop once a poll finds nothing new (catch up, then exit).
    pub exit_when_idle: bool,
    /// Set to stop after the current pass (SIGTERM).
    pub stop: Arc<AtomicBool>,
    /// Called after each commit.
    pub on_commit: Option<OnCommit>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RealtimeSummary {
    pub passes: u64,
    pub minutes_written: u64,
    pub rows_written: u64,
    pub highest_block: Option<i64>,
    pub resyncs: u64,
    /// Passes whose write lost to a daily run that read the day later;
    /// their minutes were recomputed on the next pass.
    pub superseded: u64,
}

/// The realtime models of the project.
pub fn realtime_models(config: &Config) -> Result<Vec<ModelSpec>> {
    let models = realtime_only(crate::models::load_dir(&config.models_dir())?)?;
    if models.is_empty() {
        return Err(Error::Usage(format!(
            "no model in {} has `-- grain: realtime`",
            config.models_dir().display()
        )));
    }
    Ok(models)
}

/// The realtime models among `all`, checked for what the loop needs.
fn realtime_only(all: Vec<ModelSpec>) -> Result<Vec<ModelSpec>> {
    let models: Vec<ModelSpec> = all
        .into_iter()
        .filter(|m| m.grain == Grain::Realtime)
        .collect();
    for m in &models {
        if let Some(d) = m
            .depends_on
            .iter()
            .find(|d| !models.iter().any(|r| &r.name == *d))
        {
            return Err(Error::Model {
                file: m.file.clone(),
                line: 1,
                message: format!(
                    "depends_on `{d}`: the realtime loop runs realtime models only, \
                     so a realtime model can read only those"
                ),
            });
        }
        if m.key.is_empty() {
            return Err(Error::Model {
                file: m.file.clone(),
                line: 1,
                message: "a realtime model needs a key whose first column is the minute".into(),
            });
        }
    }
    Ok(models)
}

struct Loop {
    models: Vec<ModelSpec>,
    sink: Arc<dyn Sink>,
    follower: Box<dyn Follower>,
    chain: ChainState,
    ctx: SessionContext,
    summary: RealtimeSummary,
    /// Days to read again from the source (lost events); kept until the
    /// reload succeeds, so a source that fails meanwhile is retried.
    reload: BTreeSet<NaiveDate>,
    journal: Journal,
}

pub async fn run(config: &Config, opts: RealtimeOptions) -> Result<RealtimeSummary> {
    let models = realtime_models(config)?;
    // Following (not a one-off catch-up), a source or serving database that
    // is down at start is waited for, as it is later.
    let mut backoff = Duration::from_millis(200);
    let (mut lp, mut pending) = loop {
        match setup(config, models.clone()).await {
            Ok(started) => break started,
            Err(e) if e.retry() == Retry::Transient && !opts.exit_when_idle => {
                if opts.stop.load(Ordering::SeqCst) {
                    return Ok(RealtimeSummary::default());
                }
                tracing::warn!(error = %e, retry_in = ?backoff, "realtime: waiting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    };
    loop {
        if opts.stop.load(Ordering::SeqCst) {
            break;
        }
        let step = lp.step(&mut pending, &opts).await;
        match step {
            Ok(idle) => {
                backoff = Duration::from_millis(200);
                if idle && opts.exit_when_idle && pending.is_empty() {
                    break;
                }
            }
            // A source or serving database that is down (any transient
            // failure) is waited for; the pending minutes are kept and
            // written once it is back. A permanent one (a SQL error, a
            // constraint violation) ends the loop: waiting cannot fix it.
            Err(e) if e.retry() == Retry::Transient => {
                tracing::warn!(error = %e, retry_in = ?backoff, "realtime: waiting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
    lp.summary.highest_block = lp.chain.highest().map(|(_, n)| n);
    Ok(lp.summary)
}

/// Opens the sink and the follower from the stored checkpoint, loads the
/// followed days; returns the loop and the minutes to recompute first.
async fn setup(config: &Config, models: Vec<ModelSpec>) -> Result<(Loop, BTreeSet<i64>)> {
    let sink = crate::sinks::open(config).await?;
    let stored: Option<Position> = match sink.checkpoint(DEFAULT_STREAM).await? {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            Error::data(
                format!("checkpoint `{DEFAULT_STREAM}` in {}", sink.describe()),
                e,
            )
        })?),
        None => None,
    };
    let follower: Box<dyn Follower> = match SpeedLayer::open(config)? {
        SpeedLayer::Landing(l) => Box::new(landing_follow::LandingFollower::new(
            l,
            config.speed.poll_interval,
        )),
        SpeedLayer::Mongo(m) => Box::new(
            mongo_follow::MongoFollower::start(
                m,
                config.speed.mongodb.clone().unwrap_or_default().follow,
                config.speed.poll_interval,
                stored.as_ref().map(|p| &p.source),
            )
            .await?,
        ),
    };
    let mut lp = Loop {
        models,
        sink,
        follower,
        chain: ChainState::default(),
        ctx: crate::engine::session(config)?,
        summary: RealtimeSummary::default(),
        reload: BTreeSet::new(),
        journal: stored
            .as_ref()
            .map(|p| p.journal.clone())
            .unwrap_or_default(),
    };
    let pending = lp.start(stored.as_ref()).await?;
    Ok((lp, pending))
}

impl Loop {
    /// Loads the followed days and returns the minutes to recompute first.
    async fn start(&mut self, stored: Option<&Position>) -> Result<BTreeSet<i64>> {
        let latest = self.follower.latest_day().await?;
        let mut days: BTreeSet<NaiveDate> = latest.into_iter().collect();
        if let Some(p) = stored {
            // A checkpoint older than the day before the newest is history:
            // the daily runs own those days.
            if latest.is_none_or(|l| p.day >= l.pred_opt().unwrap_or(l)) {
                days.insert(p.day);
            }
        }
        let mut pending = BTreeSet::new();
        // The day before the first one is loaded too (headers only), so a
        // late fork or transaction there is judged against its own chain.
        if let Some(before) = days.first().and_then(|d| d.pred_opt()) {
            let blocks = self.follower.load_day(before).await?;
            self.chain.add(blocks);
        }
        for &day in &days {
            let blocks = self.follower.load_day(day).await?;
            self.chain.add(blocks);
            match stored {
                Some(p) if p.day == day => {
                    pending.extend(self.chain.restart_minutes(day, p.last_block - REORG_WINDOW))
                }
                // Never followed (or a new day): every minute of the day,
                // so rows left by anything else are replaced too.
                _ => pending.extend(all_minutes(day)),
            }
        }
        self.roll();
        tracing::info!(days = ?days, minutes = pending.len(), resumed = stored.is_some(), "realtime: started");
        Ok(pending)
    }

    /// One pass: poll, then commit what changed. Returns whether the poll
    /// found nothing new.
    async fn step(&mut self, pending: &mut BTreeSet<i64>, opts: &RealtimeOptions) -> Result<bool> {
        let arrivals = self.follower.poll().await?;
        let idle = arrivals.is_empty();
        let resync = arrivals.resync;
        let change = self.chain.add(arrivals.blocks);
        if !change.reorged.is_empty() {
            tracing::info!(
                from_block = change.reorged[0],
                depth = change.reorged.len(),
                "realtime: reorg"
            );
            self.journal
                .reorg(Utc::now().timestamp_millis(), &change.reorged);
        }
        pending.extend(change.minutes);
        pending.extend(arrivals.tx_minutes);
        if resync || change.gap {
            // Events were lost upstream: the source is read again.
            self.summary.resyncs += 1;
            tracing::warn!(
                gap = change.gap,
                "realtime: reloading the followed days from the source"
            );
            self.reload.extend(self.chain.days());
        }
        while let Some(&day) = self.reload.first() {
            // Loaded before the old headers are dropped: a failing source
            // leaves the chain as it was and the reload pending.
            let blocks = self.follower.load_day(day).await?;
            self.chain.forget(day);
            self.chain.add(blocks);
            pending.extend(all_minutes(day));
            self.reload.remove(&day);
        }
        self.roll();
        // Minutes of days the chain no longer holds (pruned, or never
        // loaded) cannot be judged: they are left as they are.
        let days: BTreeSet<NaiveDate> = self.chain.days().into_iter().collect();
        pending.retain(|&m| days.contains(&crate::day::of_micros(m)));
        let all: Vec<i64> = pending.iter().copied().collect();
        if all.is_empty() {
            return Ok(idle);
        }
        // Drawn before this pass reads its rows: a daily run of the same
        // table and day that planned later commits over this pass, never
        // the other way round. (Drawn after the poll, so an idle pass costs
        // the database nothing; a reorg a daily run saw before this pass's
        // poll arrives in the next poll, whose pass recomputes its minutes.)
        let version = self.sink.next_version().await?;
        let chunks: Vec<&[i64]> = all.chunks(MINUTES_PER_COMMIT).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let minutes: BTreeSet<i64> = chunk.iter().copied().collect();
            // The checkpoint rides on the pass's last write only: a crash
            // before it leaves the previous checkpoint, whose restart
            // recomputes all of this pass again.
            let committed = match self.commit(&minutes, i + 1 == chunks.len(), version).await {
                Ok(committed) => committed,
                // The minutes stay pending and are read again next pass.
                Err(e @ Error::Superseded { .. }) => {
                    tracing::info!("realtime: {e}; recomputing");
                    self.summary.superseded += 1;
                    break;
                }
                Err(e) => return Err(e),
            };
            for m in chunk.iter() {
                pending.remove(m);
            }
            if let Some(f) = &opts.on_commit {
                f(&committed);
            }
        }
        Ok(idle)
    }

    /// Follows the newest block's day (day rollover) and forgets days
    /// before the previous one.
    fn roll(&mut self) {
        if let Some((day, highest)) = self.chain.highest() {
            self.chain.prune(day.pred_opt().unwrap_or(day));
            self.follower.set_current(day, highest);
        }
    }

    /// Recomputes `minutes` and writes them, day by day and model by
    /// model; the last write also stores the checkpoint if `checkpoint`.
    async fn commit(
        &mut self,
        minutes: &BTreeSet<i64>,
        checkpoint: bool,
        version: i64,
    ) -> Result<Committed> {
        let rows = self.follower.read_minutes(minutes).await?;
        let (blocks, transactions) = self.canonical_rows(rows, minutes)?;
        let mut by_day: std::collections::BTreeMap<NaiveDate, Vec<i64>> = Default::default();
        for &m in minutes {
            by_day.entry(crate::day::of_micros(m)).or_default().push(m);
        }
        let (day, highest) = self.chain.highest().unwrap_or((crate::day::today(), 0));
        if checkpoint {
            if let Some(ts) = self.chain.highest_canonical_ts() {
                self.journal
                    .commit(Utc::now().timestamp_millis(), highest, ts.div_euclid(1000));
            }
        }
        let position = Position {
            day,
            last_block: highest,
            source: self.follower.position(),
            journal: self.journal.clone(),
        };
        let position = Checkpoint {
            stream: DEFAULT_STREAM.into(),
            position: serde_json::to_string(&position).expect("positions serialize"),
        };
        self.register(Entity::Blocks, blocks)?;
        self.register(Entity::Transactions, transactions)?;
        let mut written = 0;
        let writes = by_day.len() * self.models.len();
        let mut write = 0;
        for (day, day_minutes) in by_day {
            let start = crate::day::at_micros(day_minutes[0]);
            let end = crate::day::at_micros(day_minutes[day_minutes.len() - 1] + MINUTE_MICROS);
            for model in &self.models {
                write += 1;
                let batches = compute(&self.ctx, model, &self.models, day, start, end).await?;
                let schema = batches.0;
                written += self
                    .sink
                    .write(WriteRequest {
                        table: model.name.clone(),
                        key: model.key.clone(),
                        mode: WriteMode::ReplaceMinutes {
                            column: model.key[0].clone(),
                            minutes: day_minutes.clone(),
                        },
                        day,
                        schema,
                        batches: batches.1,
                        run_id: None,
                        checkpoint: (checkpoint && write == writes).then(|| position.clone()),
                        version: Some(version),
                    })
                    .await?;
            }
        }
        self.summary.passes += 1;
        self.summary.minutes_written += minutes.len() as u64;
        self.summary.rows_written += written;
        tracing::debug!(
            minutes = minutes.len(),
            rows = written,
            highest,
            "realtime: committed"
        );
        Ok(Committed {
            minutes: minutes.len(),
            rows: written,
            highest_block: highest,
            at: Instant::now(),
        })
    }

    /// Keeps the rows of canonical blocks inside `minutes`.
    fn canonical_rows(
        &self,
        rows: MinuteRows,
        minutes: &BTreeSet<i64>,
    ) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        let keep = |entity: Entity, batches: Vec<RecordBatch>| -> Result<Vec<RecordBatch>> {
            let mut out = Vec::new();
            for batch in batches {
                let batch = conform(entity, &batch)?;
                let ts = batch
                    .column_by_name(entity.time_column())
                    .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
                    .expect("conformed");
                let hashes = batch
                    .column_by_name(entity.block_hash_column())
                    .and_then(|c| c.as_string_opt::<i32>())
                    .expect("conformed");
                let mask: BooleanArray = (0..batch.num_rows())
                    .map(|i| {
                        let t = ts.value(i);
                        Some(
                            minutes.contains(&minute_of(t))
                                && self
                                    .chain
                                    .is_canonical(crate::day::of_micros(t), hashes.value(i)),
                        )
                    })
                    .collect();
                let kept = filter_record_batch(&batch, &mask)
                    .map_err(|e| Error::data("filtering canonical rows", e))?;
                if kept.num_rows() > 0 {
                    out.push(kept);
                }
            }
            Ok(out)
        };
        Ok((
            keep(Entity::Blocks, rows.blocks)?,
            keep(Entity::Transactions, rows.transactions)?,
        ))
    }

    fn register(&self, entity: Entity, batches: Vec<RecordBatch>) -> Result<()> {
        let engine = |e| Error::Engine {
            model: format!("<realtime {}>", entity.name()),
            day: crate::day::today(),
            source: e,
        };
        let table = MemTable::try_new(entity.schema(), vec![batches]).map_err(engine)?;
        self.ctx.deregister_table(entity.name()).map_err(engine)?;
        self.ctx
            .register_table(entity.name(), Arc::new(table))
            .map_err(engine)?;
        Ok(())
    }
}

/// Runs a realtime model's SQL over the registered minute rows.
async fn compute(
    ctx: &SessionContext,
    model: &ModelSpec,
    all: &[ModelSpec],
    day: NaiveDate,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
    // Upstream realtime models read as views over the same minutes.
    let none = crate::models::Outputs::new();
    let (schema, df) = crate::models::plan(ctx, model, all, &none, day, start, end).await?;
    let batches = df.collect().await.map_err(|e| Error::Engine {
        model: model.name.clone(),
        day,
        source: e,
    })?;
    Ok((schema, batches))
}

/// A batch read from a landing file or MongoDB in the canonical schema
/// (files may order columns differently or carry more).
fn conform(entity: Entity, batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = entity.schema();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = batch
            .column_by_name(field.name())
            .ok_or_else(|| Error::Schema {
                file: format!("a {} micro-batch", entity.name()),
                column: field.name().clone(),
                expected: field.data_type().to_string(),
                problem: "is missing".into(),
            })?;
        let column = if column.data_type() == field.data_type() {
            column.clone()
        } else {
            arrow::compute::cast(column, field.data_type())
                .map_err(|e| Error::data(format!("{}.{}", entity.name(), field.name()), e))?
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema, columns).map_err(|e| Error::data(entity.name(), e))
}

fn all_minutes(day: NaiveDate) -> impl Iterator<Item = i64> {
    let start = crate::day::bounds(day).0.timestamp_micros();
    (0..1440).map(move |i| start + i * MINUTE_MICROS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, grain: &str, deps: &str) -> ModelSpec {
        let text = format!(
            "-- key: minute\n-- grain: {grain}\n-- write: upsert\n-- depends_on: {deps}\nSELECT 1"
        );
        ModelSpec::parse(&format!("models/{name}.sql"), &text).unwrap()
    }

    #[test]
    fn a_realtime_model_may_read_realtime_models_only() {
        let ok = realtime_only(vec![
            model("daily", "day", ""),
            model("a", "realtime", ""),
            model("b", "realtime", "a"),
        ])
        .unwrap();
        let names: Vec<&str> = ok.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let err = realtime_only(vec![
            model("daily", "day", ""),
            model("b", "realtime", "daily"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("models/b.sql") && err.contains("`daily`"),
            "{err}"
        );
    }
}
