//! `generate --partner-dumps`: deterministic partner archives for tests and
//! demos. Each day has `archives_per_day` archives `partner_<day>_<n>.tar.gz`,
//! each holding one batch of three tables, whose schemas drift over the
//! days (day index 0, 1, 2, ... from the first day):
//!
//! | table | format | drift |
//! |---|---|---|
//! | `transfers` | CSV | day 1: `memo` added, `amount` int -> decimal(38,2); day 2: `block_time` date -> timestamp; day 3: `fee` removed, `id` int -> bigint |
//! | `prices` | NDJSON | day 2: `volume` added |
//! | `balances` | CSV | day 4: `as_of` holds integers (date -> int: incompatible) |
//!
//! Bad rows (a wrong field count, invalid UTF-8, an unparsable amount after
//! the inference sample) are salted in when `bad_rows` is on; the summary
//! says exactly how many rows each (table, day) has and how many are bad,
//! which the reconciliation tests compare with.
//!
//! [`hostile_archives`] writes one archive per attack ingest must reject.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use flate2::write::GzEncoder;
use flate2::Compression;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{Error, Result};

/// Rows of a batch before which no unparsable value is placed: the default
/// `ingest.infer_rows`, so bad values never steer type inference.
const SAMPLE_ROWS: usize = 1000;

#[derive(Debug, Clone)]
pub struct DumpParams {
    pub seed: u64,
    pub days: Vec<NaiveDate>,
    pub archives_per_day: usize,
    /// Rows of each table in each archive.
    pub rows_per_batch: usize,
    pub bad_rows: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TableCounts {
    pub rows: u64,
    pub bad: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DumpSummary {
    pub archives: Vec<PathBuf>,
    /// (table, day) -> rows and bad rows written.
    pub counts: BTreeMap<String, TableCounts>,
    pub uncompressed_bytes: u64,
}

impl DumpSummary {
    pub fn key(table: &str, day: NaiveDate) -> String {
        format!("{table}/{day}")
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |e| Error::io(&path, e)
}

/// A regular-file tar header with `name` written raw (no path checks: the
/// hostile archives need names `tar::Builder` would refuse).
fn header(name: &[u8], size: u64, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let raw = &mut h.as_old_mut().name;
    raw.fill(0);
    raw[..name.len()].copy_from_slice(name);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(kind);
    h.set_cksum();
    h
}

/// gzip level of generated archives: fast to write; `recompress` makes
/// others.
pub const ARCHIVE_GZIP_LEVEL: u32 = 1;

/// Writes a `.tar.gz` of `(name, bytes)` regular entries.
pub fn write_archive(path: &Path, entries: &[(String, Vec<u8>)]) -> Result<u64> {
    let err = io_err(path);
    let file = File::create(path).map_err(&err)?;
    let level = Compression::new(ARCHIVE_GZIP_LEVEL);
    let mut tar = tar::Builder::new(GzEncoder::new(file, level));
    let mut total = 0;
    for (name, data) in entries {
        let h = header(name.as_bytes(), data.len() as u64, tar::EntryType::Regular);
        tar.append(&h, data.as_slice()).map_err(&err)?;
        total += data.len() as u64;
    }
    tar.into_inner()
        .map_err(&err)?
        .finish()
        .map_err(&err)?
        .sync_all()
        .map_err(&err)?;
    Ok(total)
}

struct Batch {
    bytes: Vec<u8>,
    rows: u64,
    bad: u64,
}

fn addr(rng: &mut ChaCha8Rng) -> String {
    format!("0x{:040x}", rng.random::<u128>())
}

fn transfers(
    rng: &mut ChaCha8Rng,
    day: NaiveDate,
    di: usize,
    n: usize,
    bad: bool,
    seq: u64,
) -> Batch {
    let mut cols = vec!["id", "block_time", "from_addr", "to_addr", "amount"];
    if di < 3 {
        cols.push("fee");
    }
    if di >= 1 {
        cols.push("memo");
    }
    let mut out = Vec::with_capacity(n * 140);
    out.extend_from_slice(cols.join(",").as_bytes());
    out.push(b'\n');
    let mut bad_rows = 0;
    for i in 0..n {
        // Day 3 ids exceed 32 bits: int -> bigint.
        let id = if di >= 3 {
            5_000_000_000 + seq * 1_000_000 + i as u64
        } else {
            seq * 1_000_000 + i as u64
        };
        let time = if di >= 2 {
            format!("{day} {:02}:{:02}:{:02}", i % 24, (i / 24) % 60, i % 60)
        } else {
            day.to_string()
        };
        let amount = if di >= 1 {
            format!(
                "{}.{:02}",
                rng.random_range(0..1_000_000),
                rng.random_range(0..100)
            )
        } else {
            rng.random_range(0..1_000_000).to_string()
        };
        let mut fields = vec![id.to_string(), time, addr(rng), addr(rng), amount];
        if di < 3 {
            fields.push(rng.random_range(1..5000).to_string());
        }
        if di >= 1 {
            fields.push(if i % 3 == 0 {
                String::new()
            } else {
                format!("\"note, {i}\"")
            });
        }
        let mut line = fields.join(",").into_bytes();
        if bad && i > SAMPLE_ROWS && i % 250 == 7 {
            bad_rows += 1;
            match bad_rows % 3 {
                // One field short.
                1 => line = fields[..fields.len() - 1].join(",").into_bytes(),
                // Not a number where the registry says decimal.
                2 => {
                    fields[4] = "twelve".into();
                    line = fields.join(",").into_bytes();
                }
                // Invalid UTF-8 in a text column.
                _ => {
                    line = fields.join(",").into_bytes();
                    let at = line.iter().position(|b| *b == b'x').expect("an address");
                    line[at] = 0xff;
                }
            }
        }
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    Batch {
        bytes: out,
        rows: n as u64,
        bad: bad_rows,
    }
}

fn prices(rng: &mut ChaCha8Rng, day: NaiveDate, di: usize, n: usize) -> Batch {
    let mut out = Vec::with_capacity(n * 100);
    for i in 0..n {
        let mut obj = serde_json::Map::new();
        obj.insert("symbol".into(), ["ETH", "BTC", "USDC", "DAI"][i % 4].into());
        obj.insert(
            "price".into(),
            format!(
                "{}.{:04}",
                rng.random_range(1..5000),
                rng.random_range(0..10_000)
            )
            .into(),
        );
        obj.insert(
            "ts".into(),
            format!("{day}T{:02}:{:02}:00Z", (i / 60) % 24, i % 60).into(),
        );
        if di >= 2 {
            obj.insert(
                "volume".into(),
                rng.random_range(0..10_000_000_000i64).into(),
            );
        }
        out.extend_from_slice(serde_json::Value::Object(obj).to_string().as_bytes());
        out.push(b'\n');
    }
    Batch {
        bytes: out,
        rows: n as u64,
        bad: 0,
    }
}

fn balances(rng: &mut ChaCha8Rng, day: NaiveDate, di: usize, n: usize) -> Batch {
    let mut out = b"address,balance,as_of\n".to_vec();
    for _ in 0..n {
        // Day 4: the partner switched `as_of` to unix seconds.
        let as_of = if di >= 4 {
            day.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp()
                .to_string()
        } else {
            day.to_string()
        };
        let line = format!(
            "{},{},{as_of}\n",
            addr(rng),
            rng.random_range(0..1_000_000_000i64)
        );
        out.extend_from_slice(line.as_bytes());
    }
    Batch {
        bytes: out,
        rows: n as u64,
        bad: 0,
    }
}

/// Writes the partner archives of `params.days` into `dir`.
pub fn write_partner_dumps(dir: &Path, params: &DumpParams) -> Result<DumpSummary> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut summary = DumpSummary::default();
    for (di, day) in params.days.iter().enumerate() {
        for a in 0..params.archives_per_day {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed ^ ((di as u64) << 32) ^ a as u64);
            let seq = (di * params.archives_per_day + a) as u64;
            let batch_id = format!("{a:04}");
            let n = params.rows_per_batch;
            let mut entries = Vec::new();
            for (table, ext, batch) in [
                (
                    "transfers",
                    "csv",
                    transfers(&mut rng, *day, di, n, params.bad_rows, seq),
                ),
                ("prices", "ndjson", prices(&mut rng, *day, di, n)),
                ("balances", "csv", balances(&mut rng, *day, di, n)),
            ] {
                let c = summary
                    .counts
                    .entry(DumpSummary::key(table, *day))
                    .or_default();
                c.rows += batch.rows;
                c.bad += batch.bad;
                entries.push((format!("{day}/{table}_{day}_{batch_id}.{ext}"), batch.bytes));
            }
            let path = dir.join(format!("partner_{day}_{a:04}.tar.gz"));
            summary.uncompressed_bytes += write_archive(&path, &entries)?;
            summary.archives.push(path);
        }
    }
    Ok(summary)
}

/// Rewrites a gzip file at compression `level` (1-9), its content
/// unchanged: the generator writes [`ARCHIVE_GZIP_LEVEL`] for speed, while
/// partners' tools default to 6, which inflates slower.
pub fn recompress(path: &Path, level: u32) -> Result<()> {
    let err = io_err(path);
    let tmp = path.with_extension("recompress.tmp");
    let mut input = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(
        256 << 10,
        File::open(path).map_err(&err)?,
    ));
    let out = File::create(&tmp).map_err(&err)?;
    let mut gz = GzEncoder::new(
        std::io::BufWriter::with_capacity(256 << 10, out),
        Compression::new(level),
    );
    std::io::copy(&mut input, &mut gz).map_err(&err)?;
    let out = gz
        .finish()
        .map_err(&err)?
        .into_inner()
        .map_err(|e| err(e.into_error()))?;
    out.sync_all().map_err(&err)?;
    std::fs::rename(&tmp, path).map_err(&err)
}

/// Sizes of the hostile archives that are about sizes.
#[derive(Debug, Clone)]
pub struct HostileParams {
    pub day: NaiveDate,
    /// Zeros in the ratio bomb (must exceed 16 MiB to be checked).
    pub bomb_bytes: u64,
    /// Length of the one huge CSV line.
    pub huge_line_bytes: usize,
}

impl Default for HostileParams {
    fn default() -> Self {
        Self {
            day: NaiveDate::from_ymd_opt(2026, 11, 1).expect("a date"),
            bomb_bytes: 64 << 20,
            huge_line_bytes: 17 << 20,
        }
    }
}

/// One archive per attack, in `dir`; returns (path, words the rejection
/// reason must contain).
pub fn hostile_archives(dir: &Path, p: &HostileParams) -> Result<Vec<(PathBuf, &'static str)>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let day = p.day;
    let ok_name = format!("transfers_{day}_0001.csv");
    let csv = b"id,amount\n1,2\n".to_vec();
    let mut out = Vec::new();
    let raw = |name: &str, entries: Vec<(tar::Header, Vec<u8>)>| -> Result<PathBuf> {
        let path = dir.join(name);
        let err = io_err(&path);
        let file = File::create(&path).map_err(&err)?;
        let mut tar = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
        for (h, data) in entries {
            tar.append(&h, data.as_slice()).map_err(&err)?;
        }
        tar.into_inner().map_err(&err)?.finish().map_err(&err)?;
        Ok(path)
    };
    let file = |name: &str, data: &[u8]| {
        (
            header(name.as_bytes(), data.len() as u64, tar::EntryType::Regular),
            data.to_vec(),
        )
    };
    let link = |name: &str, target: &str, kind: tar::EntryType| {
        let mut h = header(name.as_bytes(), 0, kind);
        h.set_link_name_literal(target).expect("short target");
        h.set_cksum();
        (h, Vec::new())
    };
    // A good entry first: its rows must not survive the rejection.
    let good = file(&ok_name, &csv);
    out.push((
        raw(
            "dotdot.tar.gz",
            vec![
                good.clone(),
                file(&format!("../transfers_{day}_0002.csv"), &csv),
            ],
        )?,
        "..",
    ));
    out.push((
        raw(
            "absolute.tar.gz",
            vec![file(&format!("/tmp/transfers_{day}_0002.csv"), &csv)],
        )?,
        "absolute",
    ));
    out.push((
        raw(
            "symlink.tar.gz",
            vec![
                good.clone(),
                link(
                    &format!("transfers_{day}_0002.csv"),
                    "/etc/passwd",
                    tar::EntryType::Symlink,
                ),
            ],
        )?,
        "symlink",
    ));
    out.push((
        raw(
            "hardlink.tar.gz",
            vec![
                good.clone(),
                link(
                    &format!("transfers_{day}_0002.csv"),
                    &ok_name,
                    tar::EntryType::Link,
                ),
            ],
        )?,
        "hard link",
    ));
    out.push((
        raw(
            "device.tar.gz",
            vec![(
                header(
                    format!("transfers_{day}_0002.csv").as_bytes(),
                    0,
                    tar::EntryType::Char,
                ),
                Vec::new(),
            )],
        )?,
        "not a regular file",
    ));
    out.push((
        raw(
            "badname.tar.gz",
            vec![good.clone(), file("notes.txt", b"hello")],
        )?,
        "not a .csv",
    ));
    out.push((
        raw(
            "badtable.tar.gz",
            vec![file(&format!("drop table;_{day}_0001.csv"), &csv)],
        )?,
        "table name",
    ));
    out.push((
        raw("badcolumn.tar.gz", vec![file(&ok_name, b"id,--\n1,2\n")])?,
        "no letters or digits",
    ));
    out.push((
        raw("duplicate.tar.gz", vec![good.clone(), good.clone()])?,
        "two entries",
    ));
    // Ratio bomb: zeros compress ~1000x.
    {
        let path = dir.join("bomb.tar.gz");
        let err = io_err(&path);
        let f = File::create(&path).map_err(&err)?;
        let mut tar = tar::Builder::new(GzEncoder::new(f, Compression::best()));
        let h = header(
            format!("transfers_{day}_0003.csv").as_bytes(),
            p.bomb_bytes,
            tar::EntryType::Regular,
        );
        tar.append(&h, std::io::Read::take(std::io::repeat(0), p.bomb_bytes))
            .map_err(&err)?;
        tar.into_inner().map_err(&err)?.finish().map_err(&err)?;
        out.push((path, "decompression bomb"));
    }
    // Truncated: a good archive cut short.
    {
        let full = dir.join("truncated.tar.gz");
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut body = b"id,v\n".to_vec();
        for i in 0..20_000 {
            body.extend_from_slice(format!("{i},{}\n", rng.random::<u64>()).as_bytes());
        }
        write_archive(&full, &[(ok_name.clone(), body)])?;
        let bytes = std::fs::read(&full).map_err(&io_err(&full))?;
        std::fs::write(&full, &bytes[..bytes.len() / 2]).map_err(&io_err(&full))?;
        out.push((full, "truncated"));
    }
    // One line longer than ingest.max_line; random text so the ratio check
    // does not catch it first.
    {
        let path = dir.join("hugeline.tar.gz");
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut body = b"id,v\n1,".to_vec();
        body.extend((0..p.huge_line_bytes).map(|_| b'a' + rng.random_range(0..26u8)));
        body.push(b'\n');
        write_archive(&path, &[(ok_name.clone(), body)])?;
        out.push((path, "ingest.max_line"));
    }
    Ok(out)
}
