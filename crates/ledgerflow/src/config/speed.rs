//! `[speed]`: the landing dir or MongoDB, retention, following.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedConfig {
    /// The speed layer: either a landing directory of micro-batch Parquet
    /// files (`<url>/<table>/date=YYYY-MM-DD/<seq>.parquet`: a local path
    /// relative to this file, or `s3://bucket/prefix` with the settings of
    /// `[batch.s3]`), or a MongoDB connection string
    /// (`mongodb://host:port/?directConnection=true`, `mongodb+srv://..`).
    /// Overridden by `LEDGERFLOW_SPEED_URL`.
    pub url: SecretUrl,
    /// How long the speed layer keeps data (e.g. "48h"). A day that starts
    /// before now - ttl and is not committed in the batch layer is an error,
    /// never an empty result. Default: the TTL index of the blocks
    /// collection (MongoDB), none for a landing dir.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<std::time::Duration>,
    /// What a run does when the speed layer cannot be reached: `fail`
    /// (exit 1) or `skip` (ledger state skipped with the reason, exit 99;
    /// repair later with backfill). Default: `fail`.
    #[serde(default)]
    pub on_unavailable: UnavailablePolicy,
    /// How often `realtime` looks for new data when polling (landing dir,
    /// or MongoDB in `poll` mode), and the change stream's longest wait.
    /// Default: 100ms.
    #[serde(default = "default_speed_poll", with = "humantime_serde")]
    pub poll_interval: std::time::Duration,
    /// Confirmations (blocks above a day's last canonical block, the next
    /// day's included) before `compact` may freeze the day into the batch
    /// layer: a reorg shallower than this cannot change a compacted day.
    /// Default: 64.
    #[serde(default = "default_finality_blocks")]
    pub finality_blocks: i64,
    /// Freshness: blocks the realtime tables may trail the speed layer's
    /// newest block before `check` fails them (~12 s a block on mainnet).
    /// Default: 25.
    #[serde(default = "default_max_lag_blocks")]
    pub max_lag_blocks: i64,
    /// `[speed.mongodb]`: the settings of a MongoDB speed layer (refused
    /// beside a landing dir). Default: every key's default.
    #[serde(default)]
    pub mongodb: Option<MongoSettings>,
}

/// `[speed.mongodb]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSettings {
    /// MongoDB database holding the speed layer. Default: `ledger`.
    #[serde(default = "default_mongo_database")]
    pub database: String,
    /// MongoDB collection of blocks (time field `timestamp`, a BSON date).
    /// Default: `blocks`.
    #[serde(default = "default_blocks_collection")]
    pub blocks_collection: String,
    /// MongoDB collection of transactions (time field `block_timestamp`, a
    /// BSON date; `value` as Decimal128 or a decimal string). Default:
    /// `transactions`.
    #[serde(default = "default_transactions_collection")]
    pub transactions_collection: String,
    /// How long to wait for a MongoDB server before it counts as
    /// unavailable. Default: 5s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: std::time::Duration,
    /// Create the time-field indexes if missing (else only warn that they
    /// are missing). Default: true.
    #[serde(default = "default_true")]
    pub create_indexes: bool,
    /// How `realtime` follows MongoDB: `change_stream` (resume token),
    /// `poll` (by block number, for servers without change streams), or
    /// `auto` (change streams if the server has them). Default: `auto`.
    #[serde(default)]
    pub follow: FollowMode,
}

impl Default for MongoSettings {
    fn default() -> Self {
        MongoSettings {
            database: default_mongo_database(),
            blocks_collection: default_blocks_collection(),
            transactions_collection: default_transactions_collection(),
            connect_timeout: default_connect_timeout(),
            create_indexes: true,
            follow: FollowMode::default(),
        }
    }
}

pub(super) fn default_finality_blocks() -> i64 {
    64
}

pub(super) fn default_max_lag_blocks() -> i64 {
    25
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailablePolicy {
    #[default]
    Fail,
    Skip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowMode {
    #[default]
    Auto,
    ChangeStream,
    Poll,
}

/// Where the speed layer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeedTarget {
    Landing {
        location: Location,
    },
    Mongo {
        uri: SecretUrl,
        settings: MongoSettings,
    },
}

pub(super) fn default_mongo_database() -> String {
    "ledger".into()
}

pub(super) fn default_blocks_collection() -> String {
    "blocks".into()
}

pub(super) fn default_transactions_collection() -> String {
    "transactions".into()
}

pub(super) fn default_connect_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

pub(super) fn default_speed_poll() -> std::time::Duration {
    std::time::Duration::from_millis(100)
}
