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
const CHUNK_ROWS: usize = 8192;
/// A chunk also ends once its fields (and quarantined lines) pass this
/// many bytes, so long lines do not multiply memory by `CHUNK_ROWS`: a
/// chunk holds at most this plus one line (`ingest.max_line`).
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks parsed ahead of the row loop. The parser must run well ahead:
/// the row loop pauses whenever the Parquet writer flushes a row group,
/// and with 4 chunks of 1024 rows the parser then stalled too (32 x 1024
/// rows ahead took 2.8% off a 1 GB ingest's wall time).
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
    /// Bytes of the quarantined lines' text among `items`.
    raw: usize,
}

impl Chunk {
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.items.clear();
        self.raw = 0;
    }

    fn full(&self) -> bool {
        self.items.len() >= CHUNK_ROWS || self.bytes.len() + self.raw >= CHUNK_BYTES
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
///
/// The outer error is the thread not starting (the machine's trouble, not
/// the file's); the inner one is the file's, as [`Rows::open`] gives it.
pub fn spawn<'scope, R: Read + Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    reader: R,
    max_line: u64,
    sample: usize,
    name: String,
) -> io::Result<io::Result<ParsedAhead>> {
    let (tx, rx) = sync_channel::<Msg>(CHUNKS_IN_FLIGHT);
    let (back, spent) = channel::<Chunk>();
    std::thread::Builder::new()
        .name(name)
        .spawn_scoped(scope, move || parse(reader, max_line, sample, &tx, &spent))?;
    let header = match rx.recv() {
        Ok(Msg::Header(h)) => h,
        Ok(Msg::Failed(e)) => return Ok(Err(e)),
        Ok(Msg::Chunk(_)) | Err(_) => return Ok(Err(stopped())),
    };
    Ok(Ok(ParsedAhead {
        header,
        rx,
        back,
        chunk: Chunk::default(),
        item: 0,
        field: 0,
        start: 0,
        line: 0,
        ended: false,
    }))
}

/// The parser thread ended without a word (it panicked).
fn stopped() -> io::Error {
    io::Error::other("the NDJSON parser stopped")
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
        while !chunk.full() {
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
            if let Next::Bad { raw, .. } = &next {
                chunk.raw += raw.len();
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
            // One that grew for a long line is freed, not kept.
            if spent.items.capacity() > 0 && spent.bytes.capacity() <= 2 * CHUNK_BYTES {
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
                    return Err(stopped());
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
            let mut rows = spawn(scope, data, max_line, sample, "json-test".into())
                .unwrap()
                .unwrap();
            assert_eq!(rows.header(), header);
            drain(&mut rows)
        });
        (direct, ahead)
    }

    #[test]
    fn parsed_ahead_yields_what_the_reader_does_across_chunks() {
        // Several chunks' worth, with blank lines, bad JSON, unknown keys,
        // reordered keys and escapes, spread over several chunks.
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
            .unwrap()
            .err()
            .expect("the sample holds the long line")
        });
        assert!(err.to_string().contains("ingest.max_line"), "{err}");
    }

    #[test]
    fn long_lines_end_a_chunk_early() {
        // 64 lines of ~200 KB: by rows they would all fit one chunk.
        let mut data = Vec::new();
        for i in 0..64 {
            data.extend(format!("{{\"n\":{i},\"s\":\"").as_bytes());
            data.extend(std::iter::repeat_n(b'x', 200_000));
            data.extend(b"\"}\n");
        }
        let (tx, rx) = sync_channel(64);
        let (_back, spent) = channel();
        parse(data.as_slice(), 1 << 20, 2, &tx, &spent);
        drop(tx);
        let mut rows = 0;
        let mut chunks = 0;
        for msg in rx {
            if let Msg::Chunk(c) = msg {
                chunks += 1;
                rows += c.items.iter().filter(|i| i.next == Next::Row).count();
                assert!(c.bytes.len() < CHUNK_BYTES + 210_000, "{}", c.bytes.len());
            }
        }
        assert_eq!(rows, 64);
        // Each chunk closes on the line that takes it past CHUNK_BYTES.
        assert!(
            chunks >= 64 / (CHUNK_BYTES / 200_000 + 1),
            "{chunks} chunks"
        );
        // And the rows are the reader's.
        let (direct, ahead) = both(&data, 1 << 20, 2);
        assert_eq!(ahead, direct);
    }

    #[test]
    fn a_row_loop_that_stops_early_stops_the_parser() {
        // Far more than the chunks in flight: the parser must notice the
        // hang-up instead of blocking on a full channel (the scope would
        // then never end).
        let data = b"{\"a\":1}\n".repeat(50 * CHUNK_ROWS);
        // On a thread of its own, so that a parser that never stops fails
        // the test instead of hanging it.
        let (done, ended) = sync_channel(1);
        std::thread::spawn(move || {
            let read = std::thread::scope(|scope| {
                let mut rows = spawn(scope, data.as_slice(), 1 << 20, 5, "json-test".into())
                    .unwrap()
                    .unwrap();
                let mut rec = ByteRecord::new();
                for _ in 0..10 {
                    assert_eq!(rows.next(&mut rec).unwrap(), Next::Row);
                }
                rows.line()
            });
            let _ = done.send(read);
        });
        let read = ended
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the scope ended: the parser stopped");
        assert_eq!(read, 10);
    }
}
