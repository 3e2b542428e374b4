//! The scheduler's notion of "now". Normally the system clock. With
//! `LEDGERFLOW_CLOCK=<start>@<anchor>x<rate>` it is a simulated clock that
//! read `<start>` (RFC 3339) at real Unix time `<anchor>` and runs `<rate>`
//! times faster: a daily schedule can be replayed in seconds (to rehearse a
//! cron/SLA/catch-up setup, and in the process tests). Every process given
//! the same value sees the same time, so downtime between two processes
//! passes in simulated time too.
//!
//! `LEDGERFLOW_CLOCK=@<path>` reads that value from the file at every
//! reading of the clock, so a rehearsal (or a test) can make time jump
//! forward or back under a running scheduler by rewriting the file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

pub const ENV: &str = "LEDGERFLOW_CLOCK";

#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    sim: Option<Sim>,
    /// Where to read the simulated clock from at every reading (leaked
    /// once per process, so the clock stays `Copy`).
    file: Option<&'static std::path::Path>,
}

#[derive(Debug, Clone, Copy)]
struct Sim {
    start: DateTime<Utc>,
    anchor: f64,
    rate: f64,
}

fn real_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The clock `LEDGERFLOW_CLOCK` asks for, or the system clock.
    pub fn from_env() -> Result<Clock> {
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => Clock::parse(v.trim()),
            _ => Ok(Clock::system()),
        }
    }

    pub fn parse(v: &str) -> Result<Clock> {
        if let Some(path) = v.strip_prefix('@') {
            let path: &'static std::path::Path =
                Box::leak(std::path::PathBuf::from(path).into_boxed_path());
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Usage(format!("{ENV}=@{}: {e}", path.display())))?;
            let clock = Clock::parse(text.trim())?;
            return Ok(Clock {
                file: Some(path),
                ..clock
            });
        }
        let bad = || {
            Error::Usage(format!(
                "{ENV}=`{v}`: expected <RFC 3339 start>@<real unix seconds>x<rate>, e.g. 2026-11-01T00:00:00Z@1767225600x3600"
            ))
        };
        let (start, rest) = v.split_once('@').ok_or_else(bad)?;
        let (anchor, rate) = rest.split_once('x').ok_or_else(bad)?;
        let sim = Sim {
            start: start.parse().map_err(|_| bad())?,
            anchor: anchor.parse().map_err(|_| bad())?,
            rate: rate.parse().map_err(|_| bad())?,
        };
        if !(sim.rate > 0.0 && sim.rate.is_finite()) {
            return Err(bad());
        }
        Ok(Clock {
            sim: Some(sim),
            file: None,
        })
    }

    /// The simulated clock as it reads now: the file's (when it names one
    /// and parses), else the one parsed at start.
    fn sim(&self) -> Option<Sim> {
        self.file
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| Clock::parse(t.trim()).ok())
            .and_then(|c| c.sim)
            .or(self.sim)
    }

    pub fn is_simulated(&self) -> bool {
        self.sim.is_some()
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.sim() {
            None => Utc::now(),
            Some(s) => {
                let elapsed = (real_secs() - s.anchor) * s.rate;
                s.start + chrono::TimeDelta::microseconds((elapsed * 1e6) as i64)
            }
        }
    }

    /// The real time that `d` of this clock's time takes.
    pub fn real(&self, d: Duration) -> Duration {
        match self.sim() {
            None => d,
            Some(s) => d.div_f64(s.rate),
        }
    }

    /// Sleeps `d` of this clock's time.
    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(self.real(d)).await;
    }

    /// Sleeps until this clock reads `t` (at once if it already does).
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        if let Ok(d) = (t - self.now()).to_std() {
            self.sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_clock_runs_from_its_anchor_at_its_rate() {
        let anchor = real_secs() - 10.0;
        let c = Clock::parse(&format!("2026-11-01T00:00:00Z@{anchor}x3600")).unwrap();
        let now = c.now();
        let hours = (now - "2026-11-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()).num_minutes()
            as f64
            / 60.0;
        assert!((10.0..10.5).contains(&hours), "{now}");
        assert_eq!(c.real(Duration::from_secs(3600)), Duration::from_secs(1));
        for bad in [
            "2026-11-01@1x1",
            "2026-11-01T00:00:00Z@1",
            "2026-11-01T00:00:00Z@1x0",
        ] {
            assert!(
                Clock::parse(bad).unwrap_err().to_string().contains(ENV),
                "{bad}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_sleeps_take_their_real_share() {
        let c = Clock::parse(&format!("2026-11-01T00:00:00Z@{}x3600", real_secs())).unwrap();
        let start = tokio::time::Instant::now();
        c.sleep(Duration::from_secs(2 * 3600)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        let start = tokio::time::Instant::now();
        Clock::system().sleep(Duration::from_secs(90)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(90));
    }
}
