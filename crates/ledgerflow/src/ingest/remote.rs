//! Ingest inputs on object storage: `s3://bucket/dumps/a.tar.gz` (one
//! object) or `s3://bucket/dumps/` (the inputs one level under a prefix,
//! as for a local directory). Each is downloaded into a scratch dir under
//! the spill dir before it is read: an archive is read twice at most (hash,
//! then extract) and a local copy costs one transfer, where reading it
//! twice from the store would cost two. The manifest records the URL, so
//! `--retry-failed` fetches it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object_store::path::Path as ObjectPath;

use super::archive::{self, Input};
use crate::catalog::store::PartitionStore;
use crate::config::S3Config;
use crate::error::{Error, Result};
use crate::location::Location;

/// Whether an input argument names an object store rather than a local
/// path (`file://` is local).
pub fn is_remote(input: &Path) -> bool {
    input
        .to_str()
        .is_some_and(|s| s.contains("://") && !s.starts_with("file://"))
}

/// Downloads remote inputs, once per object version for the life of one
/// ingest (the readiness wait lists again on every poll).
pub struct Fetcher {
    s3: S3Config,
    spill_dir: PathBuf,
    scratch: Option<tempfile::TempDir>,
    /// URL -> the copy and the object's (e_tag, size) when it was fetched.
    fetched: HashMap<String, Fetched>,
}

struct Fetched {
    local: PathBuf,
    version: (Option<String>, u64),
}

impl Fetcher {
    pub fn new(s3: &S3Config, spill_dir: &Path) -> Self {
        Self {
            s3: s3.clone(),
            spill_dir: spill_dir.to_path_buf(),
            scratch: None,
            fetched: HashMap::new(),
        }
    }

    /// The inputs, each remote one replaced by the local copies of what it
    /// names; local paths pass through unchanged.
    async fn localize(&mut self, inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let mut out = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            if !is_remote(input) {
                out.push(input.clone());
                continue;
            }
            let text = input.to_string_lossy();
            let location = Location::parse(&text, Path::new(""))
                .map_err(|m| Error::Usage(format!("ingest input: {m}")))?;
            let (dir, file) = split_object(&location);
            let store = PartitionStore::open(&dir, &self.s3)?;
            // (name, object): a HEAD's meta may carry the store's full key.
            let objects: Vec<(String, object_store::ObjectMeta)> = match &file {
                Some(name) => match store.head(&ObjectPath::from(name.as_str())).await? {
                    Some(meta) => vec![(name.clone(), meta)],
                    None => {
                        return Err(Error::rejected(
                            location.to_string(),
                            "no such object in the store",
                        ))
                    }
                },
                None => store
                    .list_files(&ObjectPath::default())
                    .await?
                    .into_iter()
                    .filter_map(|m| Some((m.location.filename()?.to_string(), m)))
                    .filter(|(name, _)| archive::is_input_name(name))
                    .collect(),
            };
            for (name, meta) in objects {
                let url = format!("{dir}/{name}");
                let version = (meta.e_tag.clone(), meta.size);
                if let Some(f) = self.fetched.get(&url).filter(|f| f.version == version) {
                    out.push(f.local.clone());
                    continue;
                }
                // One directory per argument: two prefixes may hold the
                // same name, which ingest then refuses as it does locally.
                let local = self.scratch()?.join(index.to_string()).join(&name);
                let parent = local.parent().expect("a file in a directory");
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                tracing::info!(object = %url, bytes = meta.size, "downloading an ingest input");
                store
                    .download(&ObjectPath::from(name.as_str()), &local)
                    .await?;
                self.fetched.insert(
                    url,
                    Fetched {
                        local: local.clone(),
                        version,
                    },
                );
                out.push(local);
            }
        }
        Ok(out)
    }

    /// [`archive::discover`] over local and remote inputs: a local copy
    /// carries the URL it came from as its origin.
    pub async fn discover(&mut self, inputs: &[PathBuf]) -> Result<Vec<Input>> {
        let local = self.localize(inputs).await?;
        let mut found = archive::discover(&local)?;
        for input in &mut found {
            if let Some((url, _)) = self.fetched.iter().find(|(_, f)| f.local == input.path) {
                input.origin = Some(url.clone());
            }
        }
        Ok(found)
    }

    fn scratch(&mut self) -> Result<PathBuf> {
        if self.scratch.is_none() {
            self.scratch = Some(crate::engine::scratch_dir(
                &self.spill_dir,
                "ingest-download-",
            )?);
        }
        Ok(self
            .scratch
            .as_ref()
            .expect("just made")
            .path()
            .to_path_buf())
    }
}

/// A URL naming an input file (by its name) is that object in its parent
/// prefix; any other names a prefix.
fn split_object(location: &Location) -> (Location, Option<String>) {
    let prefix = location.prefix();
    let (parent, last) = prefix.rsplit_once('/').unwrap_or(("", prefix.as_str()));
    if !archive::is_input_name(last) {
        return (location.clone(), None);
    }
    let parent = parent.to_string();
    let dir = match location {
        Location::S3 { bucket, .. } => Location::S3 {
            bucket: bucket.clone(),
            prefix: parent,
        },
        Location::Hdfs { authority, .. } => Location::Hdfs {
            authority: authority.clone(),
            path: parent,
        },
        Location::Local(_) => unreachable!("remote inputs only"),
    };
    (dir, Some(last.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_url_is_an_object_and_anything_else_a_prefix() {
        let parse = |s: &str| Location::parse(s, Path::new("")).unwrap();
        let (dir, file) = split_object(&parse("s3://bkt/dumps/a_2024-01-01.tar.gz"));
        assert_eq!(dir.to_string(), "s3://bkt/dumps");
        assert_eq!(file.as_deref(), Some("a_2024-01-01.tar.gz"));
        let (dir, file) = split_object(&parse("s3://bkt/dumps/"));
        assert_eq!(dir.to_string(), "s3://bkt/dumps");
        assert_eq!(file, None);
        let (dir, file) = split_object(&parse("s3://bkt/x.tgz"));
        assert_eq!(dir.to_string(), "s3://bkt");
        assert_eq!(file.as_deref(), Some("x.tgz"));
        assert!(is_remote(Path::new("s3://bkt/x")));
        assert!(!is_remote(Path::new("file:///tmp/x")));
        assert!(!is_remote(Path::new("dumps/x.tar.gz")));
    }
}
