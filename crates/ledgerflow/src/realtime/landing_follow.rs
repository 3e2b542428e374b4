//! Following a landing dir: new files, by name (names sort by arrival), in
//! the current day's partition and its neighbours. Each file's time span
//! is remembered, so the rows of a minute are read from the few files that
//! hold it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use async_trait::async_trait;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::ObjectMeta;

use super::chain::{minute_of, BlockInfo};
use super::follow::{Arrivals, Follower, MinuteRows};
use crate::catalog::schema::Entity;
use crate::catalog::speed::landing::LandingLayer;
use crate::error::{Error, Result};

struct Span {
    entity: Entity,
    day: NaiveDate,
    meta: ObjectMeta,
    first: i64,
    last: i64,
}

pub struct LandingFollower {
    landing: LandingLayer,
    poll_interval: Duration,
    current: Option<NaiveDate>,
    /// Last file name taken, per (entity, day).
    seen: BTreeMap<(Entity, NaiveDate), String>,
    spans: Vec<Span>,
}

impl LandingFollower {
    pub fn new(landing: LandingLayer, poll_interval: Duration) -> Self {
        Self {
            landing,
            poll_interval,
            current: None,
            seen: BTreeMap::new(),
            spans: Vec::new(),
        }
    }

    fn file_name(meta: &ObjectMeta) -> String {
        meta.location.filename().unwrap_or_default().to_string()
    }

    /// Files of (entity, day) not taken yet, in arrival order.
    async fn new_files(&self, entity: Entity, day: NaiveDate) -> Result<Vec<ObjectMeta>> {
        let mut files = self.landing.list_day(entity.name(), day).await?;
        files.sort_by_key(Self::file_name);
        let after = self.seen.get(&(entity, day));
        Ok(files
            .into_iter()
            .filter(|f| after.is_none_or(|a| Self::file_name(f) > *a))
            .collect())
    }

    /// Reads what the loop needs of a file, remembers its span and marks
    /// it taken.
    async fn take(
        &mut self,
        entity: Entity,
        day: NaiveDate,
        meta: ObjectMeta,
        arrivals: &mut Arrivals,
    ) -> Result<()> {
        let describe = || self.landing.files.describe(&meta.location);
        // A file that does not fit the schema is named now, not later as an
        // engine error.
        let schema = self.landing.files.file_schema(&meta).await?;
        crate::catalog::schema::check_file(&describe(), &entity.schema(), &schema)?;
        let columns: &[&str] = match entity {
            Entity::Blocks => &["number", "hash", "parent_hash", "timestamp"],
            Entity::Transactions => &["block_timestamp"],
        };
        let batches = self.landing.files.read_columns(&meta, columns).await?;
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        for batch in &batches {
            let ts = timestamps(batch, entity.time_column()).ok_or_else(|| Error::Schema {
                file: describe(),
                column: entity.time_column().into(),
                expected: "Timestamp(µs, UTC)".into(),
                problem: "is missing or has another type".into(),
            })?;
            for &t in ts.values() {
                first = first.min(t);
                last = last.max(t);
            }
            match entity {
                Entity::Blocks => {
                    arrivals
                        .blocks
                        .extend(block_infos(batch).ok_or_else(|| Error::Schema {
                            file: describe(),
                            column: "number, hash, parent_hash".into(),
                            expected: "Int64, Utf8, Utf8".into(),
                            problem: "are missing or have other types".into(),
                        })?)
                }
                Entity::Transactions => arrivals
                    .tx_minutes
                    .extend(ts.values().iter().map(|&t| minute_of(t))),
            }
        }
        self.seen.insert((entity, day), Self::file_name(&meta));
        if first <= last {
            self.spans.push(Span {
                entity,
                day,
                meta,
                first,
                last,
            });
        }
        Ok(())
    }

    fn followed_days(&self) -> Vec<NaiveDate> {
        let Some(cur) = self.current else {
            return vec![crate::day::today()];
        };
        [cur.pred_opt(), Some(cur), cur.succ_opt()]
            .into_iter()
            .flatten()
            .collect()
    }
}

fn timestamps<'a>(
    batch: &'a RecordBatch,
    column: &str,
) -> Option<&'a arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
    batch
        .column_by_name(column)?
        .as_primitive_opt::<TimestampMicrosecondType>()
}

/// Block headers of a blocks batch (canonical schema or a projection of it).
pub fn block_infos(batch: &RecordBatch) -> Option<Vec<BlockInfo>> {
    let numbers = batch
        .column_by_name("number")?
        .as_primitive_opt::<Int64Type>()?;
    let hashes = batch.column_by_name("hash")?.as_string_opt::<i32>()?;
    let parents = batch
        .column_by_name("parent_hash")?
        .as_string_opt::<i32>()?;
    let ts = timestamps(batch, "timestamp")?;
    Some(
        (0..batch.num_rows())
            .map(|i| BlockInfo {
                number: numbers.value(i),
                hash: hashes.value(i).to_string(),
                parent_hash: parents.value(i).to_string(),
                ts_micros: ts.value(i),
            })
            .collect(),
    )
}

#[async_trait]
impl Follower for LandingFollower {
    async fn latest_day(&mut self) -> Result<Option<NaiveDate>> {
        let days = self.landing.files.list_days(Entity::Blocks.name()).await?;
        Ok(days.into_iter().max())
    }

    async fn load_day(&mut self, day: NaiveDate) -> Result<Vec<BlockInfo>> {
        // A (re)load reads every file of the day, whatever was taken before.
        self.seen.retain(|(_, d), _| *d != day);
        self.spans.retain(|s| s.day != day);
        let mut arrivals = Arrivals::default();
        for entity in Entity::ALL {
            for meta in self.new_files(entity, day).await? {
                self.take(entity, day, meta, &mut arrivals).await?;
            }
        }
        Ok(arrivals.blocks)
    }

    async fn poll(&mut self) -> Result<Arrivals> {
        let mut arrivals = Arrivals::default();
        for day in self.followed_days() {
            // Transactions first: the generator (and any writer following
            // the landing contract) lands a block's transactions before it.
            for entity in [Entity::Transactions, Entity::Blocks] {
                for meta in self.new_files(entity, day).await? {
                    self.take(entity, day, meta, &mut arrivals).await?;
                }
            }
        }
        if arrivals.is_empty() {
            tokio::time::sleep(self.poll_interval).await;
        }
        Ok(arrivals)
    }

    async fn read_minutes(&mut self, minutes: &BTreeSet<i64>) -> Result<MinuteRows> {
        let mut rows = MinuteRows::default();
        for span in &self.spans {
            if minutes
                .range(minute_of(span.first)..=span.last)
                .next()
                .is_none()
            {
                continue;
            }
            let batches: Vec<RecordBatch> = self
                .landing
                .files
                .read_stream(&span.meta)
                .await?
                .try_collect()
                .await
                .map_err(|e| self.landing.files.parquet_error(&span.meta, e))?;
            match span.entity {
                Entity::Blocks => rows.blocks.extend(batches),
                Entity::Transactions => rows.transactions.extend(batches),
            }
        }
        Ok(rows)
    }

    fn set_current(&mut self, day: NaiveDate, _highest_block: i64) {
        self.current = Some(day);
        // Spans of days no longer followed are dropped with them.
        let keep_from = day.pred_opt().unwrap_or(day);
        self.spans.retain(|s| s.day >= keep_from);
        self.seen.retain(|(_, d), _| *d >= keep_from);
    }

    fn position(&self) -> serde_json::Value {
        let files: BTreeMap<String, &String> = self
            .seen
            .iter()
            .map(|((entity, day), name)| (format!("{entity}/{day}"), name))
            .collect();
        serde_json::json!({ "last_files": files })
    }
}
