//! Reading the inputs once each and feeding their entries to one merge
//! worker per table, in bounded memory.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Job {
    /// Index into the run's archive reports.
    pub(super) index: usize,
    /// sha256 still to be taken, during extraction.
    pub(super) hash: bool,
    pub(super) input: Input,
    pub(super) only: Option<BTreeSet<String>>,
    pub(super) previous: Option<ArchiveRecord>,
}

pub(super) struct Extracted {
    /// Per job: extraction stats or why the archive was rejected.
    pub(super) archives: Vec<std::result::Result<ExtractStats, String>>,
    /// Per job: the sha256 taken while extracting (jobs with `hash`).
    pub(super) hashes: Vec<Option<String>>,
    pub(super) outcomes: Vec<EntryOutcome>,
    pub(super) schemas: BTreeMap<String, TableSchema>,
}

pub(super) enum Msg {
    Begin(EntryJob),
    Data(Vec<u8>, inflight::Permit),
    End,
    Abort(String),
}

/// The worker's view of the current entry's bytes. It holds the worker's
/// receiver for the entry (and gives it back after) so that it can move to
/// the thread that parses NDJSON ahead.
pub(super) struct ChannelReader<'a> {
    pub(super) rx: Receiver<Msg>,
    /// Read chunks go back to the extractor for reuse: a fresh 1 MiB
    /// buffer per chunk was zeroed, then unmapped when freed.
    pub(super) spent: &'a Sender<Vec<u8>>,
    pub(super) chunk: Vec<u8>,
    /// The chunk's place in the run's budget, given back with it.
    pub(super) permit: Option<inflight::Permit>,
    pub(super) pos: usize,
    pub(super) done: bool,
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            // Before waiting: a worker waiting for input holds no place in
            // the budget, so the extractor can always send it some.
            self.give_back();
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d, permit)) => {
                    self.chunk = d;
                    self.permit = Some(permit);
                }
                Ok(Msg::End) => self.done = true,
                Ok(Msg::Abort(reason)) => {
                    self.done = true;
                    return Err(io::Error::other(reason));
                }
                Ok(Msg::Begin(_)) | Err(_) => {
                    self.done = true;
                    return Err(io::Error::other("entry stream ended early"));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<'a> ChannelReader<'a> {
    pub(super) fn new(rx: Receiver<Msg>, spent: &'a Sender<Vec<u8>>) -> Self {
        Self {
            rx,
            spent,
            chunk: Vec::new(),
            permit: None,
            pos: 0,
            done: false,
        }
    }

    /// Returns a read chunk's buffer to the extractor's pool.
    fn recycle(&self, chunk: Vec<u8>) {
        // Not the reader's first, empty buffer: the extractor would take it
        // and grow it byte by byte.
        if chunk.capacity() >= CHUNK {
            let _ = self.spent.send(chunk);
        }
    }

    fn give_back(&mut self) {
        let spent = std::mem::take(&mut self.chunk);
        self.recycle(spent);
        self.permit = None;
        self.pos = 0;
    }

    /// Consumes the rest of the entry so the extractor never blocks on a
    /// worker that stopped reading.
    pub(super) fn drain(&mut self) {
        self.give_back();
        while !self.done {
            match self.rx.recv() {
                Ok(Msg::Data(chunk, _permit)) => self.recycle(chunk),
                _ => self.done = true,
            }
        }
    }
}

pub(super) fn worker_loop(
    mut worker: TableWorker,
    mut rx: Receiver<Msg>,
    spent: Sender<Vec<u8>>,
) -> (TableSchema, Vec<EntryOutcome>) {
    let mut outcomes = Vec::new();
    while let Ok(msg) = rx.recv() {
        let Msg::Begin(job) = msg else { continue };
        let mut reader = ChannelReader::new(rx, &spent);
        let outcome = worker.merge_entry(&job, &mut reader);
        reader.drain();
        rx = reader.rx;
        outcomes.push(outcome);
    }
    (worker.schema, outcomes)
}

pub(super) fn extract_all(
    jobs: &[Job],
    limits: archive::Limits,
    date: Option<NaiveDate>,
    config: &Config,
    registry: &Registry,
    settings: MergeSettings,
) -> Result<Extracted> {
    std::thread::scope(|scope| {
        let mut workers: HashMap<String, (Sender<Msg>, _)> = HashMap::new();
        let budget = inflight::Budget::new(CHUNKS_IN_FLIGHT);
        let (spent_tx, spent_rx) = channel::<Vec<u8>>();
        let mut archives = Vec::new();
        let mut hashes = Vec::new();
        for (n, job) in jobs.iter().enumerate() {
            let akey = manifest::key(&job.input.name);
            let mut first = true;
            let mut visit = |meta: archive::EntryMeta, r: &mut dyn Read| -> Result<()> {
                let table = meta.file.table.clone();
                if let Some(d) = date {
                    if meta.file.day != d {
                        // An archive of another day is that day's business;
                        // one that mixes days is refused.
                        let reason = if first {
                            OTHER_DAY.to_string()
                        } else {
                            format!("holds data for {}, not for --date {d}", meta.file.day)
                        };
                        return Err(Error::rejected(&meta.source, reason));
                    }
                }
                first = false;
                if job.only.as_ref().is_some_and(|only| !only.contains(&table)) {
                    return Ok(());
                }
                if !workers.contains_key(&table) {
                    let schema = registry.load(&table)?;
                    let worker =
                        TableWorker::new(schema, config.ingest.policy(&table), settings.clone());
                    // Unbounded: the budget bounds the chunks in it.
                    let (tx, rx) = channel();
                    let spent = spent_tx.clone();
                    let handle = std::thread::Builder::new()
                        .name(format!("merge-{table}"))
                        .spawn_scoped(scope, move || worker_loop(worker, rx, spent))
                        .map_err(|e| Error::data("starting a merge thread", e))?;
                    workers.insert(table.clone(), (tx, handle));
                }
                let tx = &workers[&table].0;
                let source = meta.source.clone();
                let send = |m: Msg| {
                    tx.send(m)
                        .map_err(|_| Error::data(&source, "merge thread stopped"))
                };
                send(Msg::Begin(EntryJob {
                    archive: n,
                    akey: akey.clone(),
                    meta,
                }))?;
                loop {
                    let permit = budget.acquire();
                    let mut chunk = spent_rx.try_recv().unwrap_or_default();
                    chunk.resize(CHUNK, 0);
                    let mut filled = 0;
                    // Fill whole chunks: tar entries read in 512-byte steps.
                    while filled < CHUNK {
                        match r.read(&mut chunk[filled..]) {
                            Ok(0) => break,
                            Ok(k) => filled += k,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                let err = archive::entry_error(&source, e);
                                send(Msg::Abort(err.to_string()))?;
                                return Err(err);
                            }
                        }
                    }
                    if filled == 0 {
                        let _ = spent_tx.send(chunk);
                        break;
                    }
                    chunk.truncate(filled);
                    send(Msg::Data(chunk, permit))?;
                }
                send(Msg::End)
            };
            let res = archive::for_each_entry(&job.input, limits, job.hash, &mut visit);
            hashes.push(res.as_ref().ok().and_then(|x| x.sha256.clone()));
            archives.push(res.map(|x| x.stats).map_err(|e| match e {
                Error::Rejected { reason, .. } if reason == OTHER_DAY => OTHER_DAY.to_string(),
                Error::Rejected { input, reason } => format!("{input}: {reason}"),
                other => other.to_string(),
            }));
        }
        let mut outcomes = Vec::new();
        let mut schemas = BTreeMap::new();
        for (table, (tx, handle)) in workers {
            drop(tx);
            let (schema, mut o) = handle
                .join()
                .map_err(|_| Error::data(format!("merge thread of {table}"), "panicked"))?;
            schemas.insert(table, schema);
            outcomes.append(&mut o);
        }
        Ok(Extracted {
            archives,
            hashes,
            outcomes,
            schemas,
        })
    })
}
