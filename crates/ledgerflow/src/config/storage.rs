//! `[batch]` and its `[batch.s3]`: where the day partitions live.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Root of the batch layer: a local path (relative to this file), a
    /// `file://` URL, `s3://bucket/prefix` (settings in `[batch.s3]`) or
    /// `hdfs://namenode:port/path` (builds with the `hdfs` feature). Tables
    /// live at `<url>/<table>/date=YYYY-MM-DD/*.parquet`. Overridden by
    /// `LEDGERFLOW_BATCH_URL`.
    pub url: String,
    /// File whose presence marks a day partition as committed; written last.
    /// Default: `_SUCCESS`.
    #[serde(default = "default_marker")]
    pub marker: String,
    /// Target rows per Parquet file when ledgerflow writes a partition.
    /// Default: 500000.
    #[serde(default = "default_rows_per_file")]
    pub rows_per_file: usize,
    /// S3 settings for every `s3://` URL of the project (the batch layer
    /// and an S3 landing dir).
    #[serde(default)]
    pub s3: S3Config,
}

/// How to reach an S3-compatible store. Credentials come from the standard
/// AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, web identity, instance metadata) unless set here.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:8333`,
    /// MinIO, SeaweedFS, R2...). Default: AWS (`AWS_ENDPOINT_URL`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region. Default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else
    /// `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint. Default: false.
    #[serde(default)]
    pub allow_http: bool,
    /// `path` (`endpoint/bucket/key`) or `virtual_hosted`
    /// (`bucket.endpoint/key`). Default: `path`.
    #[serde(default)]
    pub url_style: S3UrlStyle,
    /// Access key id; prefer the environment. Never printed.
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    /// Secret access key; prefer the environment. Never printed.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Longest a single request may take. Default: 30s.
    #[serde(default = "default_s3_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
    /// Longest wait for a connection. Default: 5s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: std::time::Duration,
    /// Retries of a failed request (with exponential backoff). Default: 3.
    #[serde(default = "default_s3_retries")]
    pub max_retries: usize,
    /// Longest time spent retrying one request. Default: 30s.
    #[serde(default = "default_s3_timeout", with = "humantime_serde")]
    pub retry_timeout: std::time::Duration,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            allow_http: false,
            url_style: S3UrlStyle::default(),
            access_key_id: None,
            secret_access_key: None,
            timeout: default_s3_timeout(),
            connect_timeout: default_connect_timeout(),
            max_retries: default_s3_retries(),
            retry_timeout: default_s3_timeout(),
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("url_style", &self.url_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum S3UrlStyle {
    #[default]
    Path,
    VirtualHosted,
}

pub(super) fn default_s3_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

pub(super) fn default_s3_retries() -> usize {
    3
}

pub(super) fn default_marker() -> String {
    "_SUCCESS".into()
}

pub(super) fn default_rows_per_file() -> usize {
    500_000
}
