//! `[serving]` and `[serve]`: the serving database and the web page.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingConfig {
    /// `postgres://user@host:port/db` or `sqlite://PATH` (relative to this
    /// file). Overridden by `LEDGERFLOW_SERVING_URL`.
    pub url: SecretUrl,
    /// PostgreSQL schema for metric tables and the ledger. Default: `public`.
    #[serde(default = "default_schema")]
    pub schema: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address `serve` listens on. Default: `127.0.0.1:8080`. Any other
    /// than a loopback address needs `token`.
    #[serde(default = "default_serve_listen")]
    pub listen: String,
    /// Bearer token (or the login page's cookie) every request must carry.
    /// Default: none (loopback only). Env: `LEDGERFLOW_SERVE_TOKEN`.
    #[serde(default)]
    pub token: Option<Secret>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: default_serve_listen(),
            token: None,
        }
    }
}

pub(super) fn default_serve_listen() -> String {
    "127.0.0.1:8080".into()
}

pub(super) fn default_schema() -> String {
    "public".into()
}
