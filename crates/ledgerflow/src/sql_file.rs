//! A SQL file with a header of `-- key: value` comment lines, as models and
//! SQL checks are written: the `*.sql` files of a directory, a file's stem,
//! its header entries.

use std::path::Path;

use crate::error::{Error, Result};

/// One `-- key: value` line of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// 1-based line number in the file.
    pub line: usize,
    pub key: &'a str,
    pub value: &'a str,
}

/// The header's entries: the `-- key: value` lines before the first SQL
/// line. Blank lines and prose (a comment without a colon, or whose key has
/// a space) are skipped.
pub fn header(text: &str) -> Vec<Entry<'_>> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        let Some(comment) = trimmed.strip_prefix("--") else {
            if trimmed.is_empty() {
                continue;
            }
            break; // the header ends at the first SQL line
        };
        let Some((key, value)) = comment.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key.contains(' ') {
            continue; // prose, not a header entry
        }
        entries.push(Entry {
            line: i + 1,
            key,
            value: value.trim(),
        });
    }
    entries
}

/// The file's name without its extension: a model's table, a check's name.
pub fn stem(file: &str) -> String {
    Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Every `*.sql` file of `dir`, sorted by path: (path as shown in errors,
/// text).
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_ends_at_the_first_sql_line_and_skips_prose() {
        let text = "-- A model: prose.\n--\n-- key: day\n\n-- grain:day\nSELECT 1\n-- after: no";
        let got: Vec<(usize, &str, &str)> = header(text)
            .iter()
            .map(|e| (e.line, e.key, e.value))
            .collect();
        assert_eq!(got, [(3, "key", "day"), (5, "grain", "day")]);
        assert_eq!(stem("models/user_activity_agg.sql"), "user_activity_agg");
    }
}
