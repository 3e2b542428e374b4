//! `[[jobs]]`: a scheduled job's settings, and the grammar of its values
//! (cron, time zone, day, SLA), checked at load. What the scheduler does
//! with them (ticks, deadlines, catch-up) is `schedule::job`.

use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Name used in the ledger (`trigger = schedule:<name>`), alerts and
    /// logs: letters, digits, `_` and `-`.
    pub name: String,
    /// When the job ticks: 5 fields (minute hour day-of-month month
    /// day-of-week) or 6 with seconds first; `@daily`-style aliases too.
    pub cron: String,
    /// IANA time zone the cron expression and the SLA are read in.
    /// Default: "UTC".
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The day a tick processes, from the tick's date in `timezone`:
    /// "today", "yesterday" or "today-N". Default: "yesterday".
    #[serde(default = "default_day")]
    pub day: String,
    /// Models to run, in dependency order. Default: all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Retries after a failed attempt (each one a ledger row). Default: 3.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Delay before the first retry; it doubles for each next one, and
    /// jitter adds up to as much again. Default: "1m".
    #[serde(default = "default_retry_delay", with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Longest delay between retries before jitter. Default: "30m".
    #[serde(default = "default_retry_max_delay", with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// When a tick must be done: "HH:MM" (the first such wall-clock time in
    /// `timezone` at or after the tick) or a duration after the tick
    /// ("2h"). A tick not done by then raises one alert. Default: none.
    #[serde(default)]
    pub sla: Option<String>,
    /// After downtime, run missed intervals too. Default: false (only the
    /// latest due interval runs; the rest are recorded as a gap).
    #[serde(default)]
    pub catchup: bool,
    /// With `catchup`, at most this many intervals run (the newest ones,
    /// oldest first). Default: 3.
    #[serde(default = "default_max_catchup")]
    pub max_catchup: u32,
    /// Ticks of this job running at once. Default: 1.
    #[serde(default = "default_max_active_runs")]
    pub max_active_runs: u32,
    /// After its day succeeds, a tick also re-runs the days this many
    /// before it whose inputs changed since their last success (a late
    /// reorg, a fork at a day's end the next day settled, a late
    /// micro-batch); unchanged ones are skipped by fingerprint. Default: 0.
    #[serde(default)]
    pub recheck_days: u32,
    /// Where this job's SLA alerts are POSTed (overrides
    /// `scheduler.webhook`).
    #[serde(default)]
    pub webhook: Option<String>,
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_day() -> String {
    "yesterday".into()
}
fn default_retries() -> u32 {
    3
}
fn default_retry_delay() -> Duration {
    Duration::from_secs(60)
}
fn default_retry_max_delay() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_max_catchup() -> u32 {
    3
}
fn default_max_active_runs() -> u32 {
    1
}

/// When a tick must be done.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sla {
    /// The first such wall-clock time at or after the tick.
    At(NaiveTime),
    /// This long after the tick.
    After(Duration),
}

/// A job's times, parsed from its settings.
#[derive(Debug, Clone)]
pub struct JobTimes {
    pub cron: Cron,
    pub tz: Tz,
    /// Days before the tick's date (0 = today).
    pub day_offset: i64,
    pub sla: Option<Sla>,
}

impl JobConfig {
    /// Checks every field and parses its times; the error names the key at
    /// fault.
    pub fn parse_times(&self) -> Result<JobTimes, (String, String)> {
        let bad = |key: &str, m: String| (key.to_string(), m);
        if self.name.is_empty()
            || self.name.len() > 63
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                "name",
                "must be 1-63 letters, digits, `_` or `-`".to_string(),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&self.cron)
            .map_err(|e| {
                bad(
                    "cron",
                    format!("`{}` is not a cron expression: {e}", self.cron),
                )
            })?;
        let tz: Tz = self.timezone.parse().map_err(|_| {
            bad(
                "timezone",
                format!(
                    "`{}` is not an IANA time zone (e.g. UTC, Europe/Berlin)",
                    self.timezone
                ),
            )
        })?;
        let day_offset = parse_day(&self.day).ok_or_else(|| {
            bad(
                "day",
                format!("`{}`: expected today, yesterday or today-N", self.day),
            )
        })?;
        let sla = self
            .sla
            .as_deref()
            .map(|s| {
                parse_sla(s).ok_or_else(|| {
                    bad(
                        "sla",
                        format!("`{s}`: expected HH:MM or a duration such as 2h"),
                    )
                })
            })
            .transpose()?;
        if self.retry_delay.is_zero() {
            return Err(bad("retry_delay", "must be above zero".into()));
        }
        if self.retry_max_delay < self.retry_delay {
            return Err(bad(
                "retry_max_delay",
                "must be at least retry_delay".into(),
            ));
        }
        if self.max_active_runs == 0 {
            return Err(bad("max_active_runs", "must be at least 1".into()));
        }
        if self.catchup && self.max_catchup == 0 {
            return Err(bad("max_catchup", "must be at least 1 with catchup".into()));
        }
        if let Some(url) = &self.webhook {
            crate::webhook::check_url(url).map_err(|m| bad("webhook", m))?;
        }
        Ok(JobTimes {
            cron,
            tz,
            day_offset,
            sla,
        })
    }
}

fn parse_day(s: &str) -> Option<i64> {
    match s.trim() {
        "today" => Some(0),
        "yesterday" => Some(1),
        other => {
            let n = other.strip_prefix("today-")?.trim().parse::<i64>().ok()?;
            (0..=366).contains(&n).then_some(n)
        }
    }
}

fn parse_sla(s: &str) -> Option<Sla> {
    let s = s.trim();
    if let Ok(t) = NaiveTime::parse_from_str(s, "%H:%M") {
        return Some(Sla::At(t));
    }
    humantime::parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .map(Sla::After)
}
