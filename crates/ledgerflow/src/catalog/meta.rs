//! Small documents kept beside the partitions (the ingest manifest, the
//! schema registry, ingest reports), read and written whole, by key
//! (`_ingest/archives/<key>.json`). On local disk a write is a temporary
//! file, fsync and rename (durable across a power loss); on S3 or HDFS one
//! PUT, which a reader sees whole or not at all.
//!
//! The API is blocking, as its callers are (the manifest is consulted from
//! the extraction threads too). Remote calls run on a runtime of the
//! store's own, so they may be made from inside another runtime.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path;

use super::store::PartitionStore;
use crate::config::S3Config;
use crate::error::{Error, Result};
use crate::location::Location;

#[derive(Debug, Clone)]
pub enum MetaDir {
    Local {
        root: PathBuf,
    },
    Store {
        store: PartitionStore,
        bridge: Arc<Bridge>,
    },
}

impl MetaDir {
    /// The documents of the layer at `location`. A remote store gets a
    /// client of its own, whose connections live on the bridge's runtime.
    pub fn open(location: &Location, s3: &S3Config) -> Result<MetaDir> {
        let store = PartitionStore::open(location, s3)?;
        Ok(match store.local_root() {
            Some(root) => MetaDir::Local {
                root: root.to_path_buf(),
            },
            None => MetaDir::Store {
                store,
                bridge: Arc::new(Bridge::new()?),
            },
        })
    }

    /// A local directory's documents (tests, tools).
    pub fn local(root: &std::path::Path) -> MetaDir {
        MetaDir::Local {
            root: root.to_path_buf(),
        }
    }

    /// Where a document is, for messages.
    pub fn describe(&self, key: &str) -> String {
        match self {
            MetaDir::Local { root } => root.join(key).display().to_string(),
            MetaDir::Store { store, .. } => store.describe(&Path::from(key)),
        }
    }

    pub fn read(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            MetaDir::Local { root } => {
                let path = root.join(key);
                match std::fs::read(&path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io(path, e)),
                }
            }
            MetaDir::Store { store, bridge } => {
                let path = Path::from(key);
                Ok(bridge.run(store.get(&path))?.map(|b| b.to_vec()))
            }
        }
    }

    pub fn exists(&self, key: &str) -> Result<bool> {
        match self {
            MetaDir::Local { root } => Ok(root.join(key).exists()),
            MetaDir::Store { store, bridge } => bridge.run(store.exists(&Path::from(key))),
        }
    }

    /// Replaces the document: a reader sees the old one or the new one.
    pub fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        match self {
            MetaDir::Local { root } => write_atomic(&root.join(key), bytes),
            MetaDir::Store { store, bridge } => {
                bridge.run(store.put(&Path::from(key), bytes.to_vec()))
            }
        }
    }

    pub fn remove(&self, key: &str) -> Result<()> {
        match self {
            MetaDir::Local { root } => {
                let path = root.join(key);
                match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io(path, e)),
                }
            }
            MetaDir::Store { store, bridge } => bridge.run(store.delete(&Path::from(key))),
        }
    }

    /// Names of the documents directly under `dir` (no hidden ones),
    /// sorted.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = match self {
            MetaDir::Local { root } => {
                let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                    return Ok(Vec::new());
                };
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            }
            MetaDir::Store { store, bridge } => {
                let prefix = Path::from(dir);
                bridge
                    .run(store.list_all(&prefix))?
                    .into_iter()
                    .filter(|m| m.location.parts().count() == prefix.parts().count() + 1)
                    .filter_map(|m| m.location.filename().map(str::to_owned))
                    .collect()
            }
        };
        names.retain(|n| !n.starts_with('.'));
        names.sort();
        Ok(names)
    }
}

/// A runtime of its own for blocking callers of a remote store: each call
/// runs on a scoped thread that blocks on it, so a caller already inside a
/// runtime (of either flavour) never blocks that runtime's driver.
#[derive(Debug)]
pub struct Bridge {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    pub fn new() -> Result<Bridge> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ledgerflow-meta")
            .enable_all()
            .build()
            .map_err(|e| Error::io("<runtime>", e))?;
        Ok(Bridge {
            runtime: Some(runtime),
        })
    }

    pub fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self.runtime.as_ref().expect("alive until dropped");
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is refused inside another one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Temp file + fsync + rename, in the target's directory.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    // The rename is durable only once the directory is: without this, a
    // power loss could keep a later write (a manifest record) and lose an
    // earlier one it relies on (the size index entry).
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
