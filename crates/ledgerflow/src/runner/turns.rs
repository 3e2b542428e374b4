//! Write order across days in flight (a pipelined backfill, a scheduler's
//! catch-up ticks): day N+1's queries may run while day N is written, but
//! a model's day N+1 is checked and written only after its day N is over
//! (written, skipped or failed), so commits per model stay oldest-first
//! and a check that reads earlier days (`volume`) sees them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::NaiveDate;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct WriteTurns {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Days begun and not yet over.
    open: BTreeSet<NaiveDate>,
    /// (model → open days) the model is over on.
    models: HashMap<String, BTreeSet<NaiveDate>>,
}

impl WriteTurns {
    /// Turns for `days`, each open until [`day_done`](Self::day_done).
    pub fn new(days: &[NaiveDate]) -> WriteTurns {
        let turns = WriteTurns::default();
        days.iter().for_each(|&d| turns.begin(d));
        turns
    }

    /// `day` is in flight: later days' writes wait for its models. Called
    /// before any later day starts (a day begun late cannot hold back
    /// writes already made).
    pub fn begin(&self, day: NaiveDate) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
            .insert(day);
    }

    /// [`begin`](Self::begin) `day` until the returned guard is dropped
    /// (a task's end, however it ends: an aborted run holds nothing back).
    pub fn open(self: &Arc<Self>, day: NaiveDate) -> OpenDay {
        self.begin(day);
        OpenDay(Arc::clone(self), day)
    }

    fn ready(&self, model: &str, day: NaiveDate) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let over = state.models.get(model);
        state
            .open
            .range(..day)
            .all(|d| over.is_some_and(|o| o.contains(d)))
    }

    /// Waits until `model` is over on every earlier open day.
    pub async fn wait(&self, model: &str, day: NaiveDate) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change in between wakes it.
            changed.as_mut().enable();
            if self.ready(model, day) {
                return;
            }
            changed.await;
        }
    }

    /// `model` is over for `day`.
    pub fn model_done(&self, model: &str, day: NaiveDate) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .models
            .entry(model.to_owned())
            .or_default()
            .insert(day);
        self.changed.notify_waiters();
    }

    /// Every model is over for `day` (its run ended, however it ended): it
    /// holds nothing back any more.
    pub fn day_done(&self, day: NaiveDate) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.open.remove(&day);
        state.models.values_mut().for_each(|days| {
            days.remove(&day);
        });
        drop(state);
        self.changed.notify_waiters();
    }
}

/// An open day of [`WriteTurns`], done when dropped.
#[derive(Debug)]
pub struct OpenDay(Arc<WriteTurns>, NaiveDate);

impl Drop for OpenDay {
    fn drop(&mut self) {
        self.0.day_done(self.1);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use crate::day::nov as d;

    #[tokio::test]
    async fn a_models_day_waits_for_its_earlier_days_only() {
        let turns = Arc::new(WriteTurns::new(&[d(1), d(2), d(3)]));
        // The first day never waits.
        tokio::time::timeout(Duration::from_secs(1), turns.wait("a", d(1)))
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let turns = turns.clone();
            async move { turns.wait("a", d(3)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "days 1 and 2 are not over");
        turns.model_done("a", d(1));
        turns.model_done("b", d(2));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "model a's day 2 is not over");
        turns.day_done(d(2));
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        // Model b's day 3 waits for day 1 (a's done does not count for b).
        assert!(!turns.ready("b", d(3)));
        turns.day_done(d(1));
        assert!(turns.ready("b", d(3)));
    }

    #[test]
    fn a_day_begun_later_holds_back_only_later_days() {
        // A scheduler begins each tick's day as it starts.
        let turns = Arc::new(WriteTurns::default());
        turns.begin(d(5));
        assert!(turns.ready("a", d(5)));
        assert!(!turns.ready("a", d(6)), "day 5 is open");
        turns.begin(d(6));
        turns.model_done("a", d(5));
        assert!(turns.ready("a", d(6)));
        assert!(!turns.ready("b", d(6)));
        turns.day_done(d(5));
        assert!(turns.ready("b", d(6)));
        // A retry of day 5 begun after day 6's writes holds back day 7 only.
        turns.begin(d(7));
        turns.day_done(d(6));
        assert!(turns.ready("a", d(7)));
        let retry = turns.open(d(5));
        assert!(!turns.ready("a", d(7)));
        drop(retry);
        assert!(turns.ready("a", d(7)), "a dropped guard closes its day");
    }
}
