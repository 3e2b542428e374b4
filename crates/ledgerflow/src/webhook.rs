//! Webhook delivery: an HTTP POST of a JSON body, retried with exponential
//! backoff and jitter. SLA misses (`schedule::alert`) and failed checks use
//! it.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

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

/// Posts `body` to `url`, up to `attempts` tries.
pub async fn deliver(url: &str, body: &serde_json::Value, attempts: usize) -> Result<(), String> {
    let text = body.to_string();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .with_max_times(attempts.saturating_sub(1));
    (|| post(url.to_owned(), text.clone()))
        .retry(backoff)
        .notify(|e, after| tracing::warn!(url, "webhook failed ({e}); retrying in {after:?}"))
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
