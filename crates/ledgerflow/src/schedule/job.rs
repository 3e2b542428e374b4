//! A scheduled job (`[[jobs]]`): when it ticks (cron in a time zone), which
//! day a tick processes, how it retries, its SLA deadline, and which ticks
//! run after downtime (catch-up). Everything here is pure time arithmetic,
//! tested without a clock.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Deserialize, Serialize};

pub use crate::config::{JobConfig, Sla};

/// Ticks that were due but will not run (downtime without catch-up, or
/// beyond `max_catchup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub first_tick: DateTime<Utc>,
    pub last_tick: DateTime<Utc>,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// How many ticks were skipped (a lower bound when `capped`).
    pub ticks: u64,
    pub capped: bool,
}

/// What the scheduler does about the ticks due since the last one it saw.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TickPlan {
    /// Ticks to run, oldest first.
    pub run: Vec<DateTime<Utc>>,
    pub gap: Option<Gap>,
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    pub config: JobConfig,
    cron: Cron,
    tz: Tz,
    day_offset: i64,
    sla: Option<Sla>,
}

/// Occurrences counted one by one beyond this many are not enumerated (a
/// per-second cron after a month of downtime).
const MAX_ENUMERATED: u64 = 1_000_000;

impl Job {
    pub fn parse(config: JobConfig) -> Result<Job, (String, String)> {
        let times = config.parse_times()?;
        Ok(Job {
            config,
            cron: times.cron,
            tz: times.tz,
            day_offset: times.day_offset,
            sla: times.sla,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The day a tick processes.
    pub fn day_of(&self, tick: DateTime<Utc>) -> NaiveDate {
        tick.with_timezone(&self.tz).date_naive() - chrono::TimeDelta::days(self.day_offset)
    }

    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// When a tick must be done, if the job has an SLA.
    pub fn deadline(&self, tick: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.sla? {
            Sla::After(d) => Some(tick + d),
            Sla::At(time) => {
                let local = tick.with_timezone(&self.tz);
                let mut date = local.date_naive();
                for _ in 0..3 {
                    // A time inside a DST gap does not exist that day: the
                    // deadline moves an hour later.
                    let at = self
                        .tz
                        .from_local_datetime(&date.and_time(time))
                        .earliest()
                        .or_else(|| {
                            self.tz
                                .from_local_datetime(
                                    &(date.and_time(time) + chrono::TimeDelta::hours(1)),
                                )
                                .earliest()
                        })?;
                    if at >= local {
                        return Some(at.with_timezone(&Utc));
                    }
                    date = date.succ_opt()?;
                }
                None
            }
        }
    }

    /// Which ticks in `(last, now]` run. Without a `last` (a first start)
    /// only the latest due tick runs: a new scheduler does not replay
    /// history. Without catch-up only the latest runs; with it the newest
    /// `max_catchup`; the others form the gap.
    pub fn plan(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> TickPlan {
        let Some(last) = last else {
            return TickPlan {
                run: self.latest_at_or_before(now).into_iter().collect(),
                gap: None,
            };
        };
        let keep = if self.config.catchup {
            self.config.max_catchup as usize
        } else {
            1
        };
        let mut kept: std::collections::VecDeque<DateTime<Utc>> = Default::default();
        let mut first: Option<DateTime<Utc>> = None;
        let mut dropped_last: Option<DateTime<Utc>> = None;
        let mut count: u64 = 0;
        let mut capped = false;
        let mut t = last;
        while let Some(next) = self.next_after(t).filter(|n| *n <= now) {
            count += 1;
            first.get_or_insert(next);
            kept.push_back(next);
            if kept.len() > keep {
                dropped_last = kept.pop_front();
            }
            if count >= MAX_ENUMERATED {
                // Jump to the newest ticks: the ones in between are a gap
                // whose size is only known to be at least this.
                capped = true;
                let mut newest = Vec::new();
                let mut at = now;
                while newest.len() < keep {
                    match self.latest_at_or_before(at).filter(|x| *x > t) {
                        Some(x) => {
                            newest.push(x);
                            at = x - chrono::TimeDelta::nanoseconds(1);
                        }
                        None => break,
                    }
                }
                newest.reverse();
                if let Some(&oldest_kept) = newest.first() {
                    dropped_last =
                        self.latest_at_or_before(oldest_kept - chrono::TimeDelta::nanoseconds(1));
                }
                kept = newest.into();
                break;
            }
            t = next;
        }
        let gap = match (first, dropped_last) {
            (Some(first), Some(last_dropped)) => Some(Gap {
                first_tick: first,
                last_tick: last_dropped,
                first_day: self.day_of(first),
                last_day: self.day_of(last_dropped),
                ticks: count.saturating_sub(kept.len() as u64),
                capped,
            }),
            _ => None,
        };
        TickPlan {
            run: kept.into(),
            gap,
        }
    }

    /// Delay before retry number `retry` (1-based): exponential from
    /// `retry_delay`, capped at `retry_max_delay`, with jitter.
    pub fn retry_delay(&self, retry: u32) -> Duration {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.config.retry_delay)
            .with_max_delay(self.config.retry_max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(retry.saturating_sub(1) as usize)
            .unwrap_or(self.config.retry_max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(extra: &str) -> Result<Job, (String, String)> {
        let text = format!("name = \"daily\"\ncron = \"30 0 * * *\"\n{extra}");
        Job::parse(toml::from_str(&text).expect("toml"))
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn bad_settings_name_their_key() {
        assert_eq!(job("").unwrap().name(), "daily");
        for (extra, key) in [
            ("timezone = \"Mars/Olympus\"", "timezone"),
            ("day = \"tomorrow\"", "day"),
            ("sla = \"25:99\"", "sla"),
            ("max_active_runs = 0", "max_active_runs"),
            (
                "retry_delay = \"10m\"\nretry_max_delay = \"1m\"",
                "retry_max_delay",
            ),
            ("webhook = \"ftp://x\"", "webhook"),
        ] {
            assert_eq!(job(extra).unwrap_err().0, key, "{extra}");
        }
        let bad_cron = JobConfig {
            cron: "61 * * * *".into(),
            ..job("").unwrap().config
        };
        assert_eq!(Job::parse(bad_cron).unwrap_err().0, "cron");
    }

    #[test]
    fn tick_day_and_deadline_follow_the_time_zone() {
        let j = job("timezone = \"Europe/Berlin\"\nsla = \"02:00\"").unwrap();
        // 00:30 Berlin on 2026-11-03 is 23:30 UTC on 11-02.
        let tick = j.next_after(at("2026-11-02T12:00:00Z")).unwrap();
        assert_eq!(tick, at("2026-11-02T23:30:00Z"));
        assert_eq!(
            j.day_of(tick),
            NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
        );
        assert_eq!(j.deadline(tick), Some(at("2026-11-03T01:00:00Z")));
        let j = job("sla = \"2h\"\nday = \"today\"").unwrap();
        let tick = at("2026-11-03T00:30:00Z");
        assert_eq!(j.deadline(tick), Some(at("2026-11-03T02:30:00Z")));
        assert_eq!(
            j.day_of(tick),
            NaiveDate::from_ymd_opt(2026, 11, 3).unwrap()
        );
        // A deadline earlier in the day than the tick is the next day's.
        let j = job("sla = \"00:10\"").unwrap();
        assert_eq!(j.deadline(tick), Some(at("2026-11-04T00:10:00Z")));
    }

    #[test]
    fn downtime_without_catchup_runs_only_the_latest_tick() {
        let j = job("").unwrap();
        let last = at("2026-11-02T00:30:00Z");
        let now = at("2026-11-12T01:00:00Z");
        let plan = j.plan(Some(last), now);
        assert_eq!(plan.run, vec![at("2026-11-12T00:30:00Z")]);
        let gap = plan.gap.unwrap();
        assert_eq!(gap.ticks, 9);
        assert_eq!(gap.first_tick, at("2026-11-03T00:30:00Z"));
        assert_eq!(gap.last_day, NaiveDate::from_ymd_opt(2026, 11, 10).unwrap());
        // Nothing new due: nothing runs, no gap.
        assert_eq!(j.plan(Some(plan.run[0]), now), TickPlan::default());
        // A first start runs the latest due tick only.
        assert_eq!(j.plan(None, now).run, vec![at("2026-11-12T00:30:00Z")]);
    }

    #[test]
    fn catchup_runs_at_most_max_catchup_oldest_first() {
        let j = job("catchup = true\nmax_catchup = 3").unwrap();
        let plan = j.plan(Some(at("2026-11-02T00:30:00Z")), at("2026-11-12T01:00:00Z"));
        assert_eq!(
            plan.run,
            vec![
                at("2026-11-10T00:30:00Z"),
                at("2026-11-11T00:30:00Z"),
                at("2026-11-12T00:30:00Z")
            ]
        );
        assert_eq!(plan.gap.unwrap().ticks, 7);
        // Two missed ticks, both within max_catchup: no gap.
        let plan = j.plan(Some(at("2026-11-10T00:30:00Z")), at("2026-11-12T01:00:00Z"));
        assert_eq!(plan.run.len(), 2);
        assert_eq!(plan.gap, None);
    }

    #[test]
    fn a_huge_gap_is_capped_not_enumerated() {
        let mut config = job("catchup = true\nmax_catchup = 2").unwrap().config;
        config.cron = "* * * * * *".into();
        let j = Job::parse(config).unwrap();
        let now = at("2026-11-30T00:00:00Z");
        let plan = j.plan(Some(at("2026-10-01T00:00:00Z")), now);
        assert_eq!(plan.run, vec![now - chrono::TimeDelta::seconds(1), now]);
        let gap = plan.gap.unwrap();
        assert!(gap.capped && gap.ticks >= MAX_ENUMERATED - 2, "{gap:?}");
        assert_eq!(gap.last_tick, now - chrono::TimeDelta::seconds(2));
    }

    #[test]
    fn deadlines_inside_a_dst_gap_move_an_hour_later() {
        // Europe/Berlin skips 02:00-03:00 on 2026-03-29.
        let j = job("timezone = \"Europe/Berlin\"\nsla = \"02:30\"").unwrap();
        let tick = at("2026-03-28T23:30:00Z"); // 00:30 CET on 03-29
        assert_eq!(j.deadline(tick), Some(at("2026-03-29T01:30:00Z"))); // 03:30 CEST
                                                                        // On the autumn day 02:30 happens twice; the first one counts.
        let tick = at("2026-10-24T22:30:00Z"); // 00:30 CEST on 10-25
        assert_eq!(j.deadline(tick), Some(at("2026-10-25T00:30:00Z")));
        // The cron itself: a 00:30 tick every local day, across both changes.
        assert_eq!(
            j.next_after(at("2026-03-29T12:00:00Z")),
            Some(at("2026-03-29T22:30:00Z"))
        );
        assert_eq!(
            j.next_after(at("2026-10-25T12:00:00Z")),
            Some(at("2026-10-25T23:30:00Z"))
        );
    }

    #[test]
    fn retry_delays_grow_with_jitter_and_are_capped() {
        let j = job("retry_delay = \"10s\"\nretry_max_delay = \"60s\"").unwrap();
        let first = j.retry_delay(1);
        assert!(
            first >= Duration::from_secs(10) && first <= Duration::from_secs(20),
            "{first:?}"
        );
        let third = j.retry_delay(3);
        assert!(third >= Duration::from_secs(40), "{third:?}");
        assert!(j.retry_delay(20) <= Duration::from_secs(120));
    }
}
