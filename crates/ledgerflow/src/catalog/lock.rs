//! An exclusive lock on a piece of the batch layer (ingest, a day's
//! compaction), held for one process's run.
//!
//! On local disk: `flock`, released by the kernel when the process dies, so
//! a SIGKILL never leaves it held. On S3 and HDFS there is nothing like it:
//! the lock is a document created only if absent (`If-None-Match: *`)
//! holding its owner and an expiry, renewed every lease/3 with `If-Match`
//! on the version read, and taken over (again with `If-Match`) only once
//! it has expired, so of two takers exactly one wins. A holder checks
//! [`StoreLock::ensure_held`] before it commits: once a renewal was
//! refused, or none succeeded within the lease, it must not commit (another
//! process may have taken the lock over).

use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::meta::{Bridge, MetaDir};
use super::store::PartitionStore;
use crate::error::{Error, Result};

pub struct StoreLock {
    _held: Held,
}

/// Held for its `Drop` (the file's descriptor closes the flock; the
/// guard stops renewing and deletes the document).
#[allow(dead_code)]
enum Held {
    File(std::fs::File),
    Lease(Box<LeaseGuard>),
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseDoc {
    owner: String,
    /// Milliseconds since the epoch, by the holder's clock.
    expires_at_ms: i64,
}

impl StoreLock {
    /// Takes the lock at `key`, or fails at once naming the holder; `what`
    /// says what it guards (for the message).
    pub fn acquire(docs: &MetaDir, key: &str, lease: Duration, what: &str) -> Result<StoreLock> {
        match docs {
            MetaDir::Local { root } => {
                let path = root.join(key);
                let dir = path.parent().expect("a lock file in a directory");
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                // SAFETY: flock on a descriptor we own.
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        // Not a holder: locks unsupported here (some network
                        // file systems), or none left.
                        return Err(Error::io(&path, e));
                    }
                    return Err(Error::LockHeld(format!(
                        "another process holds the {what} lock ({}); try again later",
                        path.display()
                    )));
                }
                Ok(StoreLock {
                    _held: Held::File(file),
                })
            }
            MetaDir::Store { store, bridge } => {
                let guard = LeaseGuard::acquire(store.clone(), bridge.clone(), key, lease, what)?;
                Ok(StoreLock {
                    _held: Held::Lease(Box::new(guard)),
                })
            }
        }
    }

    /// Fails when the lock can no longer be trusted: a renewal found it
    /// taken over, or no renewal succeeded within the lease (so it may have
    /// expired and been taken). Called right before a commit.
    pub fn ensure_held(&self) -> Result<()> {
        match &self._held {
            Held::File(_) => Ok(()),
            Held::Lease(guard) => guard.ensure_held(),
        }
    }
}

/// The renewer's view of a lease: when it was last renewed, or lost.
#[derive(Debug)]
enum Standing {
    Renewed(Instant),
    Lost,
}

struct LeaseGuard {
    store: PartitionStore,
    bridge: Arc<Bridge>,
    path: Path,
    owner: String,
    lease: Duration,
    what: String,
    standing: Arc<Mutex<Standing>>,
    /// Dropped to stop the renewer at once.
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

/// Whether a lease document names `owner`.
fn held_by(bytes: &[u8], owner: &str) -> bool {
    serde_json::from_slice::<LeaseDoc>(bytes).is_ok_and(|d| d.owner == owner)
}

impl LeaseGuard {
    fn acquire(
        store: PartitionStore,
        bridge: Arc<Bridge>,
        key: &str,
        lease: Duration,
        what: &str,
    ) -> Result<LeaseGuard> {
        let path = Path::from(key);
        let owner = crate::ledger::this_process();
        let doc = move |owner: &str| {
            serde_json::to_vec(&LeaseDoc {
                owner: owner.to_string(),
                expires_at_ms: Utc::now().timestamp_millis() + lease.as_millis() as i64,
            })
            .expect("lease documents serialize")
        };
        let taken = bridge.run(async {
            if store.create(&path, doc(&owner)).await? {
                return Ok(true);
            }
            let Some((bytes, version)) = store.get_versioned(&path).await? else {
                // Released meanwhile: one more try.
                return store.create(&path, doc(&owner)).await;
            };
            match serde_json::from_slice::<LeaseDoc>(&bytes) {
                Ok(held) if held.expires_at_ms > Utc::now().timestamp_millis() => {
                    Err(Error::LockHeld(format!(
                        "another process holds the {what} lock ({}: owner {}, expires {}); try again later",
                        store.describe(&path),
                        held.owner,
                        chrono::DateTime::from_timestamp_millis(held.expires_at_ms)
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default()
                    )))
                }
                // Expired (its holder died) or unreadable: take it over,
                // unless another taker was first.
                _ => {
                    tracing::warn!(lock = %store.describe(&path), "taking over an expired lock");
                    store.put_if(&path, doc(&owner), version).await
                }
            }
        })?;
        if !taken {
            return Err(Error::LockHeld(format!(
                "another process took the {what} lock ({}) at the same moment; try again later",
                store.describe(&path)
            )));
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let standing = Arc::new(Mutex::new(Standing::Renewed(Instant::now())));
        let renewer = {
            let (store, bridge, path, owner, standing) = (
                store.clone(),
                bridge.clone(),
                path.clone(),
                owner.clone(),
                standing.clone(),
            );
            std::thread::spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(lease / 3) {
                    let renewed = bridge.run(async {
                        match store.get_versioned(&path).await? {
                            Some((bytes, version)) if held_by(&bytes, &owner) => {
                                store.put_if(&path, doc(&owner), version).await
                            }
                            _ => Ok(false),
                        }
                    });
                    match renewed {
                        Ok(true) => {
                            *standing.lock().expect("lock standing") =
                                Standing::Renewed(Instant::now())
                        }
                        Ok(false) => {
                            *standing.lock().expect("lock standing") = Standing::Lost;
                            tracing::error!(lock = %store.describe(&path), "lost the lock (another process took it over after it expired)");
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "could not renew a lock; retrying"),
                    }
                }
            })
        };
        Ok(LeaseGuard {
            store,
            bridge,
            path,
            owner,
            lease,
            what: what.to_string(),
            standing,
            stop: Some(stop),
            renewer: Some(renewer),
        })
    }

    fn ensure_held(&self) -> Result<()> {
        let lost = match *self.standing.lock().expect("lock standing") {
            Standing::Lost => "another process took it over".to_string(),
            Standing::Renewed(at) if at.elapsed() >= self.lease => format!(
                "not renewed for {:.1?} (lease {:?}): it may have expired",
                at.elapsed(),
                self.lease
            ),
            Standing::Renewed(_) => return Ok(()),
        };
        Err(Error::LockHeld(format!(
            "lost the {} lock ({}): {lost}; nothing committed, run again",
            self.what,
            self.store.describe(&self.path)
        )))
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        let (store, path, owner) = (&self.store, &self.path, &self.owner);
        let released = self.bridge.run(async {
            match store.get_versioned(path).await? {
                Some((bytes, _)) if held_by(&bytes, owner) => store.delete(path).await,
                _ => Ok(()),
            }
        });
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release a lock; it expires by its lease");
        }
    }
}
