//! Bad rows: `<batch root>/_quarantine/<table>/date=D/bad-<key>.ndjson`, one
//! JSON object per row with the source file, line, column and reason, and
//! the raw fields. Written under a temporary name and committed with the
//! partition, so a rejected archive leaves no quarantine behind either.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Serialize;

use crate::day::partition_dir;
use crate::error::{Error, Result};

pub const DIR: &str = "_quarantine";

#[derive(Debug, Serialize)]
pub struct BadRow<'a> {
    pub file: &'a str,
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<&'a str>,
    pub reason: &'a str,
    pub raw: &'a str,
}

/// The quarantine of a partition, relative to the batch layer.
pub fn prefix(table: &str, day: NaiveDate) -> object_store::path::Path {
    object_store::path::Path::from(format!("{DIR}/{table}/{}", partition_dir(day)))
}

/// The quarantine of a partition under a local root.
pub fn partition(root: &Path, table: &str, day: NaiveDate) -> PathBuf {
    root.join(prefix(table, day).as_ref())
}

/// Opened on the first bad row only.
pub struct Quarantine {
    dir: PathBuf,
    tmp_name: String,
    file: Option<BufWriter<File>>,
    pub rows: u64,
}

impl Quarantine {
    pub fn new(root: &Path, table: &str, day: NaiveDate, tmp_name: String) -> Self {
        Self {
            dir: partition(root, table, day),
            tmp_name,
            file: None,
            rows: 0,
        }
    }

    pub fn tmp_path(&self) -> PathBuf {
        self.dir.join(&self.tmp_name)
    }

    pub fn write(&mut self, row: &BadRow<'_>) -> Result<()> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
            let path = self.tmp_path();
            let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
            self.file = Some(BufWriter::new(f));
        }
        let path = self.tmp_path();
        let w = self.file.as_mut().expect("opened above");
        serde_json::to_writer(&mut *w, row)
            .map_err(|e| Error::data(path.display().to_string(), e))?;
        w.write_all(b"\n").map_err(|e| Error::io(&path, e))?;
        self.rows += 1;
        Ok(())
    }

    /// Flushes; returns the temporary file if any row was written.
    pub fn finish(mut self) -> Result<Option<PathBuf>> {
        match self.file.take() {
            None => Ok(None),
            Some(mut w) => {
                let path = self.tmp_path();
                w.flush().map_err(|e| Error::io(&path, e))?;
                w.into_inner()
                    .map_err(|e| Error::io(&path, e.into_error()))?
                    .sync_all()
                    .map_err(|e| Error::io(&path, e))?;
                Ok(Some(path))
            }
        }
    }
}
