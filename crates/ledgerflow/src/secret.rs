//! Settings that may hold a password: never in `Debug` (so never in a
//! logged config, an error's debug form or a panic message). The raw value
//! is taken with `expose`, only where a connection is made.

use std::fmt;

use serde::Deserialize;

/// A setting that must never be printed: `Debug` shows `***`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A connection URL (`postgres://user:pw@host/db`, `mongodb://...`):
/// `Debug` and `Display` show it with the password as `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL as written, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `scheme://user:pw@host/...` -> `scheme://user:***@host/...`; text that
/// does not parse as a URL is kept only up to its scheme.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => match url.split_once("://") {
            Some((scheme, rest)) if rest.contains('@') => format!("{scheme}://***"),
            _ => url.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let u = SecretUrl::new("postgres://app:hunter2@db:5432/metrics");
        assert_eq!(format!("{u:?}"), "\"postgres://app:***@db:5432/metrics\"");
        assert_eq!(u.to_string(), "postgres://app:***@db:5432/metrics");
        assert_eq!(u.expose(), "postgres://app:hunter2@db:5432/metrics");
        let m = SecretUrl::new("mongodb://u:hunter2@a:1,b:2/?replicaSet=rs");
        assert!(!format!("{m:?}").contains("hunter2"), "{m:?}");
        assert_eq!(
            SecretUrl::new("sqlite://serving.db").to_string(),
            "sqlite://serving.db"
        );
        assert!(!format!("{:?}", Secret("hunter2".into())).contains("hunter2"));
    }
}
