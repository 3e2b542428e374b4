//! The history of check results (`ledgerflow_checks`) and the alerts they
//! raise: shared by the runner's checks and ingest's row checks, which the
//! CLI records (ingest imports no sink).

use chrono::NaiveDate;

use crate::checks::{CheckFilter, CheckResult, CheckStatus};
use crate::config::Config;
use crate::error::Result;
use crate::sinks::Sink;

/// Records `results` in the history and alerts each one that did not
/// pass and whose check had not failed on its (model, day) before: an
/// alert goes out once per check and day, whichever path (a run,
/// `check`, the scheduler's reconciliation, an ingest) found it first.
pub async fn record_checks(
    sink: &dyn Sink,
    config: &Config,
    results: &[CheckResult],
) -> Result<()> {
    let alert = unalerted(sink, config, results).await?;
    sink.checks_record(results).await?;
    alert_each(config, &alert).await;
    Ok(())
}

async fn unalerted(
    sink: &dyn Sink,
    config: &Config,
    results: &[CheckResult],
) -> Result<Vec<CheckResult>> {
    if config.scheduler.webhook.is_none() {
        return Ok(Vec::new());
    }
    let mut fresh = Vec::new();
    let mut seen: Vec<(&str, NaiveDate, Vec<String>)> = Vec::new();
    for r in results.iter().filter(|r| r.status != CheckStatus::Pass) {
        let known = match seen
            .iter()
            .position(|(m, d, _)| *m == r.model && *d == r.day)
        {
            Some(i) => i,
            None => {
                let earlier = sink
                    .checks_list(&CheckFilter {
                        model: Some(r.model.clone()),
                        from: Some(r.day),
                        to: Some(r.day),
                        failed: true,
                        limit: None,
                    })
                    .await?;
                let checks = earlier.into_iter().map(|e| e.check).collect();
                seen.push((&r.model, r.day, checks));
                seen.len() - 1
            }
        };
        if !seen[known].2.contains(&r.check) {
            seen[known].2.push(r.check.clone());
            fresh.push(r.clone());
        }
    }
    Ok(fresh)
}

/// Posts each result to `scheduler.webhook`; a failed delivery is
/// logged (the check's history keeps the result).
async fn alert_each(config: &Config, results: &[CheckResult]) {
    let Some(url) = &config.scheduler.webhook else {
        return;
    };
    for r in results {
        let body = serde_json::json!({
            "kind": "check_failed",
            "model": r.model,
            "day": r.day,
            "check": r.check,
            "severity": r.severity,
            "status": r.status,
            "failing_rows": r.failing_rows,
            "observed": r.observed,
            "expected": r.expected,
            "sample": r.sample,
            "message": format!("ledgerflow {} for {}: {}", r.model, r.day, r.summary()),
        });
        let attempts = config.scheduler.webhook_attempts;
        if let Err(e) = crate::webhook::deliver(url, &body, attempts).await {
            tracing::warn!(model = %r.model, day = %r.day, check = %r.check, "check alert not delivered: {e}");
        }
    }
}
