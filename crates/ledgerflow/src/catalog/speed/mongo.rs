//! MongoDB as the speed layer: one collection of blocks and one of
//! transactions, each with a BSON date time field. Reads push the time
//! window and the projection into the query and stream documents into
//! Arrow batches of bounded size; nothing of a day is held whole in memory.

use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::{DateTime, NaiveDate, Utc};
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongodb::error::{CommandError, ErrorKind};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::bson_arrow::{self, DocBatcher, DocContext};
use crate::catalog::schema::Entity;
use crate::config::{Config, MongoSettings};
use crate::error::{Error, Result};

/// Documents fetched per round trip.
const FETCH_BATCH: u32 = 5_000;

/// MongoDB's error code for a resume token older than the oplog.
pub const CHANGE_STREAM_HISTORY_LOST: i32 = 286;

#[derive(Debug, Clone)]
pub struct MongoLayer {
    uri: String,
    /// `host:port/database`, for messages (never the password).
    target: String,
    database: String,
    blocks: String,
    transactions: String,
    configured_ttl: Option<Duration>,
    connect_timeout: Duration,
    create_indexes: bool,
    batch_rows: usize,
    client: std::sync::Arc<OnceCell<Client>>,
    indexes: std::sync::Arc<OnceCell<()>>,
}

impl MongoLayer {
    pub fn open(config: &Config, uri: &str, s: &MongoSettings) -> Result<Self> {
        // Parsing the hosts here (no network) gives a password-free target
        // for every message, and rejects a malformed URL as a config error.
        let hosts = uri
            .split_once("://")
            .map(|(_, rest)| rest)
            .and_then(|rest| rest.split(['/', '?']).next())
            .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::Config {
                path: config.source_path.clone(),
                message: "`speed.url`: a MongoDB URL needs a host (mongodb://host:port/)".into(),
            })?;
        Ok(Self {
            uri: uri.to_string(),
            target: format!("mongodb://{hosts}/{}", s.database),
            database: s.database.clone(),
            blocks: s.blocks_collection.clone(),
            transactions: s.transactions_collection.clone(),
            configured_ttl: config.speed.ttl,
            connect_timeout: s.connect_timeout,
            create_indexes: s.create_indexes,
            batch_rows: config.engine.batch_size,
            client: Default::default(),
            indexes: Default::default(),
        })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn collection_name(&self, entity: Entity) -> &str {
        match entity {
            Entity::Blocks => &self.blocks,
            Entity::Transactions => &self.transactions,
        }
    }

    /// What a day's query reads, for messages.
    pub fn describe_day(&self, entity: Entity, day: NaiveDate) -> String {
        format!(
            "{}.{} ({} in {day})",
            self.target,
            self.collection_name(entity),
            entity.time_column()
        )
    }

    pub async fn client(&self) -> Result<&Client> {
        self.client
            .get_or_try_init(|| async {
                let mut opts = ClientOptions::parse(&self.uri)
                    .await
                    .map_err(|e| self.classify(e, "parsing the connection string"))?;
                opts.app_name = Some("ledgerflow".into());
                opts.server_selection_timeout = Some(self.connect_timeout);
                opts.connect_timeout = Some(self.connect_timeout);
                Client::with_options(opts).map_err(|e| self.classify(e, "connecting"))
            })
            .await
    }

    pub async fn database(&self) -> Result<Database> {
        Ok(self.client().await?.database(&self.database))
    }

    pub async fn collection(&self, entity: Entity) -> Result<Collection<RawDocumentBuf>> {
        Ok(self
            .database()
            .await?
            .collection::<RawDocumentBuf>(self.collection_name(entity)))
    }

    /// Turns a driver error into ours: unreachable servers are
    /// [`Error::SourceUnavailable`] (the skip policy applies), the rest
    /// [`Error::Speed`]. Driver messages name hosts, never passwords.
    pub fn classify(&self, e: mongodb::error::Error, doing: &str) -> Error {
        if is_unavailable(&e) {
            Error::SourceUnavailable {
                target: self.target.clone(),
                message: format!("{doing}: {}", e.kind),
            }
        } else {
            Error::Speed {
                target: self.target.clone(),
                message: format!("{doing}: {}", e.kind),
            }
        }
    }

    /// Makes sure both time fields (and the block number, for polling) are
    /// indexed, once per process. Without the right to create indexes it
    /// says which are missing instead of failing.
    pub async fn ensure_indexes(&self) -> Result<()> {
        self.indexes
            .get_or_try_init(|| async {
                for (entity, field) in [
                    (Entity::Blocks, "timestamp"),
                    (Entity::Blocks, "number"),
                    (Entity::Transactions, "block_timestamp"),
                ] {
                    let coll = self.collection(entity).await?;
                    let present = async {
                        let names = coll.list_index_names().await?;
                        Ok::<_, mongodb::error::Error>(names.iter().any(|n| n == &format!("{field}_1")))
                    };
                    match present.await {
                        Ok(true) => continue,
                        Err(e) if is_unavailable(&e) => {
                            return Err(self.classify(e, "listing indexes"))
                        }
                        _ => {}
                    }
                    if !self.create_indexes {
                        tracing::warn!(collection = %coll.name(), field, "speed layer: no index on the time field; day reads scan the collection (create it, or set speed.mongodb.create_indexes = true)");
                        continue;
                    }
                    let model = IndexModel::builder().keys(doc! {field: 1}).build();
                    if let Err(e) = coll.create_index(model).await {
                        if is_unavailable(&e) {
                            return Err(self.classify(e, "creating an index"));
                        }
                        tracing::warn!(collection = %coll.name(), field, error = %e.kind, "speed layer: could not create the index; day reads scan the collection");
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The speed layer's retention: `speed.ttl`, else the TTL index on the
    /// blocks' time field, else none.
    pub async fn ttl(&self) -> Result<Option<Duration>> {
        if self.configured_ttl.is_some() {
            return Ok(self.configured_ttl);
        }
        let coll = self.collection(Entity::Blocks).await?;
        let mut cursor = coll
            .list_indexes()
            .await
            .map_err(|e| self.classify(e, "listing indexes"))?;
        use futures::TryStreamExt;
        while let Some(index) = cursor
            .try_next()
            .await
            .map_err(|e| self.classify(e, "listing indexes"))?
        {
            let on_time = index.keys.keys().next().map(String::as_str) == Some("timestamp");
            if let Some(ttl) = index
                .options
                .and_then(|o| o.expire_after)
                .filter(|_| on_time)
            {
                return Ok(Some(ttl));
            }
        }
        Ok(None)
    }

    /// Fails a day that starts before `now - ttl`: part of it has expired.
    pub async fn check_within_ttl(
        &self,
        day: NaiveDate,
        now: DateTime<Utc>,
        batch: String,
    ) -> Result<()> {
        let Some(ttl) = self.ttl().await? else {
            return Ok(());
        };
        let start = crate::day::bounds(day).0;
        let horizon = now - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        if start < horizon {
            return Err(Error::BeyondTtl {
                day,
                batch,
                speed: self.describe_day(Entity::Blocks, day),
                ttl: humantime::format_duration(ttl).to_string(),
            });
        }
        Ok(())
    }

    /// The filter of one time window on an entity's time field.
    pub fn window_filter(entity: Entity, start: DateTime<Utc>, end: DateTime<Utc>) -> Document {
        doc! {entity.time_column(): {
            "$gte": mongodb::bson::DateTime::from_millis(start.timestamp_millis()),
            "$lt": mongodb::bson::DateTime::from_millis(end.timestamp_millis()),
        }}
    }

    /// Opens a cursor over the documents matching `filter` that hands out
    /// Arrow batches of at most `engine.batch_size` rows; blocks come in
    /// arrival (`_id`) order.
    pub async fn cursor(&self, entity: Entity, filter: Document) -> Result<BatchCursor<'_>> {
        let coll = self.collection(entity).await?;
        let schema = entity.schema();
        let mut find = coll
            .find(filter)
            .projection(bson_arrow::projection(&schema))
            .batch_size(FETCH_BATCH);
        if entity == Entity::Blocks {
            find = find.sort(doc! {"_id": 1});
        }
        let doing = format!("reading {}", coll.name());
        let cursor = find.await.map_err(|e| self.classify(e, &doing))?;
        Ok(BatchCursor {
            layer: self,
            cursor,
            batcher: DocBatcher::new(schema),
            collection: coll.name().to_string(),
            doing,
            content: None,
            read: 0,
        })
    }

    /// Every document matching `filter`, as batches (small windows only).
    pub async fn read_all(&self, entity: Entity, filter: Document) -> Result<Vec<RecordBatch>> {
        let mut cursor = self.cursor(entity, filter).await?;
        let mut out = Vec::new();
        while let Some(batch) = cursor.next_batch().await? {
            out.push(batch);
        }
        Ok(out)
    }

    /// Appends rows (for `generate`): one `insert_many` per batch.
    pub async fn insert(&self, entity: Entity, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let docs = bson_arrow::batch_documents(batch).map_err(|message| Error::Speed {
            target: self.target.clone(),
            message,
        })?;
        let coll = self
            .database()
            .await?
            .collection::<Document>(self.collection_name(entity));
        coll.insert_many(docs)
            .await
            .map_err(|e| self.classify(e, &format!("inserting into {}", coll.name())))?;
        Ok(())
    }
}

pub struct BatchCursor<'a> {
    layer: &'a MongoLayer,
    cursor: mongodb::Cursor<RawDocumentBuf>,
    batcher: DocBatcher,
    collection: String,
    doing: String,
    /// When set, every document's raw bytes are hashed into it: the
    /// identity of what was read, for change detection.
    pub content: Option<Sha256>,
    pub read: u64,
}

impl BatchCursor<'_> {
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let ctx = DocContext {
            collection: &self.collection,
        };
        while self.batcher.rows() < self.layer.batch_rows {
            let more = self
                .cursor
                .advance()
                .await
                .map_err(|e| self.layer.classify(e, &self.doing))?;
            if !more {
                break;
            }
            let doc = self.cursor.current();
            self.batcher
                .push(doc, &ctx)
                .map_err(|message| Error::Speed {
                    target: self.layer.target.clone(),
                    message,
                })?;
            if let Some(h) = &mut self.content {
                h.update(doc.as_bytes());
            }
            self.read += 1;
        }
        Ok((self.batcher.rows() > 0).then(|| self.batcher.finish()))
    }
}

/// Server error codes of a replica set changing its primary (and
/// shutting down): transient, waited out like an unreachable server.
const FAILOVER_CODES: [i32; 8] = [91, 189, 10107, 11600, 11602, 13435, 13436, 89];

/// Errors that mean "the server is not there (for now)" rather than "it
/// said no".
pub fn is_unavailable(e: &mongodb::error::Error) -> bool {
    matches!(
        *e.kind,
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
    ) || matches!(&*e.kind, ErrorKind::Command(c) if FAILOVER_CODES.contains(&c.code))
        || e.contains_label("RetryableError")
        || e.contains_label("ResumableChangeStreamError")
}

/// A resume token the server no longer has history for.
pub fn is_history_lost(e: &mongodb::error::Error) -> bool {
    matches!(
        *e.kind,
        ErrorKind::Command(CommandError {
            code: CHANGE_STREAM_HISTORY_LOST,
            ..
        })
    )
}

/// A TTL index on `field`, as a deployment of the speed layer sets one up
/// (read back by [`MongoLayer::ttl`]).
pub fn ttl_index(field: &str, ttl: Duration) -> IndexModel {
    IndexModel::builder()
        .keys(doc! {field: 1})
        .options(IndexOptions::builder().expire_after(ttl).build())
        .build()
}
