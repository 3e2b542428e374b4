//! `[scheduler]`: polling, shutdown, the lead, alerts.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How often the leader looks for due work. Default: "1s".
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: std::time::Duration,
    /// On SIGTERM/SIGINT, how long running runs may finish before they are
    /// cancelled (rolled back). Default: "30s".
    #[serde(default = "default_grace_period", with = "humantime_serde")]
    pub grace_period: std::time::Duration,
    /// How soon a dead leader's lock is released when its host vanishes
    /// without closing the connection (TCP keepalive on the lock session),
    /// and how often a standby retries. Default: "10s".
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: std::time::Duration,
    /// URL that SLA alerts (JSON: job, day, deadline, state) and failed
    /// checks (model, day, check, status) are POSTed to. A job's own
    /// `webhook` overrides it for its SLA. Default: none (log + ledger only).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Delivery attempts per alert (exponential backoff with jitter).
    /// Default: 5.
    #[serde(default = "default_webhook_attempts")]
    pub webhook_attempts: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            poll_interval: default_poll_interval(),
            grace_period: default_grace_period(),
            lease: default_lease(),
            webhook: None,
            webhook_attempts: default_webhook_attempts(),
        }
    }
}

pub(super) fn default_poll_interval() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

pub(super) fn default_grace_period() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

pub(super) fn default_lease() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

pub(super) fn default_webhook_attempts() -> usize {
    5
}
