//! Query slots (`engine.parallel_models`) handed out by priority: the
//! oldest day in flight first, and within a day the models whose output
//! others read, then the models that read one. With days in flight, day
//! N+1's first query then takes the slot only when day N has no query
//! waiting: it fills the time day N spends in PostgreSQL's COPY and index
//! build instead of sitting beside day N's own queries (and their memory).
//! Served first come, first served among equals.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use chrono::NaiveDate;
use tokio::sync::Notify;

/// Lower is served first: the day, then the model's rank within it.
pub type Priority = (NaiveDate, u8);

#[derive(Debug)]
pub struct QuerySlots {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug)]
struct State {
    free: usize,
    /// Waiting tickets: (priority, arrival).
    waiting: BTreeSet<(Priority, u64)>,
    arrivals: u64,
}

/// A slot held until dropped.
#[derive(Debug)]
pub struct Slot<'a>(&'a QuerySlots);

/// A ticket in the queue, taken out if its waiter is dropped (a run
/// aborted while it waited holds nothing back).
struct Ticket<'a> {
    slots: &'a QuerySlots,
    key: (Priority, u64),
    queued: bool,
}

impl QuerySlots {
    pub fn new(slots: usize) -> QuerySlots {
        QuerySlots {
            state: Mutex::new(State {
                free: slots,
                waiting: BTreeSet::new(),
                arrivals: 0,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a slot: one is free and no waiter comes before this one.
    pub async fn acquire(&self, priority: Priority) -> Slot<'_> {
        let mut ticket = {
            let mut state = self.state();
            state.arrivals += 1;
            let key = (priority, state.arrivals);
            state.waiting.insert(key);
            Ticket {
                slots: self,
                key,
                queued: true,
            }
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the look, so a change in between wakes it.
            changed.as_mut().enable();
            {
                let mut state = self.state();
                if state.free > 0 && state.waiting.first() == Some(&ticket.key) {
                    state.free -= 1;
                    state.waiting.remove(&ticket.key);
                    ticket.queued = false;
                    drop(state);
                    // Another free slot may be the next waiter's now.
                    self.changed.notify_waiters();
                    return Slot(self);
                }
            }
            changed.await;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.state().free += 1;
        self.0.changed.notify_waiters();
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.queued {
            self.slots.state().waiting.remove(&self.key);
            self.slots.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 10, d).unwrap()
    }

    /// Queues waiters in `arrivals` order behind a held slot, releases it,
    /// and returns the order they were served in.
    async fn served(slots: usize, arrivals: &[Priority]) -> Vec<Priority> {
        let q = Arc::new(QuerySlots::new(slots));
        let held: Vec<_> = (0..slots).map(|_| q.clone()).collect();
        let blockers: Vec<Slot<'_>> = futures::future::join_all(
            held.iter().map(|q| q.acquire((day(1), 0))),
        )
        .await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for &p in arrivals {
            let (q, order) = (q.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = q.acquire(p).await;
                order.lock().unwrap().push(p);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            // Each waiter queued before the next arrives.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(blockers);
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(order).unwrap().into_inner().unwrap()
    }

    #[tokio::test]
    async fn the_oldest_day_is_served_first_then_rank_then_arrival() {
        let arrivals = [
            (day(3), 0),
            (day(2), 2),
            (day(2), 0),
            (day(2), 2),
            (day(2), 1),
        ];
        assert_eq!(
            served(1, &arrivals).await,
            vec![(day(2), 0), (day(2), 1), (day(2), 2), (day(2), 2), (day(3), 0)]
        );
    }

    #[tokio::test]
    async fn two_slots_serve_two_at_once() {
        let q = QuerySlots::new(2);
        let a = q.acquire((day(1), 0)).await;
        let b = q.acquire((day(2), 0)).await;
        let third = q.acquire((day(1), 0));
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), third.as_mut())
                .await
                .is_err(),
            "no slot free"
        );
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("the freed slot is taken");
        drop(a);
    }

    #[tokio::test]
    async fn a_waiter_given_up_holds_nobody_back() {
        let q = QuerySlots::new(1);
        let held = q.acquire((day(5), 0)).await;
        {
            // An earlier day's waiter, dropped while it waits.
            let early = q.acquire((day(1), 0));
            tokio::pin!(early);
            assert!(
                tokio::time::timeout(Duration::from_millis(10), early.as_mut())
                    .await
                    .is_err()
            );
        }
        let later = q.acquire((day(9), 0));
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), later)
            .await
            .expect("served though an earlier ticket was queued once");
    }
}
