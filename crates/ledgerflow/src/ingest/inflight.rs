//! The budget of input chunks in flight between the extractor and all
//! table workers together. A bound per table let an archive of many
//! tables hold that bound once per table whose worker fell behind; one
//! budget bounds the run's input buffers whatever the table count, so it
//! can be deep enough that the extractor keeps going while a worker waits
//! on a Parquet row-group flush.
//!
//! A chunk travels with its [`Permit`], which gives its place back when
//! dropped: read, drained, or lost with a worker that stopped, no path can
//! keep one.

use std::sync::{Arc, Condvar, Mutex};

pub struct Budget {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One chunk's place in the budget.
pub struct Permit(Arc<Budget>);

impl Budget {
    pub fn new(chunks: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(chunks),
            freed: Condvar::new(),
        })
    }

    /// Waits for a free place.
    pub fn acquire(self: &Arc<Self>) -> Permit {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Permit(self.clone())
    }

    /// Places free now.
    pub fn free(&self) -> usize {
        *self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;
    use std::time::Duration;

    #[test]
    fn a_full_budget_waits_until_a_permit_is_dropped() {
        let budget = Budget::new(2);
        let a = budget.acquire();
        let _b = budget.acquire();
        let (tx, rx) = sync_channel(1);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _c = budget.acquire();
                tx.send(()).unwrap();
            });
            // The third waits while two are out...
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
            // ...and goes once one comes back.
            drop(a);
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        });
        // The third was dropped with its thread, `a` before: one is out.
        assert_eq!(budget.free(), 1);
    }
}
