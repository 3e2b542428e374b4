//! Streaming extraction: a `.tar.gz` (or a plain `.csv`, `.csv.gz`,
//! `.ndjson`, `.json.gz`) is read once, front to back, entry by entry; each
//! entry's bytes are handed to a visitor and nothing is unpacked to disk.
//! `tar::Archive::unpack` is never used: it silently skips `..` entries,
//! where we must reject the archive.
//!
//! Every entry is checked before its first byte is read: regular files only
//! (no symlinks, hard links, devices, FIFOs, sparse files), relative paths
//! without `..`, names matching `{table}_{date}_{batch_id}.ext`, no
//! duplicates, at most `max_entries`. The inflated stream is metered: more
//! than `max_uncompressed` bytes, or a ratio above `max_ratio`, is a bomb.
//! The gzip trailer (CRC, length) is read to the end, so a truncated
//! archive is rejected even when its tar part looked complete.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use super::naming::{parse_table_file, TableFile};
use crate::config::IngestConfig;
use crate::error::{Error, Result};

/// The ratio is checked only past this many inflated bytes: tiny files
/// (a header and a few rows) legitimately compress far better than data.
const RATIO_GRACE: u64 = 16 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_uncompressed: u64,
    pub max_entries: u64,
    pub max_ratio: u64,
}

impl Limits {
    pub fn from_config(c: &IngestConfig) -> Self {
        Self {
            max_uncompressed: c.max_uncompressed.as_u64(),
            max_entries: c.max_entries,
            max_ratio: c.max_ratio,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    /// A tar stream, gzip-compressed.
    TarGz,
    /// One table file, perhaps gzip-compressed.
    Plain(TableFile),
}

/// One file given to `ingest`, after directories are expanded.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    /// The file name: the manifest's key.
    pub name: String,
    pub size: u64,
    pub kind: InputKind,
    /// The object's URL when `path` is a local copy of one
    /// (`s3://bucket/dumps/a.tar.gz`): what reports and the manifest name,
    /// so `--retry-failed` fetches it again.
    pub origin: Option<String>,
}

impl Input {
    /// Where the input came from, as the manifest records it: the object's
    /// URL, else the canonical local path.
    pub fn recorded_path(&self) -> PathBuf {
        match &self.origin {
            Some(url) => PathBuf::from(url),
            None => self.path.canonicalize().unwrap_or(self.path.clone()),
        }
    }

    /// How reports and errors name the input.
    pub fn shown_path(&self) -> PathBuf {
        self.origin
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or(self.path.clone())
    }
}

/// A table file found in an input.
#[derive(Debug, Clone)]
pub struct EntryMeta {
    /// `archive.tar.gz!path/in/archive.csv`, or the file name of a plain
    /// input: how errors and quarantine records name the source.
    pub source: String,
    pub file: TableFile,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ExtractStats {
    pub entries: u64,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
}

fn is_archive(name: &str) -> bool {
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Whether a file of this name found in a directory (or under a prefix) is
/// an ingest input: an archive or a table file, not hidden.
pub fn is_input_name(name: &str) -> bool {
    !name.starts_with('.') && (is_archive(name) || parse_table_file(name).is_ok())
}

/// Classifies one path (not a directory).
pub fn input(path: &Path) -> Result<Input> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if !meta.is_file() {
        return Err(Error::rejected(
            path.display().to_string(),
            "not a regular file",
        ));
    }
    let kind = if is_archive(&name) {
        InputKind::TarGz
    } else {
        InputKind::Plain(
            parse_table_file(&name).map_err(|m| Error::rejected(path.display().to_string(), m))?,
        )
    };
    Ok(Input {
        path: path.to_path_buf(),
        name,
        size: meta.len(),
        kind,
        origin: None,
    })
}

/// Expands directories (one level, hidden files and unrelated names
/// skipped) and classifies files; sorted by path, duplicates removed. A file
/// named explicitly must be a valid input.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries = std::fs::read_dir(p).map_err(|e| Error::io(p, e))?;
            for e in entries {
                let e = e.map_err(|e| Error::io(p, e))?;
                let name = e.file_name().to_string_lossy().to_string();
                let is_file = e.file_type().map(|t| t.is_file()).unwrap_or(false);
                if !is_file {
                    continue;
                }
                if is_input_name(&name) {
                    out.push(input(&e.path())?);
                } else {
                    tracing::debug!(file = %e.path().display(), "not an ingest input; skipped");
                }
            }
        } else {
            out.push(input(p)?);
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    Ok(out)
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let hasher: Hasher = Rc::default();
    let (mut reader, _) = counted(path, Some(hasher.clone()))?;
    io::copy(&mut reader, &mut io::sink()).map_err(|e| Error::io(path, e))?;
    Ok(hex::encode(hasher.take().finalize()))
}

/// What an extraction read: its stats, and the sha256 of the input's
/// bytes when asked to hash them on the way.
#[derive(Debug, Clone, Default)]
pub struct Extraction {
    pub stats: ExtractStats,
    pub sha256: Option<String>,
}

type Hasher = Rc<RefCell<Sha256>>;

/// Counts (and optionally hashes) the bytes pulled from the file, so the
/// file is read once even when its sha256 is still to be learned.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    hash: Option<Hasher>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        if let Some(h) = &self.hash {
            h.borrow_mut().update(&buf[..n]);
        }
        Ok(n)
    }
}

fn counted(path: &Path, hash: Option<Hasher>) -> Result<(Counted<BufReader<File>>, Counter)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let count = Rc::new(Cell::new(0));
    Ok((
        Counted {
            inner: BufReader::with_capacity(256 << 10, file),
            count: count.clone(),
            hash,
        },
        count,
    ))
}

/// Meters the inflated stream against the bomb limits.
struct Metered<R> {
    inner: R,
    compressed: Rc<Cell<u64>>,
    inflated: Rc<Cell<u64>>,
    limits: Limits,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.inflated.get() + n as u64;
        self.inflated.set(total);
        if total > self.limits.max_uncompressed {
            return Err(bomb(format!(
                "decompression bomb: more than {} bytes uncompressed (ingest.max_uncompressed)",
                self.limits.max_uncompressed
            )));
        }
        let packed = self.compressed.get().max(1);
        if total > RATIO_GRACE && total / packed > self.limits.max_ratio {
            return Err(bomb(format!(
                "decompression bomb: {total} bytes from {packed} compressed, a ratio above {} (ingest.max_ratio)",
                self.limits.max_ratio
            )));
        }
        Ok(n)
    }
}

fn bomb(message: String) -> io::Error {
    io::Error::other(message)
}

type GzStream = Metered<MultiGzDecoder<Counted<BufReader<File>>>>;
type Counter = Rc<Cell<u64>>;

/// The metered inflated stream, and its compressed and inflated counters.
fn gz_reader(
    path: &Path,
    limits: Limits,
    hash: Option<Hasher>,
) -> Result<(GzStream, Counter, Counter)> {
    let (counted, compressed) = counted(path, hash)?;
    let inflated = Rc::new(Cell::new(0));
    Ok((
        Metered {
            inner: MultiGzDecoder::new(counted),
            compressed: compressed.clone(),
            inflated: inflated.clone(),
            limits,
        },
        compressed,
        inflated,
    ))
}

/// Why an entry's path is unacceptable, if it is.
fn check_path(raw: &[u8]) -> std::result::Result<&str, String> {
    let path = std::str::from_utf8(raw).map_err(|_| "entry path is not UTF-8".to_string())?;
    if path.contains('\0') || path.contains('\\') {
        return Err(format!(
            "entry path `{}` holds NUL or backslash",
            path.escape_debug()
        ));
    }
    if path.starts_with('/') {
        return Err(format!("entry path `{path}` is absolute"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("entry path `{path}` climbs out with `..`"));
    }
    Ok(path)
}

/// Reads `input` once and calls `visit` for each table file in it with a
/// reader of its (inflated) bytes. Any hostile entry, limit, or I/O error
/// rejects the whole input; entries already visited must then be discarded
/// by the caller (the merge keeps them in temporary files until commit).
/// With `hash`, the file's sha256 is computed from the same read. A file
/// whose size differs from `input.size` (still being written, or replaced)
/// is rejected: the size (and hash) recorded must describe the bytes
/// ingested.
pub fn for_each_entry(
    input: &Input,
    limits: Limits,
    hash: bool,
    visit: &mut dyn FnMut(EntryMeta, &mut dyn Read) -> Result<()>,
) -> Result<Extraction> {
    let hasher = hash.then(Hasher::default);
    let stats = extract(input, limits, hasher.clone(), visit)?;
    if stats.compressed_bytes != input.size {
        return Err(Error::rejected(
            input.path.display().to_string(),
            format!(
                "changed while being read: {} bytes when listed, {} read (is it still being written?)",
                input.size, stats.compressed_bytes
            ),
        ));
    }
    let Some(hasher) = hasher else {
        return Ok(Extraction {
            stats,
            sha256: None,
        });
    };
    let digest = hasher.take().finalize();
    Ok(Extraction {
        stats,
        sha256: Some(hex::encode(digest)),
    })
}

fn extract(
    input: &Input,
    limits: Limits,
    hash: Option<Hasher>,
    visit: &mut dyn FnMut(EntryMeta, &mut dyn Read) -> Result<()>,
) -> Result<ExtractStats> {
    let reject = |reason: String| Error::rejected(input.path.display().to_string(), reason);
    match &input.kind {
        InputKind::Plain(file) => {
            let meta = EntryMeta {
                source: input.name.clone(),
                file: file.clone(),
            };
            if file.gzip {
                let (mut r, compressed, inflated) = gz_reader(&input.path, limits, hash)?;
                visit(meta, &mut r)?;
                // Drain to the gzip trailer: a truncated file fails here.
                io::copy(&mut r, &mut io::sink()).map_err(|e| reject(e.to_string()))?;
                Ok(ExtractStats {
                    entries: 1,
                    compressed_bytes: compressed.get(),
                    uncompressed_bytes: inflated.get(),
                })
            } else {
                let (mut r, count) = counted(&input.path, hash)?;
                visit(meta, &mut r)?;
                // A visitor may skip the file; the hash needs all of it.
                io::copy(&mut r, &mut io::sink()).map_err(|e| Error::io(&input.path, e))?;
                Ok(ExtractStats {
                    entries: 1,
                    compressed_bytes: count.get(),
                    uncompressed_bytes: count.get(),
                })
            }
        }
        InputKind::TarGz => {
            let (r, compressed, inflated) = gz_reader(&input.path, limits, hash)?;
            let mut archive = tar::Archive::new(r);
            let mut seen = HashSet::new();
            let mut entries = 0u64;
            let iter = archive
                .entries()
                .map_err(|e| reject(format!("not a tar stream: {e}")))?;
            for entry in iter {
                let mut entry = entry.map_err(|e| reject(format!("corrupt archive: {e}")))?;
                let kind = entry.header().entry_type();
                let raw_path = entry.path_bytes().into_owned();
                let shown = String::from_utf8_lossy(&raw_path).to_string();
                let path = check_path(&raw_path).map_err(&reject)?.to_string();
                if kind.is_dir() || kind.is_pax_global_extensions() {
                    continue;
                }
                if kind.is_symlink() || kind.is_hard_link() {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).to_string())
                        .unwrap_or_default();
                    return Err(reject(format!(
                        "entry `{shown}` is a {} to `{target}`; links are not accepted",
                        if kind.is_symlink() {
                            "symlink"
                        } else {
                            "hard link"
                        }
                    )));
                }
                if !(kind.is_file() || kind.is_contiguous()) {
                    return Err(reject(format!(
                        "entry `{shown}` is not a regular file (type byte {:?}: device, FIFO or sparse)",
                        kind.as_byte() as char
                    )));
                }
                entries += 1;
                if entries > limits.max_entries {
                    return Err(reject(format!(
                        "more than {} entries (ingest.max_entries)",
                        limits.max_entries
                    )));
                }
                let file = parse_table_file(&path).map_err(&reject)?;
                if !seen.insert((file.table.clone(), file.day, file.batch_id.clone())) {
                    return Err(reject(format!(
                        "two entries for table `{}`, day {}, batch `{}`",
                        file.table, file.day, file.batch_id
                    )));
                }
                if file.gzip {
                    return Err(reject(format!(
                        "entry `{path}` is gzip inside a gzip archive; not accepted"
                    )));
                }
                let meta = EntryMeta {
                    source: format!("{}!{path}", input.name),
                    file,
                };
                visit(meta, &mut entry)?;
                // Whatever the visitor left unread is skipped by the next
                // `entries` step, still through the metered stream.
            }
            let mut rest = archive.into_inner();
            io::copy(&mut rest, &mut io::sink())
                .map_err(|e| reject(format!("after the last entry: {e}")))?;
            Ok(ExtractStats {
                entries,
                compressed_bytes: compressed.get(),
                uncompressed_bytes: inflated.get(),
            })
        }
    }
}

/// Turns an I/O error met while reading an entry into a rejection that
/// names the entry (bombs and truncation surface here).
pub fn entry_error(source: &str, e: io::Error) -> Error {
    let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("truncated: {e}")
    } else {
        e.to_string()
    };
    Error::rejected(source, reason)
}
