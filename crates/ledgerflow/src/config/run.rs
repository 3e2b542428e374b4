//! `[run]` and `[ledger]`: how a day commits, how long an open run lives.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `model`: each model's day commits on its own as soon as it is
    /// written (a reader may briefly see one table's new day beside
    /// another's old one, and a failed model leaves its table's old day
    /// beside the others' new ones). `day`: a day's models commit in one
    /// transaction once all of them are computed, so readers see every
    /// table's new day or none; one failure leaves every table's old day.
    /// Default: `model`.
    #[serde(default)]
    pub commit: CommitMode,
    /// Evaluate the models' checks (declared and `checks/*.sql`) before
    /// each write. `false` skips them all (to measure their cost, or in an
    /// emergency). Default: true.
    #[serde(default = "default_true")]
    pub checks: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            commit: CommitMode::default(),
            checks: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitMode {
    #[default]
    Model,
    Day,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// How long an open (pending or running) ledger row lives without a
    /// heartbeat; its process renews it every third of this. Any
    /// invocation, on any host, closes rows past it as failed (abandoned).
    /// Default: 1m.
    #[serde(default = "default_ledger_lease", with = "humantime_serde")]
    pub lease: std::time::Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            lease: default_ledger_lease(),
        }
    }
}

pub(super) fn default_ledger_lease() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
