//! NDJSON rows parsed ahead on a thread of their own. A JSON line costs
//! several times what its CSV twin does, so with parsing and the typed row
//! loop on one thread an NDJSON table kept that thread at 100% and the
//! second core a third idle (inflate and Parquet encoding left it that).
//!
//! Records cross threads in flat chunks (every field's bytes back to back,
//! and their ends), read front to back on the other side: handing over
//! `ByteRecord`s themselves and recycling them put each record's two heap
//! buffers in the other core's cache, and the cache misses on them made
//! the parser thread ~1.3x slower than parsing on one thread.

use std::io::{self, Read};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::Scope;

use csv::ByteRecord;

use super::naming::Format;
use super::reader::{Next, RowSource, Rows};

/// Records per chunk: enough that a channel operation is rare, few enough
/// that the row loop starts soon.
const CHUNK_ROWS: usize = 1024;
/// Chunks parsed ahead of the row loop (~100 KiB each).
const CHUNKS_IN_FLIGHT: usize = 4;

/// What the reader found at one line; a row's fields are the next
/// `fields` entries of the chunk's `ends`.
struct Item {
    /// 1-based line.
    line: u64,
    next: Next,
    fields: usize,
}

#[derive(Default)]
struct Chunk {
    /// Field bytes of every row, back to back.
    bytes: Vec<u8>,
    /// End offset in `bytes` of every field.
    ends: Vec<usize>,
    items: Vec<Item>,
}

impl Chunk {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.items.clear();
    }
}

enum Msg {
    Header(Vec<String>),
    Chunk(Chunk),
    Failed(io::Error),
}

/// The row loop's end: [`RowSource`] over records parsed on another thread.
pub struct ParsedAhead {
    header: Vec<String>,
    rx: Receiver<Msg>,
    back: Sender<Chunk>,
    chunk: Chunk,
    /// Next item, next field and its first byte in `chunk`.
    item: usize,
    field: usize,
    start: usize,
    line: u64,
    ended: bool,
}

/// Starts parsing NDJSON from `reader` on a thread of `scope` named
/// `name`, and waits for the header (the keys of the first `sample`
/// lines). Dropping the result stops the parser at its next chunk.
pub fn spawn<'scope, R: Read + Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    reader: R,
    max_line: u64,
    sample: usize,
    name: String,
) -> io::Result<ParsedAhead> {
    let (tx, rx) = sync_channel::<Msg>(CHUNKS_IN_FLIGHT);
    let (back, spent) = channel::<Chunk>();
    std::thread::Builder::new()
        .name(name)
        .spawn_scoped(scope, move || parse(reader, max_line, sample, &tx, &spent))?;
    let header = match rx.recv() {
        Ok(Msg::Header(h)) => h,
        Ok(Msg::Failed(e)) => return Err(e),
        Ok(Msg::Chunk(_)) | Err(_) => return Err(io::Error::other("the NDJSON parser stopped")),
    };
    Ok(ParsedAhead {
        header,
        rx,
        back,
        chunk: Chunk::default(),
        item: 0,
        field: 0,
        start: 0,
        line: 0,
        ended: false,
    })
}

/// The parser thread: every record of the file, in order, ending with an
/// [`Next::End`] item or a [`Msg::Failed`]. Returns when the file ends or
/// the row loop hung up.
fn parse<R: Read>(
    reader: R,
    max_line: u64,
    sample: usize,
    tx: &SyncSender<Msg>,
    spent: &Receiver<Chunk>,
) {
    let mut rows = match Rows::open(reader, Format::Ndjson, max_line, sample) {
        Ok(rows) => rows,
        Err(e) => {
            let _ = tx.send(Msg::Failed(e));
            return;
        }
    };
    if tx.send(Msg::Header(rows.header().to_vec())).is_err() {
        return;
    }
    let mut rec = ByteRecord::new();
    loop {
        let mut chunk = spent.try_recv().unwrap_or_default();
        chunk.clear();
        let mut failed = None;
        let mut ended = false;
        while chunk.items.len() < CHUNK_ROWS {
            let next = match rows.next(&mut rec) {
                Ok(next) => next,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            let mut fields = 0;
            if next == Next::Row {
                for f in &rec {
                    chunk.bytes.extend_from_slice(f);
                    chunk.ends.push(chunk.bytes.len());
                }
                fields = rec.len();
            }
            ended = next == Next::End;
            chunk.items.push(Item {
                line: rows.line(),
                next,
                fields,
            });
            if ended {
                break;
            }
        }
        if tx.send(Msg::Chunk(chunk)).is_err() {
            return;
        }
        if let Some(e) = failed {
            let _ = tx.send(Msg::Failed(e));
            return;
        }
        if ended {
            return;
        }
    }
}

impl RowSource for ParsedAhead {
    fn header(&self) -> &[String] {
        &self.header
    }

    fn line(&self) -> u64 {
        self.line
    }

    fn next(&mut self, rec: &mut ByteRecord) -> io::Result<Next> {
        loop {
            let chunk = &mut self.chunk;
            if let Some(item) = chunk.items.get_mut(self.item) {
                self.item += 1;
                self.line = item.line;
                let next = std::mem::replace(&mut item.next, Next::End);
                match next {
                    Next::Row => {
                        rec.clear();
                        for &end in &chunk.ends[self.field..self.field + item.fields] {
                            rec.push_field(&chunk.bytes[self.start..end]);
                            self.start = end;
                        }
                        self.field += item.fields;
                    }
                    Next::End => self.ended = true,
                    Next::Bad { .. } => {}
                }
                return Ok(next);
            }
            if self.ended {
                return Ok(Next::End);
            }
            let spent = std::mem::take(&mut self.chunk);
            if spent.items.capacity() > 0 {
                let _ = self.back.send(spent);
            }
            (self.item, self.field, self.start) = (0, 0, 0);
            match self.rx.recv() {
                Ok(Msg::Chunk(chunk)) => self.chunk = chunk,
                Ok(Msg::Failed(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Ok(Msg::Header(_)) | Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("the NDJSON parser stopped"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item a source yields: (line, record or reason) until End or an
    /// error.
    type Seen = (Vec<(u64, Result<Vec<Vec<u8>>, String>)>, Option<String>);

    fn drain(rows: &mut dyn RowSource) -> Seen {
        let mut rec = ByteRecord::new();
        let mut got = Vec::new();
        loop {
            match rows.next(&mut rec) {
                Ok(Next::Row) => {
                    got.push((rows.line(), Ok(rec.iter().map(<[u8]>::to_vec).collect())))
                }
                Ok(Next::Bad { reason, .. }) => got.push((rows.line(), Err(reason))),
                Ok(Next::End) => return (got, None),
                Err(e) => return (got, Some(e.to_string())),
            }
        }
    }

    fn both(data: &[u8], max_line: u64, sample: usize) -> (Seen, Seen) {
        let mut direct = Rows::open(data, Format::Ndjson, max_line, sample).unwrap();
        let header = direct.header().to_vec();
        let direct = drain(&mut direct);
        let ahead = std::thread::scope(|scope| {
            let mut rows = spawn(scope, data, max_line, sample, "json-test".into()).unwrap();
            assert_eq!(rows.header(), header);
            drain(&mut rows)
        });
        (direct, ahead)
    }

    #[test]
    fn parsed_ahead_yields_what_the_reader_does_across_chunks() {
        // Several chunks' worth, with blank lines, bad JSON, unknown keys,
        // reordered keys and escapes, so records are reused across chunks.
        let mut data = Vec::new();
        for i in 0..(4 * CHUNK_ROWS as u64 + 17) {
            let line = match i % 11 {
                3 => String::new(),
                5 => "{\"a\":".to_string(),
                7 => format!("{{\"zz\":{i}}}"),
                9 => format!("{{\"b\":\"q\\\"{i}\",\"a\":{i}e2}}"),
                _ => format!("{{\"a\":{i},\"b\":\"v{i}\"}}"),
            };
            data.extend(line.as_bytes());
            data.push(b'\n');
        }
        let (direct, ahead) = both(&data, 1 << 20, 4);
        assert!(direct.0.len() > 3 * CHUNK_ROWS, "{}", direct.0.len());
        assert_eq!(direct.1, None);
        assert_eq!(ahead, direct);
    }

    #[test]
    fn parsed_ahead_reports_the_readers_error_after_the_rows_before_it() {
        let mut data = b"{\"a\":1}\n".repeat(2 * CHUNK_ROWS + 5);
        data.extend(b"{\"a\":\"");
        data.extend(std::iter::repeat_n(b'x', 300_000));
        data.extend(b"\"}\n{\"a\":2}\n");
        let (direct, ahead) = both(&data, 100_000, 5);
        assert!(direct.1.as_deref().unwrap().contains("ingest.max_line"));
        assert_eq!(ahead, direct);
        // A long line inside the sample fails the open itself.
        let err = std::thread::scope(|scope| {
            spawn(
                scope,
                &data[(2 * CHUNK_ROWS + 3) * 8..],
                100_000,
                5,
                "json-test".into(),
            )
            .err()
            .expect("the sample holds the long line")
        });
        assert!(err.to_string().contains("ingest.max_line"), "{err}");
    }

    #[test]
    fn a_row_loop_that_stops_early_stops_the_parser() {
        // Far more than the chunks in flight: the parser must notice the
        // hang-up instead of blocking on a full channel (the scope would
        // then never end).
        let data = b"{\"a\":1}\n".repeat(50 * CHUNK_ROWS);
        let read = std::thread::scope(|scope| {
            let mut rows = spawn(scope, data.as_slice(), 1 << 20, 5, "json-test".into()).unwrap();
            let mut rec = ByteRecord::new();
            for _ in 0..10 {
                assert_eq!(rows.next(&mut rec).unwrap(), Next::Row);
            }
            rows.line()
        });
        assert_eq!(read, 10);
    }
}
