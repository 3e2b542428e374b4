//! Write order across the days of a pipelined backfill: day N+1's queries
//! may run while day N is written, but a model's day N+1 is checked and
//! written only after its day N is over (written, skipped or failed), so
//! commits per model stay oldest-first and a check that reads earlier days
//! (`volume`) sees them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use chrono::NaiveDate;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct WriteTurns {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Days whose run is over, for every model.
    days: BTreeSet<NaiveDate>,
    /// (model → days) over before their whole day was.
    models: HashMap<String, BTreeSet<NaiveDate>>,
    /// The backfill's days.
    all: BTreeSet<NaiveDate>,
}

impl WriteTurns {
    pub fn new(days: &[NaiveDate]) -> WriteTurns {
        WriteTurns {
            state: Mutex::new(State {
                all: days.iter().copied().collect(),
                ..State::default()
            }),
            changed: Notify::new(),
        }
    }

    fn ready(&self, model: &str, day: NaiveDate) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let over = state.models.get(model);
        state
            .all
            .range(..day)
            .all(|d| state.days.contains(d) || over.is_some_and(|o| o.contains(d)))
    }

    /// Waits until `model` is over on every earlier day of the backfill.
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

    /// Every model is over for `day` (its run ended, however it ended).
    pub fn day_done(&self, day: NaiveDate) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .days
            .insert(day);
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
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
}
