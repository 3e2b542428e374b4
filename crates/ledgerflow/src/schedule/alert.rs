//! SLA alerts: the JSON body of a missed deadline, posted through
//! [`crate::webhook`]. The alert row (see `store`) is what makes an alert
//! fire once; delivery is recorded on it, and alerts not yet delivered are
//! retried when a scheduler starts.

use serde_json::json;

use super::store::Alert;

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

/// Delivers `alert` to `url`, up to `attempts` tries.
pub async fn deliver(url: &str, alert: &Alert, attempts: usize) -> Result<(), String> {
    crate::webhook::deliver(url, &body(alert), attempts).await
}
