//! Serving backends by URL scheme. A backend is one module implementing
//! [`Backend`] (its sink, schedule store and leader lock) plus one line in
//! [`BACKENDS`]; nothing else in the library or the CLI names a backend.

use std::sync::Arc;

use async_trait::async_trait;

use super::coordination::{LeaderLock, RecordStore};
use super::Sink;
use crate::config::Config;
use crate::error::Result;

/// Who else holds the scheduler's lead, described.
pub type Held = String;

/// One kind of serving database.
///
/// An implementor provides the writer and ledger ([`Sink`]) and the
/// scheduler's coordination ([`RecordStore`], [`LeaderLock`]), each opened
/// from the project's configuration.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The URL schemes it serves (before `://`).
    fn schemes(&self) -> &'static [&'static str];

    /// Checks `serving.url` without touching the network or the disk;
    /// the message says what is wrong.
    fn check_url(&self, url: &str) -> std::result::Result<(), String>;

    /// Connects the writer and ledger (not prepared: see
    /// [`super::open`]).
    async fn open(&self, config: &Config) -> Result<Arc<dyn Sink>>;

    /// A schedule store on a session of its own.
    async fn records(&self, config: &Config) -> Result<Arc<dyn RecordStore>>;

    /// Takes the scheduler's lead, or says who holds it.
    async fn try_lead(
        &self,
        config: &Config,
    ) -> Result<std::result::Result<Box<dyn LeaderLock>, Held>>;

    /// Who leads, if anyone, looked at without taking the lock.
    async fn leader(&self, config: &Config) -> Result<Option<Held>>;
}

/// Every backend, one line each.
static BACKENDS: &[&dyn Backend] = &[&super::postgres::Postgres, &super::sqlite::Sqlite];

/// The backend `serving.url` names, its URL checked.
pub fn backend(config: &Config) -> Result<&'static dyn Backend> {
    let url = config.serving.url.expose().trim();
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    let Some(found) = BACKENDS
        .iter()
        .find(|b| scheme.is_some_and(|s| b.schemes().contains(&s)))
    else {
        let schemes: Vec<String> = BACKENDS
            .iter()
            .flat_map(|b| b.schemes())
            .map(|s| format!("{s}://"))
            .collect();
        return Err(config.invalid(
            "serving.url",
            format!("must start with {}", schemes.join(", ")),
        ));
    };
    found
        .check_url(url)
        .map_err(|m| config.invalid("serving.url", m))?;
    Ok(*found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> Config {
        let mut c = crate::project::test_config(std::path::Path::new("/p"), "sqlite://x.db");
        c.serving.url = url.to_owned().into();
        c
    }

    #[test]
    fn a_url_finds_its_backend_or_names_the_key() {
        for url in [
            "postgres://u:p@h:5432/db",
            "postgresql://h/db",
            "sqlite://serving.db",
        ] {
            assert!(backend(&config(url)).is_ok(), "{url}");
        }
        for (url, says) in [
            (
                "mysql://x",
                "must start with postgres://, postgresql://, sqlite://",
            ),
            ("serving.db", "must start with"),
            ("sqlite://", "sqlite:// needs a file path"),
            ("postgres://u:p@h:notaport/db", "not a valid PostgreSQL URL"),
        ] {
            let err = backend(&config(url)).err().expect(url).to_string();
            assert!(
                err.contains("serving.url") && err.contains(says),
                "{url}: {err}"
            );
            assert!(!err.contains(":p@"), "no password: {err}");
        }
    }
}
