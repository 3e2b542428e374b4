//! Where a layer's files live, parsed from a `*.url` setting: a local
//! directory, an S3 bucket and prefix, or an HDFS path. Parsing only; the
//! store for a location is built in `catalog::store`.
//!
//! A location prints as `s3://bucket/prefix` (never user info, a query or a
//! fragment), so it can go into logs, errors and the ledger as it is.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An absolute local directory.
    Local(PathBuf),
    /// `s3://bucket/prefix`: the prefix has no leading or trailing `/`
    /// (empty for the bucket's root).
    S3 { bucket: String, prefix: String },
    /// `hdfs://namenode:port/path` (`viewfs://` too): `authority` is
    /// `scheme://host:port`, `path` has no leading or trailing `/`.
    Hdfs { authority: String, path: String },
}

impl Location {
    /// Parses a setting's value. Plain paths and `file://` URLs resolve
    /// against `base` (the config file's directory). The error never
    /// repeats the value: it may hold credentials.
    pub fn parse(value: &str, base: &Path) -> Result<Location, String> {
        let value = value.trim();
        let Some((scheme, rest)) = value.split_once("://") else {
            return Ok(Location::Local(resolve(base, value)));
        };
        match scheme {
            "file" => Ok(Location::Local(resolve(base, rest))),
            "s3" | "s3a" => {
                let (bucket, prefix) = authority_and_path(rest, "s3://bucket/prefix")?;
                // S3's bucket naming rules, enough to catch a typo early.
                if bucket.len() < 3
                    || bucket.len() > 63
                    || !bucket.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    })
                {
                    return Err(format!(
                        "`{bucket}` is not a valid S3 bucket name (3-63 characters: lowercase letters, digits, `-`, `.`)"
                    ));
                }
                Ok(Location::S3 { bucket, prefix })
            }
            "hdfs" | "viewfs" => {
                let (host, path) = authority_and_path(rest, "hdfs://namenode:port/path")?;
                Ok(Location::Hdfs {
                    authority: format!("{scheme}://{host}"),
                    path,
                })
            }
            other => Err(format!(
                "scheme `{other}://` is not supported (use a local path, file://, s3:// or hdfs://)"
            )),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Location::Local(_))
    }

    /// The URL the query engine reads objects of this location under
    /// (`scheme://authority`), with no path.
    pub fn base_url(&self) -> String {
        match self {
            Location::Local(_) => "file://".to_string(),
            Location::S3 { bucket, .. } => format!("s3://{bucket}"),
            Location::Hdfs { authority, .. } => authority.clone(),
        }
    }

    /// The location's path within its store (no leading `/`).
    pub fn prefix(&self) -> String {
        match self {
            Location::Local(root) => root.display().to_string().trim_matches('/').to_string(),
            Location::S3 { prefix, .. } => prefix.clone(),
            Location::Hdfs { path, .. } => path.clone(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(root) => write!(f, "{}", root.display()),
            _ => {
                let prefix = self.prefix();
                if prefix.is_empty() {
                    write!(f, "{}", self.base_url())
                } else {
                    write!(f, "{}/{prefix}", self.base_url())
                }
            }
        }
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Splits `host/path...` (what follows `scheme://`), refusing user info
/// (credentials belong in the environment), queries and fragments.
fn authority_and_path(rest: &str, shape: &str) -> Result<(String, String), String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(
            "credentials in the URL are not accepted: set them in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or the store's section"
                .into(),
        );
    }
    if path.contains('?') || path.contains('#') {
        return Err(format!("expected {shape}, without `?` or `#`"));
    }
    if authority.is_empty() {
        return Err(format!("expected {shape}"));
    }
    let path = path.trim_matches('/');
    if path.split('/').any(|part| part == "." || part == "..") {
        return Err(format!("expected {shape}, without `.` or `..` parts"));
    }
    Ok((authority.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<Location, String> {
        Location::parse(v, Path::new("/p"))
    }

    #[test]
    fn schemes() {
        assert_eq!(parse("data").unwrap(), Location::Local("/p/data".into()));
        assert_eq!(
            parse("file:///abs").unwrap(),
            Location::Local("/abs".into())
        );
        assert_eq!(
            parse("s3://my-bucket/ledger/batch/").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "ledger/batch".into()
            }
        );
        let root = parse("s3://my-bucket").unwrap();
        assert_eq!(root.to_string(), "s3://my-bucket");
        let hdfs = parse("hdfs://nn:9000/warehouse/ledger").unwrap();
        assert_eq!(hdfs.to_string(), "hdfs://nn:9000/warehouse/ledger");
        assert_eq!(hdfs.base_url(), "hdfs://nn:9000");
    }

    #[test]
    fn refusals_never_echo_secrets() {
        let err = parse("s3://AKIAXXXX:sekrit@bucket/p").unwrap_err();
        assert!(
            !err.contains("sekrit") && err.contains("credentials"),
            "{err}"
        );
        assert!(parse("s3://Bad_Bucket/p").unwrap_err().contains("bucket"));
        assert!(parse("s3:///p").is_err());
        assert!(parse("s3://bucket/a/../b").is_err());
        assert!(parse("gs://bucket/p").unwrap_err().contains("gs://"));
        assert!(parse("hdfs://u:pw@nn:9000/p")
            .unwrap_err()
            .contains("credentials"));
    }
}
