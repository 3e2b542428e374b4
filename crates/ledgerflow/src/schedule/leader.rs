//! One scheduler leads per serving database: the backend's lock (see
//! [`crate::sinks::coordination::LeaderLock`]), held for as long as this
//! value lives.

use crate::config::Config;
use crate::error::Result;
use crate::sinks::coordination::LeaderLock;

pub struct Leader(Box<dyn LeaderLock>);

impl Leader {
    /// Takes the lead, or returns who holds it.
    pub async fn try_acquire(config: &Config) -> Result<std::result::Result<Leader, String>> {
        let backend = crate::sinks::registry::backend(config)?;
        Ok(backend.try_lead(config).await?.map(Leader))
    }

    /// Whether the lead is still ours: the lock's session is alive.
    pub async fn still_held(&self) -> bool {
        self.0.still_held().await
    }

    pub fn describe(&self) -> String {
        self.0.describe()
    }
}

/// Who leads, if anyone (for `status`). Looks without taking the lock, so
/// it never makes a starting scheduler think another one leads.
pub async fn current(config: &Config) -> Result<Option<String>> {
    crate::sinks::registry::backend(config)?
        .leader(config)
        .await
}
