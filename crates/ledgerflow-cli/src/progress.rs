//! Progress bars on a terminal; nothing (logs only) otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:30} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Per-day time and projected finish of a range of days.
pub struct DayPace {
    started: Instant,
    last: Instant,
    total: usize,
    over: usize,
}

impl DayPace {
    pub fn new(total: usize) -> DayPace {
        let now = Instant::now();
        DayPace {
            started: now,
            last: now,
            total,
            over: 0,
        }
    }

    /// One more day is over: its seconds (days overlap, so the time since
    /// the one before it was over: what it added to the whole) and the
    /// local time the range should end at the mean pace so far.
    pub fn day_over(&mut self) -> (f64, chrono::DateTime<chrono::Local>) {
        let now = Instant::now();
        let seconds = (now - self.last).as_secs_f64();
        self.last = now;
        self.over += 1;
        let per_day = (now - self.started).div_f64(self.over as f64);
        let left = per_day * self.total.saturating_sub(self.over) as u32;
        let left = chrono::TimeDelta::from_std(left.min(Duration::from_secs(86_400 * 365)))
            .unwrap_or_default();
        let finish = chrono::Local::now() + left;
        (seconds, finish)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projected_finish_follows_the_mean_day() {
        let mut pace = DayPace::new(5);
        std::thread::sleep(Duration::from_millis(200));
        let (first, finish) = pace.day_over();
        assert!(first >= 0.2, "{first}");
        // Four days left at ~0.2 s each.
        let left = (finish - chrono::Local::now()).as_seconds_f64();
        assert!((0.6..2.0).contains(&left), "{left}");
        let (second, _) = pace.day_over();
        assert!(
            second < 0.1,
            "a day's time is since the one before: {second}"
        );
        for _ in 0..3 {
            pace.day_over();
        }
        let (_, done) = pace.day_over();
        assert!(
            done <= chrono::Local::now(),
            "past the last day, nothing is left"
        );
    }
}
