//! Names that come from partner data: `{table}_{date}_{batch_id}.csv` entry
//! names and CSV header cells. They become directory and column names, so
//! they are validated before anything is written.

use chrono::NaiveDate;

use crate::names as ident;

/// How a table file's rows are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Ndjson,
}

/// A table file's name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    pub table: String,
    pub day: NaiveDate,
    pub batch_id: String,
    pub format: Format,
    /// `.gz` on a plain (not archived) file.
    pub gzip: bool,
}

const MAX_BATCH_ID: usize = 64;

/// Parses the last path component of `name` as `{table}_{date}_{batch_id}.ext`
/// with ext `csv`, `ndjson` or `json` (optionally `.gz`). The table may
/// itself hold underscores, so the name is split from the right; the date
/// is `YYYY-MM-DD` or `YYYYMMDD`; the batch id is letters, digits and `-`.
pub fn parse_table_file(name: &str) -> Result<TableFile, String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let (stem, gzip) = match base.strip_suffix(".gz") {
        Some(s) => (s, true),
        None => (base, false),
    };
    let (stem, format) = if let Some(s) = stem.strip_suffix(".csv") {
        (s, Format::Csv)
    } else if let Some(s) = stem
        .strip_suffix(".ndjson")
        .or_else(|| stem.strip_suffix(".json"))
    {
        (s, Format::Ndjson)
    } else {
        return Err(format!(
            "`{base}` is not a .csv, .ndjson or .json file (optionally .gz)"
        ));
    };
    let pattern = || format!("`{base}` does not match {{table}}_{{date}}_{{batch_id}}");
    let mut parts = stem.rsplitn(3, '_');
    let batch_id = parts.next().filter(|s| !s.is_empty()).ok_or_else(pattern)?;
    let date = parts.next().ok_or_else(pattern)?;
    let table = parts.next().ok_or_else(pattern)?;
    if batch_id.len() > MAX_BATCH_ID
        || !batch_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!(
            "`{base}`: batch id `{batch_id}` must be 1-{MAX_BATCH_ID} letters, digits or `-`"
        ));
    }
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(date, "%Y%m%d"))
        .map_err(|_| format!("`{base}`: `{date}` is not a date (YYYY-MM-DD or YYYYMMDD)"))?;
    ident::validate(table).map_err(|m| format!("`{base}`: table name {m}"))?;
    // Table names are directory names: one spelling per table, whatever the
    // partner's case.
    Ok(TableFile {
        table: table.to_ascii_lowercase(),
        day,
        batch_id: batch_id.to_string(),
        format,
        gzip,
    })
}

/// A header cell as a column name: trimmed, lower case, runs of anything
/// but letters and digits become one `_`, a leading digit gets a `_` prefix.
/// `Amount (USD)` -> `amount_usd`. Empty or over-long results are errors.
pub fn normalize_column(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    for c in raw.trim().trim_start_matches('\u{feff}').chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    let name = if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{trimmed}")
    } else {
        trimmed.to_string()
    };
    if name.is_empty() {
        return Err(format!("column name `{raw}` has no letters or digits"));
    }
    ident::validate(&name).map_err(|m| format!("column name `{raw}`: {m}"))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_files_parse_from_the_right() {
        let f = parse_table_file("dir/token_transfers_2026-11-01_b-0007.csv").unwrap();
        assert_eq!(f.table, "token_transfers");
        assert_eq!(f.day, NaiveDate::from_ymd_opt(2026, 11, 1).unwrap());
        assert_eq!(f.batch_id, "b-0007");
        assert_eq!((f.format, f.gzip), (Format::Csv, false));
        let f = parse_table_file("Prices_20261102_9.json.gz").unwrap();
        assert_eq!(
            (f.table.as_str(), f.format, f.gzip),
            ("prices", Format::Ndjson, true)
        );
    }

    #[test]
    fn bad_table_file_names_say_why() {
        for (name, why) in [
            ("readme.txt", "not a .csv"),
            ("transfers_2026-11-01.csv", "does not match"),
            ("transfers_2026-13-01_1.csv", "not a date"),
            ("1bad_2026-11-01_1.csv", "table name"),
            ("drop table;_2026-11-01_1.csv", "table name"),
            ("t_2026-11-01_a.b.csv", "batch id"),
        ] {
            let err = parse_table_file(name).unwrap_err();
            assert!(err.contains(why), "{name}: {err}");
        }
    }

    #[test]
    fn columns_are_normalized() {
        assert_eq!(normalize_column(" Amount (USD) ").unwrap(), "amount_usd");
        assert_eq!(normalize_column("\u{feff}id").unwrap(), "id");
        assert_eq!(normalize_column("2nd-Value").unwrap(), "_2nd_value");
        assert!(normalize_column(" -- ").is_err());
        assert!(normalize_column(&"x".repeat(64)).is_err());
    }
}
