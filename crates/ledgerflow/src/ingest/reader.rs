//! Row readers over a table file's bytes: CSV (first record is the header)
//! and NDJSON (one object per line; the columns are the keys met in the
//! first rows). Both yield `csv::ByteRecord`s aligned with the header, an
//! empty field meaning null, so the rest of the merge is format-blind.
//!
//! A record longer than `max_line` stops the file: the CSV parser would
//! otherwise buffer a 1 GB line whole.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use csv::ByteRecord;
use serde_json::{Map, Value};

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

/// A line parsed as an object, or (reason, raw text).
type Parsed = Result<Map<String, Value>, (String, String)>;

enum Kind<R: Read> {
    Csv(csv::Reader<Guard<R>>),
    Ndjson {
        lines: BufReader<Guard<R>>,
        buf: Vec<u8>,
        /// Parsed objects read ahead while collecting the header.
        ahead: VecDeque<(u64, Parsed)>,
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
                        ahead: VecDeque::new(),
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
        for _ in 0..sample {
            let Some((line, parsed)) = self.read_json_line()? else {
                break;
            };
            if let Ok(obj) = &parsed {
                for k in obj.keys() {
                    if !self.header.iter().any(|h| h == k) {
                        self.header.push(k.clone());
                    }
                }
            }
            if let Kind::Ndjson { ahead, .. } = &mut self.kind {
                ahead.push_back((line, parsed));
            }
        }
        Ok(())
    }

    /// The next non-blank line as an object (or why it is not one).
    fn read_json_line(&mut self) -> io::Result<Option<(u64, Parsed)>> {
        let Kind::Ndjson { lines, buf, .. } = &mut self.kind else {
            unreachable!("ndjson only")
        };
        loop {
            buf.clear();
            self.since.set(0);
            if lines.read_until(b'\n', buf)? == 0 {
                return Ok(None);
            }
            self.line += 1;
            let text = buf.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let parsed = match serde_json::from_slice::<Value>(text) {
                Ok(Value::Object(m)) => Ok(m),
                Ok(_) => Err("not a JSON object".to_string()),
                Err(e) => Err(format!("invalid JSON: {e}")),
            };
            return Ok(Some((
                self.line,
                parsed.map_err(|r| (r, String::from_utf8_lossy(text).into_owned())),
            )));
        }
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
            Kind::Ndjson { ahead, .. } => {
                let next = match ahead.pop_front() {
                    Some(x) => Some(x),
                    None => self.read_json_line()?,
                };
                let Some((line, parsed)) = next else {
                    return Ok(Next::End);
                };
                self.line = line;
                let obj = match parsed {
                    Ok(o) => o,
                    Err((reason, raw)) => return Ok(Next::Bad { reason, raw }),
                };
                if let Some(k) = obj.keys().find(|k| !self.header.contains(k)) {
                    return Ok(Next::Bad {
                        reason: format!("field `{k}` is not among the columns of the first rows"),
                        raw: Value::Object(obj).to_string(),
                    });
                }
                rec.clear();
                for h in &self.header {
                    match obj.get(h) {
                        None | Some(Value::Null) => rec.push_field(b""),
                        Some(Value::String(s)) => rec.push_field(s.as_bytes()),
                        Some(Value::Bool(b)) => rec.push_field(if *b { b"true" } else { b"false" }),
                        Some(v) => rec.push_field(v.to_string().as_bytes()),
                    }
                }
                Ok(Next::Row)
            }
        }
    }
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
