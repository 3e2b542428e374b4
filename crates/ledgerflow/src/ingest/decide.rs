//! What to do with each input: load, skip (already loaded), replace (a
//! changed archive under a policy) or reject.

use super::*;

/// What to do with one input.
#[derive(Debug, Clone)]
pub(super) enum Decision {
    Load {
        /// Only these tables (a partial archive's failed ones).
        only: Option<BTreeSet<String>>,
        /// The record of an earlier version or attempt.
        previous: Option<ArchiveRecord>,
        replaced: bool,
    },
    Unchanged,
    /// The same bytes were loaded under another name.
    SameContentAs(String),
    Reject(String),
}

/// `same_content`: the name of an archive with these bytes, loaded before
/// or being loaded in this run.
pub(super) fn decide(
    input: &Input,
    sha: &str,
    previous: Option<ArchiveRecord>,
    same_content: Option<String>,
    config: &Config,
    opts: &IngestOptions,
) -> Decision {
    let Some(prev) = previous else {
        if let Some(other) = same_content.filter(|o| *o != input.name) {
            return Decision::SameContentAs(other);
        }
        return Decision::Load {
            only: None,
            previous: None,
            replaced: false,
        };
    };
    if prev.sha256 == sha && prev.size == input.size {
        return match prev.state {
            ArchiveState::Partial if opts.retry_failed => Decision::Load {
                only: Some(prev.failed_tables.iter().cloned().collect()),
                previous: Some(prev),
                replaced: false,
            },
            _ => Decision::Unchanged,
        };
    }
    match config.ingest.on_changed_archive {
        ChangedArchivePolicy::Error => Decision::Reject(format!(
            "an archive of this name was ingested with sha256 {} ({} bytes); this one has sha256 {sha} ({} bytes) (ingest.on_changed_archive = \"error\")",
            prev.sha256, prev.size, input.size
        )),
        ChangedArchivePolicy::Replace => Decision::Load {
            only: None,
            previous: Some(prev),
            replaced: true,
        },
    }
}

/// The sha256 (empty while it is left to extraction) and decision for an
/// input whose name is new to this run.
pub(super) fn decide_input(
    input: &Input,
    sizes: &HashMap<u64, usize>,
    loading: &HashMap<String, String>,
    manifest: &Manifest,
    config: &Config,
    opts: &IngestOptions,
) -> Result<(String, Decision)> {
    let previous = manifest.get(&input.name)?;
    // A new name of a size never loaded (nor twice in this run) cannot be
    // content already loaded: its sha256 is taken during extraction,
    // saving a whole read of the file before it.
    let hash_first = opts.dry_run
        || previous.is_some()
        || sizes[&input.size] > 1
        || manifest.size_seen(input.size)?;
    if !hash_first {
        return Ok((String::new(), decide(input, "", None, None, config, opts)));
    }
    let sha = archive::sha256_file(&input.path)?;
    let same_content = match loading.get(&sha) {
        Some(name) => Some(name.clone()),
        None => manifest.by_sha(&sha)?.map(|r| r.name),
    };
    let decision = decide(input, &sha, previous, same_content, config, opts);
    Ok((sha, decision))
}
