//! The speed layer: the open day, block by block. Either a landing dir of
//! micro-batch files (the embedded default) or MongoDB. Both hand the
//! catalog the same thing for a day: Parquet files of the canonical
//! schemas plus the block headers in arrival order, so the boundary and
//! reorg rules, validation and registration are one code path.

pub mod bson_arrow;
pub mod copy;
pub mod landing;
pub mod mongo;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use chrono::{NaiveDate, Utc};
use object_store::ObjectMeta;
use sha2::{Digest, Sha256};

use self::landing::LandingLayer;
use self::mongo::MongoLayer;
use super::reorg::Header;
use super::schema::Entity;
use super::store::PartitionStore;
use crate::config::{Config, SpeedTarget};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub enum SpeedLayer {
    Landing(LandingLayer),
    Mongo(MongoLayer),
}

/// A MongoDB day copied into the spill dir for one run; removed when the
/// last plan holding it is dropped.
#[derive(Debug)]
pub struct Scratch {
    pub store: PartitionStore,
    /// Hash of every document read: the day's input identity.
    pub content: String,
    _dir: tempfile::TempDir,
}

/// One day of the speed layer, ready for the catalog.
#[derive(Debug)]
pub struct SpeedDay {
    pub files: BTreeMap<Entity, Vec<ObjectMeta>>,
    pub headers: Vec<Header>,
    pub scratch: Option<Arc<Scratch>>,
}

impl SpeedLayer {
    pub fn open(config: &Config) -> Result<Self> {
        Ok(match config.speed_target()? {
            SpeedTarget::Landing { location } => {
                SpeedLayer::Landing(LandingLayer::open(config, location)?)
            }
            SpeedTarget::Mongo { uri, settings } => {
                SpeedLayer::Mongo(MongoLayer::open(config, uri.expose(), &settings)?)
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SpeedLayer::Landing(_) => "landing dir",
            SpeedLayer::Mongo(_) => "MongoDB",
        }
    }

    /// Whose days are read into a Parquet copy in the local spill dir
    /// (MongoDB), by kind; `None` when its files are read where they are.
    pub fn local_copy(&self) -> Option<&'static str> {
        match self {
            SpeedLayer::Landing(_) => None,
            SpeedLayer::Mongo(_) => Some(self.kind()),
        }
    }

    pub fn landing(&self) -> Option<&LandingLayer> {
        match self {
            SpeedLayer::Landing(l) => Some(l),
            SpeedLayer::Mongo(_) => None,
        }
    }

    pub fn describe_day(&self, day: NaiveDate) -> String {
        match self {
            SpeedLayer::Landing(l) => l.describe_day(Entity::Blocks.name(), day),
            SpeedLayer::Mongo(m) => m.describe_day(Entity::Blocks, day),
        }
    }

    /// Reads `day` from the speed layer. `batch` describes the batch
    /// partition, for the TTL error.
    pub async fn day(&self, day: NaiveDate, spill_dir: &Path, batch: String) -> Result<SpeedDay> {
        match self {
            SpeedLayer::Landing(l) => {
                let mut files = BTreeMap::new();
                for entity in Entity::ALL {
                    files.insert(entity, l.list_day(entity.name(), day).await?);
                }
                let headers = l.headers(&files[&Entity::Blocks]).await?;
                Ok(SpeedDay {
                    files,
                    headers,
                    scratch: None,
                })
            }
            SpeedLayer::Mongo(m) => {
                m.check_within_ttl(day, Utc::now(), batch).await?;
                m.ensure_indexes().await?;
                materialize(m, day, spill_dir).await
            }
        }
    }

    /// The block headers of `day` only, in arrival order: the chain around
    /// a planned day. A MongoDB day past its TTL has none.
    pub async fn headers(&self, day: NaiveDate) -> Result<Vec<Header>> {
        match self {
            SpeedLayer::Landing(l) => {
                let files = l.list_day(Entity::Blocks.name(), day).await?;
                l.headers(&files).await
            }
            SpeedLayer::Mongo(m) => {
                if m.check_within_ttl(day, Utc::now(), String::new())
                    .await
                    .is_err()
                {
                    return Ok(Vec::new());
                }
                let (start, end) = crate::day::bounds(day);
                let mut cursor = m
                    .cursor(
                        Entity::Blocks,
                        MongoLayer::window_filter(Entity::Blocks, start, end),
                    )
                    .await?;
                let mut headers = Vec::new();
                while let Some(batch) = cursor.next_batch().await? {
                    push_headers(&batch, &mut headers);
                }
                Ok(headers)
            }
        }
    }
}

/// Block identities of Parquet files of blocks, in file then row order.
pub async fn read_headers(store: &PartitionStore, files: &[ObjectMeta]) -> Result<Vec<Header>> {
    use futures::StreamExt;
    let mut headers = Vec::new();
    // The futures are made first (see `PartitionStore::file_schemas`).
    let reads: Vec<_> = files
        .iter()
        .map(|meta| store.read_columns(meta, &["number", "hash", "parent_hash"]))
        .collect();
    let mut read = futures::stream::iter(reads).buffered(super::store::FILES_IN_FLIGHT);
    let mut metas = files.iter();
    while let Some(batches) = read.next().await {
        let (meta, batches) = (metas.next().expect("one read per file"), batches?);
        for batch in batches {
            if !push_headers(&batch, &mut headers) {
                return Err(Error::Schema {
                    file: store.describe(&meta.location),
                    column: "number, hash, parent_hash".into(),
                    expected: "Int64, Utf8, Utf8".into(),
                    problem: "are missing or have other types".into(),
                });
            }
        }
    }
    Ok(headers)
}

/// Copies a MongoDB day into Parquet files in a fresh directory under the
/// spill dir, streaming (bounded memory), and collects the block headers.
async fn materialize(m: &MongoLayer, day: NaiveDate, spill_dir: &Path) -> Result<SpeedDay> {
    let dir = crate::engine::scratch_dir(spill_dir, "speed-day-")?;
    let store = PartitionStore::local(dir.path())?;
    let (start, end) = crate::day::bounds(day);
    let mut content = Sha256::new();
    let mut files = BTreeMap::new();
    let mut headers = Vec::new();
    for entity in Entity::ALL {
        let path = PartitionStore::day_prefix(entity.name(), day).join("part-0.parquet");
        let mut cursor = m
            .cursor(entity, MongoLayer::window_filter(entity, start, end))
            .await?;
        cursor.content = Some(Sha256::new());
        let mut writer = store.parquet_writer(&path, entity.schema(), None)?;
        while let Some(batch) = cursor.next_batch().await? {
            if entity == Entity::Blocks {
                let canonical = push_headers(&batch, &mut headers);
                debug_assert!(canonical, "the batcher builds the canonical schema");
            }
            writer
                .write(&batch)
                .await
                .map_err(|e| Error::data(store.describe(&path), e))?;
            crate::failpoint::hit("speed_read", entity.name()).await;
        }
        writer
            .close()
            .await
            .map_err(|e| Error::data(store.describe(&path), e))?;
        content.update(entity.name());
        content.update(cursor.read.to_le_bytes());
        content.update(cursor.content.take().expect("set above").finalize());
        let metas = if cursor.read == 0 {
            store.delete(&path).await?;
            Vec::new()
        } else {
            store.list_day(entity.name(), day).await?
        };
        files.insert(entity, metas);
    }
    Ok(SpeedDay {
        files,
        headers,
        scratch: Some(Arc::new(Scratch {
            store,
            content: hex::encode(&content.finalize()[..16]),
            _dir: dir,
        })),
    })
}

/// Appends the headers of a blocks batch (its `number`, `hash` and
/// `parent_hash` columns, found by name) in row order; `false` if one of
/// them is missing or has another type.
pub fn push_headers(batch: &RecordBatch, headers: &mut Vec<Header>) -> bool {
    let numbers = batch
        .column_by_name("number")
        .and_then(|c| c.as_primitive_opt::<Int64Type>());
    let hashes = batch
        .column_by_name("hash")
        .and_then(|c| c.as_string_opt::<i32>());
    let parents = batch
        .column_by_name("parent_hash")
        .and_then(|c| c.as_string_opt::<i32>());
    let (Some(numbers), Some(hashes), Some(parents)) = (numbers, hashes, parents) else {
        return false;
    };
    for i in 0..batch.num_rows() {
        headers.push(Header {
            number: numbers.value(i),
            hash: hashes.value(i).to_string(),
            parent_hash: parents.value(i).to_string(),
            arrival: headers.len(),
        });
    }
    true
}
