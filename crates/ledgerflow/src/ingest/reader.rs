//! Row readers over a table file's bytes: CSV (first record is the header)
//! and NDJSON (one object per line; the columns are the keys met in the
//! first rows). Both yield `csv::ByteRecord`s aligned with the header, an
//! empty field meaning null, so the rest of the merge is format-blind.
//!
//! A record longer than `max_line` stops the file: the CSV parser would
//! otherwise buffer a 1 GB line whole.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use csv::ByteRecord;
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::naming::Format;

const BUFFER: usize = 64 << 10;

/// Counts bytes pulled since the last record ended.
struct Guard<R> {
    inner: R,
    since: Rc<Cell<u64>>,
    max: u64,
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let since = self.since.get() + n as u64;
        self.since.set(since);
        if since > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a record longer than {} bytes (ingest.max_line)",
                    self.max - 2 * BUFFER as u64
                ),
            ));
        }
        Ok(n)
    }
}

/// What [`Rows::next`] found.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// A record, in the caller's `ByteRecord`.
    Row,
    /// A line that is not a row (bad JSON, unknown keys); the reason and
    /// the raw text, for quarantine.
    Bad {
        reason: String,
        raw: String,
    },
    End,
}

/// A table file's rows, read on the row loop's thread ([`Rows`]) or
/// parsed ahead on another ([`super::ahead`]).
pub trait RowSource {
    /// Raw header cells (before normalization).
    fn header(&self) -> &[String];
    /// Reads the next record into `rec`.
    fn next(&mut self, rec: &mut ByteRecord) -> io::Result<Next>;
    /// 1-based line of the last record returned.
    fn line(&self) -> u64;
}

impl<R: Read> RowSource for Rows<R> {
    fn header(&self) -> &[String] {
        Rows::header(self)
    }
    fn next(&mut self, rec: &mut ByteRecord) -> io::Result<Next> {
        Rows::next(self, rec)
    }
    fn line(&self) -> u64 {
        Rows::line(self)
    }
}

enum Kind<R: Read> {
    Csv(csv::Reader<Guard<R>>),
    Ndjson {
        lines: BufReader<Guard<R>>,
        buf: Vec<u8>,
        /// Lines read so far.
        read: u64,
        /// Lines read ahead while collecting the header: (line, text).
        ahead: VecDeque<(u64, Vec<u8>)>,
        keys: KeyOrder,
    },
}

pub struct Rows<R: Read> {
    kind: Kind<R>,
    header: Vec<String>,
    since: Rc<Cell<u64>>,
    line: u64,
}

impl<R: Read> Rows<R> {
    /// Opens `r`; reads the header (CSV) or the first `sample` lines
    /// (NDJSON). An empty file has an empty header and no rows.
    pub fn open(r: R, format: Format, max_line: u64, sample: usize) -> io::Result<Self> {
        let since = Rc::new(Cell::new(0));
        // The parsers read ahead by up to a buffer: allow for it so short
        // records never trip the limit.
        let guarded = Guard {
            inner: r,
            since: since.clone(),
            max: max_line + 2 * BUFFER as u64,
        };
        match format {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .buffer_capacity(BUFFER)
                    .from_reader(guarded);
                let mut rec = ByteRecord::new();
                let header = if reader.read_byte_record(&mut rec).map_err(csv_io)? {
                    rec.iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect()
                } else {
                    Vec::new()
                };
                since.set(0);
                Ok(Self {
                    kind: Kind::Csv(reader),
                    header,
                    since,
                    line: 1,
                })
            }
            Format::Ndjson => {
                let mut rows = Self {
                    kind: Kind::Ndjson {
                        lines: BufReader::with_capacity(BUFFER, guarded),
                        buf: Vec::new(),
                        read: 0,
                        ahead: VecDeque::new(),
                        keys: KeyOrder::default(),
                    },
                    header: Vec::new(),
                    since,
                    line: 0,
                };
                rows.read_ahead(sample)?;
                Ok(rows)
            }
        }
    }

    /// Raw header cells (before normalization).
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// 1-based line of the last record returned.
    pub fn line(&self) -> u64 {
        self.line
    }

    fn read_ahead(&mut self, sample: usize) -> io::Result<()> {
        let Kind::Ndjson {
            lines,
            buf,
            read,
            ahead,
            ..
        } = &mut self.kind
        else {
            unreachable!("ndjson only")
        };
        for _ in 0..sample {
            let Some(line) = read_line(lines, buf, &self.since, read)? else {
                break;
            };
            let text = buf.trim_ascii();
            if let Ok(Fields(fields)) = serde_json::from_slice::<Fields>(text) {
                for (k, _) in &fields {
                    if !self.header.iter().any(|h| h == k) {
                        self.header.push(k.to_string());
                    }
                }
            }
            ahead.push_back((line, text.to_vec()));
        }
        Ok(())
    }

    /// Reads the next record into `rec`.
    pub fn next(&mut self, rec: &mut ByteRecord) -> io::Result<Next> {
        match &mut self.kind {
            Kind::Csv(reader) => {
                self.since.set(0);
                if !reader.read_byte_record(rec).map_err(csv_io)? {
                    return Ok(Next::End);
                }
                self.line = rec.position().map_or(self.line + 1, |p| p.line());
                Ok(Next::Row)
            }
            Kind::Ndjson {
                lines,
                buf,
                read,
                ahead,
                keys,
            } => {
                let line = match ahead.pop_front() {
                    Some((line, text)) => {
                        *buf = text;
                        line
                    }
                    None => match read_line(lines, buf, &self.since, read)? {
                        Some(line) => line,
                        None => return Ok(Next::End),
                    },
                };
                self.line = line;
                Ok(json_record(&self.header, keys, buf.trim_ascii(), rec))
            }
        }
    }
}

/// Reads the next non-blank line into `buf`; its 1-based number.
fn read_line<R: BufRead>(
    lines: &mut R,
    buf: &mut Vec<u8>,
    since: &Cell<u64>,
    read: &mut u64,
) -> io::Result<Option<u64>> {
    loop {
        buf.clear();
        since.set(0);
        if lines.read_until(b'\n', buf)? == 0 {
            return Ok(None);
        }
        *read += 1;
        if !buf.trim_ascii().is_empty() {
            return Ok(Some(*read));
        }
    }
}

/// Which column each key of the previous line went to, by its position
/// in the line: lines of one file nearly always list their keys in one
/// order, so a key is compared with one column name, not searched for
/// among all of them (that search was ~2% of an ingest's CPU).
#[derive(Default)]
struct KeyOrder {
    column_of: Vec<usize>,
    /// Per column, the index of its field in the current line.
    field_of: Vec<usize>,
}

const NO_FIELD: usize = usize::MAX;

/// One NDJSON line as a record aligned with `header`, or why it is not one.
fn json_record(header: &[String], keys: &mut KeyOrder, text: &[u8], rec: &mut ByteRecord) -> Next {
    let raw = || String::from_utf8_lossy(text).into_owned();
    let fields = match serde_json::from_slice::<Fields>(text) {
        Ok(Fields(f)) => f,
        Err(e) if e.is_data() => {
            return Next::Bad {
                reason: "not a JSON object".into(),
                raw: raw(),
            }
        }
        Err(e) => {
            return Next::Bad {
                reason: format!("invalid JSON: {e}"),
                raw: raw(),
            }
        }
    };
    keys.field_of.clear();
    keys.field_of.resize(header.len(), NO_FIELD);
    for (i, (k, _)) in fields.iter().enumerate() {
        let col = match keys.column_of.get(i) {
            Some(&c) if header[c] == *k => c,
            _ => {
                let Some(c) = header.iter().position(|h| h == k) else {
                    return Next::Bad {
                        reason: format!("field `{k}` is not among the columns of the first rows"),
                        raw: raw(),
                    };
                };
                if i < keys.column_of.len() {
                    keys.column_of[i] = c;
                } else {
                    keys.column_of.push(c);
                }
                c
            }
        };
        // The last of duplicate keys wins, as in a JSON object read whole.
        keys.field_of[col] = i;
    }
    rec.clear();
    for &i in &keys.field_of {
        match fields.get(i) {
            Some((_, Some(v))) => rec.push_field(v.as_bytes()),
            _ => rec.push_field(b""),
        }
    }
    Next::Row
}

/// A JSON object's fields in order, as text (None for null): strings
/// borrowed from the line unless an escape needs unescaping. Reading into
/// `serde_json::Value` maps had been ~10% of an ingest's CPU.
struct Fields<'a>(Vec<(Cow<'a, str>, Option<Cow<'a, str>>)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                // Sized for a typical row, so a line costs one allocation.
                let mut fields = Vec::with_capacity(16);
                while let Some(Key(key)) = map.next_key::<Key>()? {
                    let value = match map.next_value::<Option<&'de RawValue>>()? {
                        Some(raw) => Some(value_text(raw).map_err(A::Error::custom)?),
                        None => None,
                    };
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Object)
    }
}

/// An object key, borrowed from the line unless it holds an escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyText;
        impl<'de> Visitor<'de> for KeyText {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyText)
    }
}

/// A JSON value as the text a CSV field would hold: strings unquoted;
/// numbers exactly as written (never through a float, which would round
/// an amount of wei), exponent forms spelled out; booleans as `true` /
/// `false`; arrays and objects as written.
fn value_text(raw: &RawValue) -> Result<Cow<'_, str>, serde_json::Error> {
    let text = raw.get();
    Ok(match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => Cow::Borrowed(&text[1..text.len() - 1]),
        Some(b'"') => Cow::Owned(serde_json::from_str::<String>(text)?),
        Some(b'-' | b'0'..=b'9') => match plain_number(text) {
            Some(plain) => Cow::Owned(plain),
            None => Cow::Borrowed(text),
        },
        _ => Cow::Borrowed(text),
    })
}

/// Exponents this far out fit no decimal column: such a number stays as
/// written (and its column becomes text).
const MAX_EXPONENT: u32 = 64;

/// A JSON number in exponent form (`1.5e3`, `2E-7`) as plain decimal text
/// (`1500`, `0.0000002`), by moving the point: exact, as the CSV field
/// `1500` would be. None for a number without an exponent (already plain)
/// or with one beyond [`MAX_EXPONENT`].
fn plain_number(text: &str) -> Option<String> {
    let (mantissa, exp) = text.split_once(['e', 'E'])?;
    let exp: i64 = exp.parse().ok()?;
    if exp.unsigned_abs() > u64::from(MAX_EXPONENT) {
        return None;
    }
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = [int, frac].concat();
    // Where the point falls among the digits once moved.
    let point = int.len() as i64 + exp;
    let (int, frac) = if point <= 0 {
        (
            String::from("0"),
            "0".repeat(point.unsigned_abs() as usize) + &digits,
        )
    } else if point as usize >= digits.len() {
        let pad = point as usize - digits.len();
        (digits + &"0".repeat(pad), String::new())
    } else {
        let (i, f) = digits.split_at(point as usize);
        (i.to_string(), f.to_string())
    };
    let int = match int.trim_start_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(rows: &mut Rows<&[u8]>) -> Vec<Result<Vec<String>, String>> {
        let mut rec = ByteRecord::new();
        let mut out = Vec::new();
        loop {
            match rows.next(&mut rec).unwrap() {
                Next::Row => out.push(Ok(rec
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect())),
                Next::Bad { reason, .. } => out.push(Err(reason)),
                Next::End => return out,
            }
        }
    }

    #[test]
    fn csv_header_rows_and_lines() {
        let data = b"id,name\n1,\"a\nb\"\n2,c\n" as &[u8];
        let mut rows = Rows::open(data, Format::Csv, 1024, 10).unwrap();
        assert_eq!(rows.header(), ["id", "name"]);
        let mut rec = ByteRecord::new();
        assert_eq!(rows.next(&mut rec).unwrap(), Next::Row);
        assert_eq!((rows.line(), &rec[1]), (2, b"a\nb" as &[u8]));
        assert_eq!(rows.next(&mut rec).unwrap(), Next::Row);
        assert_eq!(rows.line(), 4);
        assert_eq!(rows.next(&mut rec).unwrap(), Next::End);
    }

    #[test]
    fn ndjson_keys_become_columns() {
        let data =
            b"{\"a\":1,\"b\":\"x\"}\n\n{\"c\":true,\"a\":null}\nnope\n{\"z\":1}\n" as &[u8];
        let mut rows = Rows::open(data, Format::Ndjson, 1024, 2).unwrap();
        assert_eq!(rows.header(), ["a", "b", "c"]);
        let got = all(&mut rows);
        assert_eq!(got[0], Ok(vec!["1".into(), "x".into(), "".into()]));
        assert_eq!(got[1], Ok(vec!["".into(), "".into(), "true".into()]));
        assert!(got[2].as_ref().unwrap_err().contains("invalid JSON"));
        assert!(got[3].as_ref().unwrap_err().contains("`z`"));
    }

    #[test]
    fn ndjson_keys_in_any_order_land_in_their_columns() {
        // The first line sets the order remembered; later lines reorder,
        // drop, repeat and add keys.
        let data = br#"{"a":1,"b":2,"c":3}
{"c":30,"a":10,"b":20}
{"b":200}
{"a":1,"a":2,"c":3,"b":4}
{"a":5,"q":6}
{"a":7,"b":8,"c":9}
"# as &[u8];
        let mut rows = Rows::open(data, Format::Ndjson, 1024, 1).unwrap();
        assert_eq!(rows.header(), ["a", "b", "c"]);
        let got = all(&mut rows);
        let row = |v: [&str; 3]| Ok(v.map(String::from).to_vec());
        assert_eq!(got[0], row(["1", "2", "3"]));
        assert_eq!(got[1], row(["10", "20", "30"]));
        assert_eq!(got[2], row(["", "200", ""]));
        assert_eq!(got[3], row(["2", "4", "3"]));
        assert!(got[4].as_ref().unwrap_err().contains("`q`"));
        assert_eq!(got[5], row(["7", "8", "9"]));
    }

    #[test]
    fn ndjson_values_read_as_text() {
        let data = br#"{"s":"a\"b","n":12,"f":1.5,"b":false,"o":{"x":[1, 2]},"z":null,"n":13}
[1,2]
{"s":"plain","big":18446744073709551616}
"# as &[u8];
        let mut rows = Rows::open(data, Format::Ndjson, 1024, 1).unwrap();
        assert_eq!(rows.header(), ["s", "n", "f", "b", "o", "z"]);
        let got = all(&mut rows);
        let want = ["a\"b", "13", "1.5", "false", r#"{"x":[1, 2]}"#, ""];
        assert_eq!(got[0], Ok(want.map(String::from).to_vec()));
        assert_eq!(got[1], Err("not a JSON object".to_string()));
        assert!(
            got[2].as_ref().unwrap_err().contains("`big`"),
            "{:?}",
            got[2]
        );
        assert_eq!(rows.line(), 3);
    }

    #[test]
    fn ndjson_numbers_keep_their_exact_digits() {
        // Through an f64 the first would read 1.2345678901234568e23 and
        // the second 18446744073709552000: an amount of wei, rounded.
        let data = br#"{"wei":123456789012345678901234.5678,"big":18446744073709551617,"tiny":-0.000000000000000001,"e":1.5e3,"small":2E-7,"neg":-0.5e1,"zero":0e5,"far":1e400,"s":"1e3"}
"# as &[u8];
        let mut rows = Rows::open(data, Format::Ndjson, 1024, 1).unwrap();
        let got = all(&mut rows);
        let want = [
            "123456789012345678901234.5678",
            "18446744073709551617",
            "-0.000000000000000001",
            "1500",
            "0.0000002",
            "-5",
            "0",
            "1e400",
            "1e3",
        ];
        assert_eq!(got[0], Ok(want.map(String::from).to_vec()));
    }

    #[test]
    fn exponent_forms_move_the_point_exactly() {
        for (json, plain) in [
            ("1e0", Some("1")),
            ("1.50e1", Some("15.0")),
            ("12.5E+2", Some("1250")),
            ("-12.5e-3", Some("-0.0125")),
            ("0.001e2", Some("0.1")),
            ("7e-64", Some(&*format!("0.{}7", "0".repeat(63)))),
            ("7e65", None),
            ("42", None),
            ("4.2", None),
        ] {
            assert_eq!(plain_number(json).as_deref(), plain, "{json}");
        }
    }

    #[test]
    fn ndjson_lines_past_the_sample_keep_their_order_and_numbers() {
        // Many lines past the sample, blank and bad ones among them.
        let mut data = Vec::new();
        let mut want = Vec::new();
        for i in 1..=10_000u64 {
            let line = if i % 7 == 0 {
                String::new()
            } else if i % 1000 == 3 {
                want.push((i, Err("invalid".to_string())));
                "{\"n\":".to_string()
            } else {
                want.push((i, Ok(vec![i.to_string(), format!("v{i}")])));
                format!("{{\"s\":\"v{i}\",\"n\":{i}}}")
            };
            data.extend(line.as_bytes());
            data.push(b'\n');
        }
        let mut rows = Rows::open(data.as_slice(), Format::Ndjson, 1024, 5).unwrap();
        assert_eq!(rows.header(), ["s", "n"]);
        let mut got = Vec::new();
        let mut rec = ByteRecord::new();
        loop {
            match rows.next(&mut rec).unwrap() {
                Next::Row => got.push((
                    rows.line(),
                    Ok(vec![
                        String::from_utf8(rec[1].to_vec()).unwrap(),
                        String::from_utf8(rec[0].to_vec()).unwrap(),
                    ]),
                )),
                Next::Bad { reason, .. } => {
                    assert!(reason.contains("invalid JSON"), "{reason}");
                    got.push((rows.line(), Err("invalid".to_string())));
                }
                Next::End => break,
            }
        }
        assert_eq!(got.len(), want.len());
        assert_eq!(got, want);
        // A read error past the sample still stops the file.
        let mut data = b"{\"a\":1}\n".repeat(5000);
        data.extend(b"{\"a\":\"");
        data.extend(std::iter::repeat_n(b'x', 300_000));
        data.extend(b"\"}\n{\"a\":2}\n");
        let mut rows = Rows::open(data.as_slice(), Format::Ndjson, 100_000, 5).unwrap();
        let err = loop {
            match rows.next(&mut rec) {
                Ok(Next::End) => panic!("the long line was read"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("ingest.max_line"), "{err}");
    }

    #[test]
    fn a_huge_line_stops_the_file() {
        let mut data = b"id,v\n1,".to_vec();
        data.extend(std::iter::repeat_n(b'x', 300_000));
        data.extend(b"\n2,y\n");
        let mut rows = Rows::open(data.as_slice(), Format::Csv, 100_000, 10).unwrap();
        let mut rec = ByteRecord::new();
        let err = rows.next(&mut rec).unwrap_err();
        assert!(err.to_string().contains("ingest.max_line"), "{err}");
    }
}
