//! Following MongoDB: a change stream on the database (inserts into the
//! blocks and transactions collections) resumed from the stored token, or,
//! where change streams are not available, polling the newest heights by
//! block number. A token the server has no history for (error 286) starts
//! a fresh stream and asks the loop to reload and recompute.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::error::ErrorKind;

use super::chain::{minute_of, BlockInfo};
use super::follow::{minute_windows, Arrivals, Follower, MinuteRows};
use super::landing_follow::block_infos;
use super::REORG_WINDOW;
use crate::catalog::schema::Entity;
use crate::catalog::speed::mongo::{is_history_lost, MongoLayer};
use crate::config::FollowMode;
use crate::error::{Error, Result};

/// Events taken per poll at most, so a backlog is committed in steps.
const MAX_EVENTS_PER_POLL: usize = 20_000;

enum Mode {
    Stream {
        stream: Option<ChangeStream<ChangeStreamEvent<Document>>>,
        token: Option<ResumeToken>,
    },
    Poll {
        /// Transactions seen per block hash (two forks at one height may
        /// sit in different minutes).
        tx_counts: HashMap<String, i64>,
        /// Hashes of the blocks reported, by height (pruned with the window).
        seen: HashMap<String, i64>,
    },
}

pub struct MongoFollower {
    mongo: MongoLayer,
    poll_interval: Duration,
    mode: Mode,
    highest: i64,
    resync: bool,
}

impl MongoFollower {
    /// Opens the change stream (before the loop loads the day, so nothing
    /// falls between the two) from the stored position, or chooses polling.
    pub async fn start(
        mongo: MongoLayer,
        follow: FollowMode,
        poll_interval: Duration,
        stored: Option<&serde_json::Value>,
    ) -> Result<Self> {
        let token: Option<ResumeToken> = stored
            .and_then(|s| s.get("token"))
            .and_then(|t| serde_json::from_value(t.clone()).ok());
        let mut me = Self {
            mongo,
            poll_interval,
            mode: Mode::Poll {
                tx_counts: HashMap::new(),
                seen: HashMap::new(),
            },
            highest: stored
                .and_then(|s| s.get("last_block"))
                .and_then(|b| b.as_i64())
                .unwrap_or(i64::MIN),
            resync: false,
        };
        if follow == FollowMode::Poll {
            return Ok(me);
        }
        match me.open_stream(token.clone()).await {
            Ok(stream) => {
                me.mode = Mode::Stream {
                    stream: Some(stream),
                    token,
                }
            }
            Err(StreamError::Unsupported(message)) if follow == FollowMode::Auto => {
                tracing::warn!(%message, "change streams are not available: following MongoDB by polling block numbers");
            }
            Err(e) => return Err(e.into_error(&me.mongo)),
        }
        Ok(me)
    }

    async fn open_stream(
        &mut self,
        token: Option<ResumeToken>,
    ) -> std::result::Result<ChangeStream<ChangeStreamEvent<Document>>, StreamError> {
        let db = self.mongo.database().await.map_err(StreamError::Other)?;
        let watch = |token: Option<ResumeToken>| {
            db.watch()
                .pipeline([doc! {"$match": {
                    "operationType": "insert",
                    "ns.coll": {"$in": [
                        self.mongo.collection_name(Entity::Blocks),
                        self.mongo.collection_name(Entity::Transactions),
                    ]},
                }}])
                .max_await_time(self.poll_interval)
                .resume_after(token)
        };
        match watch(token.clone()).await {
            Ok(s) => Ok(s),
            Err(e) if token.is_some() && is_history_lost(&e) => {
                tracing::warn!("the change stream's resume token is older than the server's history: starting a new stream and recomputing the followed days");
                self.resync = true;
                watch(None).await.map_err(|e| {
                    StreamError::Other(self.mongo.classify(e, "opening a change stream"))
                })
            }
            Err(e) if matches!(*e.kind, ErrorKind::Command(_)) => {
                Err(StreamError::Unsupported(e.kind.to_string()))
            }
            Err(e) => Err(StreamError::Other(
                self.mongo.classify(e, "opening a change stream"),
            )),
        }
    }

    fn block_of(&self, doc: &Document) -> Result<BlockInfo> {
        let bad = |field: &str| Error::Speed {
            target: self.mongo.target().to_string(),
            message: format!(
                "collection `{}`, document _id {}: field `{field}` is missing or mistyped",
                self.mongo.collection_name(Entity::Blocks),
                doc.get("_id").map_or("?".into(), Bson::to_string)
            ),
        };
        Ok(BlockInfo {
            number: int(doc, "number").ok_or_else(|| bad("number"))?,
            hash: doc.get_str("hash").map_err(|_| bad("hash"))?.to_string(),
            parent_hash: doc
                .get_str("parent_hash")
                .map_err(|_| bad("parent_hash"))?
                .to_string(),
            ts_micros: doc
                .get_datetime("timestamp")
                .map_err(|_| bad("timestamp"))?
                .timestamp_millis()
                * 1000,
        })
    }

    async fn poll_stream(&mut self) -> Result<Arrivals> {
        let mut arrivals = Arrivals {
            resync: std::mem::take(&mut self.resync),
            ..Default::default()
        };
        let Mode::Stream { stream, token } = &mut self.mode else {
            unreachable!("called in stream mode")
        };
        if stream.is_none() {
            let t = token.clone();
            let opened = self.open_stream(t).await;
            let Mode::Stream { stream, .. } = &mut self.mode else {
                unreachable!()
            };
            *stream = Some(opened.map_err(|e| e.into_error(&self.mongo))?);
            arrivals.resync |= std::mem::take(&mut self.resync);
        }
        let blocks_coll = self.mongo.collection_name(Entity::Blocks).to_string();
        let mut events = 0;
        loop {
            let Mode::Stream { stream, token } = &mut self.mode else {
                unreachable!()
            };
            let s = stream.as_mut().expect("opened above");
            let next = s.next_if_any().await;
            match next {
                Ok(Some(ev)) => {
                    *token = s.resume_token();
                    events += 1;
                    let Some(doc) = ev.full_document else {
                        continue;
                    };
                    let coll = ev.ns.and_then(|ns| ns.coll).unwrap_or_default();
                    if coll == blocks_coll {
                        arrivals.blocks.push(self.block_of(&doc)?);
                    } else if let Ok(ts) = doc.get_datetime("block_timestamp") {
                        arrivals
                            .tx_minutes
                            .insert(minute_of(ts.timestamp_millis() * 1000));
                    }
                    if events >= MAX_EVENTS_PER_POLL {
                        break;
                    }
                }
                Ok(None) => {
                    *token = s.resume_token();
                    break;
                }
                Err(e) if is_history_lost(&e) => {
                    // The stream fell behind the server's history: start a
                    // new one and have the loop reload the days.
                    tracing::warn!("the change stream fell behind the server's history: starting a new stream and recomputing the followed days");
                    *stream = None;
                    *token = None;
                    arrivals.resync = true;
                    return Ok(arrivals);
                }
                Err(e) => {
                    if !s.is_alive() {
                        *stream = None;
                    }
                    return Err(self.mongo.classify(e, "following the change stream"));
                }
            }
        }
        Ok(arrivals)
    }

    async fn poll_numbers(&mut self) -> Result<Arrivals> {
        let mut arrivals = Arrivals::default();
        let from = self.highest.saturating_sub(REORG_WINDOW);
        let mut blocks = Vec::new();
        for batch in self
            .mongo
            .read_all(Entity::Blocks, doc! {"number": {"$gte": from}})
            .await?
        {
            blocks.extend(block_infos(&batch).expect("canonical schema"));
        }
        let txs = self.mongo.collection(Entity::Transactions).await?;
        let groups: Vec<Document> = async {
            txs.clone_with_type::<Document>()
                .aggregate([
                    doc! {"$match": {"block_number": {"$gte": from}}},
                    doc! {"$group": {"_id": "$block_hash", "number": {"$max": "$block_number"}, "n": {"$sum": 1}, "ts": {"$max": "$block_timestamp"}}},
                ])
                .await?
                .with_type::<Document>()
                .try_collect()
                .await
        }
        .await
        .map_err(|e| self.mongo.classify(e, "polling transactions"))?;
        let Mode::Poll { tx_counts, seen } = &mut self.mode else {
            unreachable!("called in poll mode")
        };
        for b in blocks {
            if seen.insert(b.hash.clone(), b.number).is_none() {
                arrivals.blocks.push(b);
            }
        }
        seen.retain(|_, n| *n >= from);
        for g in groups {
            let (Ok(hash), Some(n), Ok(ts)) =
                (g.get_str("_id"), int(&g, "n"), g.get_datetime("ts"))
            else {
                continue;
            };
            if tx_counts.insert(hash.to_string(), n) != Some(n) {
                arrivals
                    .tx_minutes
                    .insert(minute_of(ts.timestamp_millis() * 1000));
            }
        }
        // Blocks below the window drop out of the counts with their hashes.
        tx_counts.retain(|hash, _| seen.contains_key(hash));
        if arrivals.is_empty() {
            tokio::time::sleep(self.poll_interval).await;
        }
        Ok(arrivals)
    }
}

enum StreamError {
    /// The server has no change streams (a standalone server).
    Unsupported(String),
    Other(Error),
}

impl StreamError {
    fn into_error(self, mongo: &MongoLayer) -> Error {
        match self {
            StreamError::Unsupported(message) => Error::Speed {
                target: mongo.target().to_string(),
                message: format!(
                    "change streams are not available ({message}); set speed.mongodb.follow = \"poll\""
                ),
            },
            StreamError::Other(e) => e,
        }
    }
}

fn int(doc: &Document, field: &str) -> Option<i64> {
    match doc.get(field)? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) if d.fract() == 0.0 => Some(*d as i64),
        _ => None,
    }
}

#[async_trait]
impl Follower for MongoFollower {
    async fn latest_day(&mut self) -> Result<Option<NaiveDate>> {
        let blocks = self.mongo.collection(Entity::Blocks).await?;
        let newest = blocks
            .clone_with_type::<Document>()
            .find_one(doc! {})
            .sort(doc! {"timestamp": -1})
            .projection(doc! {"timestamp": 1})
            .await
            .map_err(|e| self.mongo.classify(e, "finding the newest block"))?;
        Ok(newest
            .and_then(|d| d.get_datetime("timestamp").ok().copied())
            .map(|t| crate::day::of_micros(t.timestamp_millis() * 1000)))
    }

    async fn load_day(&mut self, day: NaiveDate) -> Result<Vec<BlockInfo>> {
        self.mongo.ensure_indexes().await?;
        let (start, end) = crate::day::bounds(day);
        let mut out = Vec::new();
        for batch in self
            .mongo
            .read_all(
                Entity::Blocks,
                MongoLayer::window_filter(Entity::Blocks, start, end),
            )
            .await?
        {
            out.extend(block_infos(&batch).expect("canonical schema"));
        }
        Ok(out)
    }

    async fn poll(&mut self) -> Result<Arrivals> {
        match self.mode {
            Mode::Stream { .. } => self.poll_stream().await,
            Mode::Poll { .. } => self.poll_numbers().await,
        }
    }

    async fn read_minutes(&mut self, minutes: &BTreeSet<i64>) -> Result<MinuteRows> {
        let mut rows = MinuteRows::default();
        for (start, end) in minute_windows(minutes) {
            for entity in Entity::ALL {
                let filter = MongoLayer::window_filter(
                    entity,
                    crate::day::at_micros(start),
                    crate::day::at_micros(end),
                );
                let batches = self.mongo.read_all(entity, filter).await?;
                match entity {
                    Entity::Blocks => rows.blocks.extend(batches),
                    Entity::Transactions => rows.transactions.extend(batches),
                }
            }
        }
        Ok(rows)
    }

    fn set_current(&mut self, _day: NaiveDate, highest_block: i64) {
        self.highest = self.highest.max(highest_block);
    }

    fn position(&self) -> serde_json::Value {
        match &self.mode {
            Mode::Stream { token, .. } => serde_json::json!({
                "mode": "change_stream",
                "token": token,
            }),
            Mode::Poll { .. } => serde_json::json!({
                "mode": "poll",
                "last_block": self.highest,
            }),
        }
    }
}
