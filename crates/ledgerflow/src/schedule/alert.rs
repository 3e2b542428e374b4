//! SLA alert delivery: an HTTP POST of a JSON body to a webhook, retried
//! with exponential backoff and jitter. The alert row (see `store`) is what
//! makes an alert fire once; delivery is recorded on it, and alerts not yet
//! delivered are retried when a scheduler starts.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde_json::json;

use super::store::Alert;

/// Webhooks must be http(s) URLs.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!(
            "scheme `{other}` is not supported (use http or https)"
        )),
    }
}

/// The JSON body posted for `alert`.
pub fn body(alert: &Alert) -> serde_json::Value {
    json!({
        "kind": "sla_miss",
        "job": alert.job,
        "day": alert.day,
        "tick": alert.tick,
        "deadline": alert.deadline,
        "state": alert.state,
        "raised_at": alert.raised_at,
        "message": format!(
            "ledgerflow job `{}` did not finish day {} by {} (state: {})",
            alert.job, alert.day, alert.deadline, alert.state
        ),
    })
}

/// Posts once; a non-2xx answer is an error.
async fn post(url: String, body: String) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build();
        let agent = ureq::Agent::new_with_config(config);
        agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("webhook worker: {e}"))?
}

/// Delivers `alert` to `url`, up to `attempts` tries.
pub async fn deliver(url: &str, alert: &Alert, attempts: usize) -> Result<(), String> {
    let text = body(alert).to_string();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .with_max_times(attempts.saturating_sub(1));
    (|| post(url.to_owned(), text.clone()))
        .retry(backoff)
        .notify(|e, after| tracing::warn!(url, "SLA webhook failed ({e}); retrying in {after:?}"))
        .await
        .map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_webhooks() {
        assert!(check_url("https://hooks.example.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:9/x").is_ok());
        assert!(check_url("ftp://x").unwrap_err().contains("ftp"));
        assert!(check_url("not a url").is_err());
    }
}
