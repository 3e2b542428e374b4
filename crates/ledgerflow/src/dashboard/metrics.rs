//! `/metrics` in the Prometheus text format (OpenMetrics), computed from
//! the ledger, the schedule store, the ingest manifest and the realtime
//! checkpoint on each scrape: the values are the ledger's, whichever
//! process wrote them. No label carries a day.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::ledger::{RunRecord, RunState};

type Labels = Vec<(String, String)>;

/// Everything the exposition is made of, gathered by the caller.
#[derive(Debug, Default)]
pub struct Inputs {
    pub runs: Vec<RunRecord>,
    /// SLA alerts raised, per job.
    pub sla_misses: BTreeMap<String, u64>,
    /// Bytes of the archives in the ingest manifest.
    pub ingest_bytes: u64,
    /// Blocks the realtime tables trail the speed layer (none without a
    /// checkpoint).
    pub realtime_lag_blocks: Option<i64>,
    /// Seconds the realtime tables have been behind (zero when caught up;
    /// since their last commit otherwise).
    pub realtime_lag_seconds: Option<f64>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The exposition text.
pub fn render(inputs: &Inputs) -> String {
    let mut registry = Registry::default();
    let runs = Family::<Labels, Counter>::default();
    let rows = Family::<Labels, Counter>::default();
    let durations = Family::<Labels, Histogram>::new_with_constructor(|| {
        Histogram::new(exponential_buckets(0.05, 2.0, 14))
    });
    let last_success = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let ingest_rows = Family::<Labels, Counter>::default();
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    for r in &inputs.runs {
        if let Some(table) = r.model.strip_prefix("ingest:merge:") {
            let outcome = match r.state {
                RunState::Success => "written",
                RunState::Failed => "failed",
                _ => continue,
            };
            ingest_rows
                .get_or_create(&labels(&[("table", table), ("outcome", outcome)]))
                .inc_by(r.rows_written.unwrap_or(0).max(0) as u64);
            continue;
        }
        if r.model.starts_with("ingest:") {
            continue;
        }
        runs.get_or_create(&labels(&[("model", &r.model), ("state", r.state.as_str())]))
            .inc();
        if r.state == RunState::Success {
            rows.get_or_create(&labels(&[("model", &r.model)]))
                .inc_by(r.rows_written.unwrap_or(0).max(0) as u64);
            if let Some(at) = r.finished_at {
                let t = at.timestamp_millis() as f64 / 1000.0;
                let e = last.entry(r.model.as_str()).or_insert(t);
                *e = e.max(t);
            }
        }
        if let (Some(s), Some(f)) = (r.started_at, r.finished_at) {
            durations
                .get_or_create(&labels(&[("model", &r.model)]))
                .observe((f - s).num_milliseconds().max(0) as f64 / 1000.0);
        }
    }
    for (model, t) in last {
        last_success
            .get_or_create(&labels(&[("model", model)]))
            .set(t);
    }
    let sla = Family::<Labels, Counter>::default();
    for (job, n) in &inputs.sla_misses {
        sla.get_or_create(&labels(&[("job", job)])).inc_by(*n);
    }
    let ingest_bytes = Counter::<u64>::default();
    ingest_bytes.inc_by(inputs.ingest_bytes);
    registry.register(
        "ledgerflow_runs",
        "Ledger rows by model and final or current state",
        runs,
    );
    registry.register(
        "ledgerflow_run_duration_seconds",
        "Duration of each run that has both a start and an end",
        durations,
    );
    registry.register(
        "ledgerflow_rows_written",
        "Rows written by successful runs",
        rows,
    );
    registry.register(
        "ledgerflow_last_success_timestamp_seconds",
        "When the model's latest successful run finished (Unix seconds)",
        last_success,
    );
    registry.register(
        "ledgerflow_sla_misses",
        "SLA alerts raised per scheduled job",
        sla,
    );
    registry.register(
        "ledgerflow_ingest_bytes",
        "Bytes of the partner archives in the ingest manifest",
        ingest_bytes,
    );
    registry.register(
        "ledgerflow_ingest_rows",
        "Partner rows merged, by table and outcome",
        ingest_rows,
    );
    if let Some(lag) = inputs.realtime_lag_blocks {
        let blocks = Gauge::<i64>::default();
        blocks.set(lag);
        registry.register(
            "ledgerflow_realtime_lag_blocks",
            "Blocks the realtime tables trail the speed layer's newest block",
            blocks,
        );
    }
    if let Some(lag) = inputs.realtime_lag_seconds {
        let seconds = Gauge::<f64, AtomicU64>::default();
        seconds.set(lag);
        registry.register(
            "ledgerflow_realtime_lag_seconds",
            "Seconds the realtime tables have trailed the speed layer: 0 when they hold its newest block, else the time since their last commit",
            seconds,
        );
    }
    registry.register(
        "ledgerflow_build",
        "The running ledgerflow",
        Info::new(labels(&[("version", env!("CARGO_PKG_VERSION"))])),
    );
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone, Utc};

    /// Every metric the examples (alert rules, Grafana dashboard) use is
    /// one the exposition has.
    #[test]
    fn the_examples_use_metrics_that_exist() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let at = |s: i64| Some(Utc.timestamp_opt(1_790_000_000 + s, 0).unwrap());
        let run = |model: &str, state| RunRecord {
            id: 1,
            model: model.into(),
            day,
            state,
            attempt: 1,
            trigger: "run".into(),
            started_at: at(0),
            finished_at: at(3),
            rows_written: Some(10),
            fingerprint: None,
            source_layers: None,
            error: None,
            owner: None,
        };
        let text = render(&Inputs {
            runs: vec![
                run("m", RunState::Success),
                run("m", RunState::Failed),
                run("ingest:merge:transfers", RunState::Success),
                run("ingest:merge:transfers", RunState::Failed),
            ],
            sla_misses: BTreeMap::from([("daily".to_string(), 2)]),
            ingest_bytes: 5,
            realtime_lag_blocks: Some(3),
            realtime_lag_seconds: Some(36.5),
        });
        assert!(
            text.contains("ledgerflow_runs_total{model=\"m\",state=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ledgerflow_realtime_lag_seconds 36.5"),
            "{text}"
        );
        assert!(
            text.contains("ledgerflow_sla_misses_total{job=\"daily\"} 2"),
            "{text}"
        );
        let exposed: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        for file in [
            include_str!("../../../../examples/prometheus/ledgerflow-alerts.yml"),
            include_str!("../../../../examples/grafana/ledgerflow-dashboard.json"),
        ] {
            for (i, _) in file.match_indices("ledgerflow_") {
                let name: String = file[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name == "ledgerflow_dag" {
                    continue;
                }
                assert!(
                    exposed.contains(&name.as_str()),
                    "{name} is not exposed:\n{text}"
                );
            }
        }
    }
}
