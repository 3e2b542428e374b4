//! Query slots (`engine.parallel_models`) handed out by priority: the
//! oldest day in flight first, and within a day the models whose output
//! others read, then the models that read one. Every model of a day takes
//! its ticket when the day starts, so a slot waits for a model of higher
//! priority that has not asked yet (its ledger round trips) instead of
//! going to whoever asks first. A ticket whose model cannot run yet (its
//! upstreams' outputs do not exist) is passed over until it can. With days
//! in flight, day N+1's first query takes the slot only when day N has no
//! query that can run: it fills the time day N spends in PostgreSQL's COPY
//! and index build instead of sitting beside day N's queries (and their
//! memory). Served first come, first served among equals.

use std::collections::BTreeMap;
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
    /// Tickets not yet served, by (priority, arrival): whether each can
    /// run.
    waiting: BTreeMap<(Priority, u64), bool>,
    arrivals: u64,
}

/// A slot held until dropped.
#[derive(Debug)]
pub struct Slot<'a>(&'a QuerySlots);

/// A model's place in the queue, taken out when served or dropped (a run
/// that ends without its query holds nothing back).
#[derive(Debug)]
pub struct Ticket<'a> {
    slots: &'a QuerySlots,
    key: (Priority, u64),
}

impl QuerySlots {
    pub fn new(slots: usize) -> QuerySlots {
        QuerySlots {
            state: Mutex::new(State {
                free: slots,
                waiting: BTreeMap::new(),
                arrivals: 0,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place in the queue at `priority`; `can_run` says whether the
    /// model could run its query now (else see [`Ticket::can_run`]).
    pub fn ticket(&self, priority: Priority, can_run: bool) -> Ticket<'_> {
        let mut state = self.state();
        state.arrivals += 1;
        let key = (priority, state.arrivals);
        state.waiting.insert(key, can_run);
        drop(state);
        self.changed.notify_waiters();
        Ticket { slots: self, key }
    }

    /// A ticket that can run, served at once if it is first.
    #[cfg(test)]
    pub async fn acquire(&self, priority: Priority) -> Slot<'_> {
        let ticket = self.ticket(priority, true);
        ticket.acquire().await
    }
}

impl<'a> Ticket<'a> {
    /// Its model can run its query now: later tickets no longer pass it.
    pub fn can_run(&self) {
        if let Some(can) = self.slots.state().waiting.get_mut(&self.key) {
            *can = true;
        }
        self.slots.changed.notify_waiters();
    }

    /// Leaves the queue: its model will not query (it was skipped).
    pub fn withdraw(&self) {
        if self.slots.state().waiting.remove(&self.key).is_some() {
            self.slots.changed.notify_waiters();
        }
    }

    /// Waits for a slot: one is free and no ticket before this one can
    /// run. Marks this one as able to run.
    pub async fn acquire(&self) -> Slot<'a> {
        self.can_run();
        let slots = self.slots;
        loop {
            let changed = slots.changed.notified();
            tokio::pin!(changed);
            // Registered before the look, so a change in between wakes it.
            changed.as_mut().enable();
            {
                let mut state = slots.state();
                let first = state
                    .waiting
                    .iter()
                    .find(|(_, &can)| can)
                    .map(|(key, _)| *key);
                if state.free > 0 && first == Some(self.key) {
                    state.free -= 1;
                    state.waiting.remove(&self.key);
                    drop(state);
                    // Another free slot may be the next ticket's now.
                    slots.changed.notify_waiters();
                    return Slot(slots);
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
        self.withdraw();
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

    /// Whether `f` is still waiting after a moment.
    async fn waits<T>(f: std::pin::Pin<&mut impl std::future::Future<Output = T>>) -> bool {
        tokio::time::timeout(Duration::from_millis(20), f)
            .await
            .is_err()
    }

    /// `f`'s output, which must come soon.
    async fn soon<T>(f: impl std::future::Future<Output = T>, what: &str) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .unwrap_or_else(|_| panic!("{what}"))
    }

    /// Queues waiters in `arrivals` order behind a held slot, releases it,
    /// and returns the order they were served in.
    async fn served(slots: usize, arrivals: &[Priority]) -> Vec<Priority> {
        let q = Arc::new(QuerySlots::new(slots));
        let held: Vec<_> = (0..slots).map(|_| q.clone()).collect();
        let blockers: Vec<Slot<'_>> =
            futures::future::join_all(held.iter().map(|q| q.acquire((day(1), 0)))).await;
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
            vec![
                (day(2), 0),
                (day(2), 1),
                (day(2), 2),
                (day(2), 2),
                (day(3), 0)
            ]
        );
    }

    #[tokio::test]
    async fn two_slots_serve_two_at_once() {
        let q = QuerySlots::new(2);
        let a = q.acquire((day(1), 0)).await;
        let b = q.acquire((day(2), 0)).await;
        let third = q.acquire((day(1), 0));
        tokio::pin!(third);
        assert!(waits(third.as_mut()).await, "no slot free");
        drop(b);
        soon(third, "the freed slot is taken").await;
        drop(a);
    }

    #[tokio::test]
    async fn a_free_slot_waits_for_a_ticket_before_it_that_can_run() {
        let q = QuerySlots::new(1);
        // Taken at the day's start: `first` can run but has not asked yet
        // (its ledger round trips), `blocked` cannot run yet.
        let first = q.ticket((day(1), 0), true);
        let blocked = q.ticket((day(1), 1), false);
        let later = q.ticket((day(1), 2), true);
        let later_slot = later.acquire();
        tokio::pin!(later_slot);
        assert!(
            waits(later_slot.as_mut()).await,
            "the slot waits for `first`"
        );
        let slot = first.acquire().await;
        drop(slot);
        // Served already: nothing to take out.
        first.withdraw();
        // `blocked` cannot run: `later` passes it.
        let slot = soon(later_slot, "a ticket that cannot run is passed over").await;
        let blocked_slot = blocked.acquire();
        tokio::pin!(blocked_slot);
        assert!(waits(blocked_slot.as_mut()).await, "the slot is held");
        drop(slot);
        soon(blocked_slot, "served once it can run and the slot is free").await;
    }

    #[tokio::test]
    async fn a_waiter_given_up_holds_nobody_back() {
        let q = QuerySlots::new(1);
        let held = q.acquire((day(5), 0)).await;
        {
            // An earlier day's waiter, dropped while it waits.
            let early = q.acquire((day(1), 0));
            tokio::pin!(early);
            assert!(waits(early.as_mut()).await, "the slot is held");
        }
        let later = q.acquire((day(9), 0));
        drop(held);
        soon(later, "served though an earlier ticket was queued once").await;
    }
}
