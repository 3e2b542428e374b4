//! `ledgerflow status`: per job the next tick, what runs, the last outcome,
//! SLA misses and gaps; per model its last successful day and the lag
//! behind the day the job should have reached; the latest checks that did
//! not pass. Read-only.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::clock::Clock;
use super::job::Job;
use super::store::{Alert, GapRecord, ScheduleStore, Tick, TickState};
use crate::checks::{CheckFilter, CheckResult};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ledger::{RunFilter, RunState};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub now: DateTime<Utc>,
    /// The leading scheduler (`host:pid`), if one runs.
    pub leader: Option<String>,
    pub jobs: Vec<JobStatus>,
    /// The latest check results that did not pass (newest first).
    pub failed_checks: Vec<CheckResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job: String,
    pub cron: String,
    pub timezone: String,
    pub next_tick: Option<DateTime<Utc>>,
    pub next_day: Option<NaiveDate>,
    /// The day the latest due tick processes: where the job should be.
    pub expected_day: Option<NaiveDate>,
    pub running: Vec<Tick>,
    /// Ticks waiting to run: for a free slot or their retry time.
    pub due: Vec<Tick>,
    pub last_tick: Option<Tick>,
    pub last_success: Option<Tick>,
    pub sla_misses: Vec<Alert>,
    /// Intervals not run after downtime (newest first).
    pub gaps: Vec<GapRecord>,
    pub models: Vec<ModelStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    pub model: String,
    pub last_success_day: Option<NaiveDate>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Days between `expected_day` and `last_success_day` (0: up to date).
    pub lag_days: Option<i64>,
}

pub async fn status(config: &Config) -> Result<Status> {
    let clock = Clock::from_env()?;
    let now = clock.now();
    let models = crate::models::load_dir(&config.models_dir())?;
    let sink = crate::sinks::open(config).await?;
    let store = ScheduleStore::open(config).await?;
    let leader = super::leader::current(config).await?;
    let mut jobs = Vec::new();
    for cfg in &config.jobs {
        let job = Job::parse(cfg.clone())
            .map_err(|(key, m)| Error::Usage(format!("job `{}` setting `{key}`: {m}", cfg.name)))?;
        let ticks = store.ticks(job.name(), 500).await?;
        let next_tick = job.next_after(now);
        let expected_day = job.latest_at_or_before(now).map(|t| job.day_of(t));
        let names: Vec<String> = if cfg.models.is_empty() {
            models.iter().map(|m| m.name.clone()).collect()
        } else {
            cfg.models.clone()
        };
        let mut model_status = Vec::new();
        for model in names {
            let successes = sink
                .ledger_list(&RunFilter {
                    model: Some(model.clone()),
                    state: Some(RunState::Success),
                    limit: Some(1000),
                    ..Default::default()
                })
                .await?;
            let best = successes.iter().max_by_key(|r| (r.day, r.finished_at));
            model_status.push(ModelStatus {
                model,
                last_success_day: best.map(|r| r.day),
                last_success_at: best.and_then(|r| r.finished_at),
                lag_days: match (expected_day, best) {
                    (Some(e), Some(b)) => Some((e - b.day).num_days().max(0)),
                    _ => None,
                },
            });
        }
        jobs.push(JobStatus {
            job: job.name().to_owned(),
            cron: cfg.cron.clone(),
            timezone: cfg.timezone.clone(),
            next_tick,
            next_day: next_tick.map(|t| job.day_of(t)),
            expected_day,
            running: ticks
                .iter()
                .filter(|t| t.state == TickState::Running)
                .cloned()
                .collect(),
            due: ticks
                .iter()
                .filter(|t| t.state == TickState::Due)
                .cloned()
                .collect(),
            last_tick: ticks.first().cloned(),
            last_success: ticks
                .iter()
                .find(|t| t.state == TickState::Success)
                .cloned(),
            sla_misses: store.alerts(Some(job.name()), 50).await?,
            gaps: store.gaps(job.name(), 20).await?,
            models: model_status,
        });
    }
    let failed_checks = sink
        .checks_list(&CheckFilter {
            failed: true,
            limit: Some(10),
            ..Default::default()
        })
        .await?;
    Ok(Status {
        now,
        leader,
        jobs,
        failed_checks,
    })
}
