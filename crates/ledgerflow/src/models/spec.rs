//! One model file: a header of `-- key: value` comment lines, then SQL.
//!
//! ```sql
//! -- key: day, address          primary key of the output table
//! -- grain: day                 day | realtime
//! -- write: replace_day         replace_day | upsert
//! -- partition: day             column replaced per day (default: first key column)
//! -- depends_on: other_model    runs after it (comma separated)
//! -- check: not_null(address)   a data-quality check (one per line; see checks::spec)
//! -- datafusion: optimizer.repartition_aggregations = false
//!                               a DataFusion setting for this model's query alone
//! SELECT ... WHERE ts >= $start AND ts < $end
//! ```
//! The run window is bound as parameters (`$day`, `$start`, `$end`,
//! `$run_at`), never formatted into the SQL.

use crate::checks::spec::{self as check, CheckSpec};
use crate::error::{Error, Result};
use crate::names as ident;
use crate::sql_file;

/// How a model's rows land in its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Delete every row whose `column` equals the run's day, then insert.
    ReplaceDay { column: String },
    /// `INSERT .. ON CONFLICT (key) DO UPDATE`, after de-duplicating keys.
    Upsert,
    /// Delete every row whose timestamp `column` is one of `minutes`
    /// (microseconds, UTC), then insert: the realtime loop's write, which
    /// also drops minutes a reorg emptied.
    ReplaceMinutes { column: String, minutes: Vec<i64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    /// One run per closed day.
    Day,
    /// Minute rows of the open day, refreshed as it grows.
    Realtime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Table name: the file stem.
    pub name: String,
    /// The file it came from, for errors.
    pub file: String,
    pub key: Vec<String>,
    pub grain: Grain,
    pub write: WriteMode,
    pub depends_on: Vec<String>,
    /// Declared checks, in header order.
    pub checks: Vec<CheckSpec>,
    /// `-- datafusion: key = value` lines: DataFusion settings for this
    /// model's own query, on top of the session's (`[engine.datafusion]`),
    /// as (`datafusion.`-prefixed key, value), checked when parsed.
    pub datafusion: Vec<(String, String)>,
    pub sql: String,
}

impl ModelSpec {
    pub fn parse(file: &str, text: &str) -> Result<ModelSpec> {
        let err = |line: usize, message: String| Error::Model {
            file: file.to_string(),
            line,
            message,
        };
        let name = sql_file::stem(file);
        ident::validate(&name).map_err(|m| err(1, format!("model name (file stem): {m}")))?;

        let (mut key, mut grain, mut write, mut partition, mut depends_on) =
            (None, None, None, None, Vec::new());
        let mut checks = Vec::new();
        let mut datafusion = Vec::new();
        for sql_file::Entry {
            line: n,
            key: k,
            value: v,
        } in sql_file::header(text)
        {
            let list = |v: &str| -> Result<Vec<String>> {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|s| ident::validate(&s).map(|_| s).map_err(|m| err(n, m)))
                    .collect()
            };
            match k {
                "key" => key = Some(list(v)?),
                "grain" => {
                    grain = Some(match v {
                        "day" => Grain::Day,
                        "realtime" => Grain::Realtime,
                        _ => return Err(err(n, format!("grain `{v}`: expected day or realtime"))),
                    })
                }
                "write" => {
                    write = Some(match v {
                        "replace_day" | "upsert" => v.to_string(),
                        _ => {
                            return Err(err(
                                n,
                                format!("write `{v}`: expected replace_day or upsert"),
                            ))
                        }
                    })
                }
                "partition" => partition = Some(list(v)?.into_iter().next().unwrap_or_default()),
                "depends_on" => depends_on = list(v)?,
                "check" => checks.push(check::parse(v).map_err(|m| err(n, m))?),
                "datafusion" => datafusion.push(setting(v).map_err(|m| err(n, m))?),
                other => {
                    return Err(err(
                        n,
                        format!("unknown header `{other}` (expected key, grain, write, partition, depends_on, check, datafusion)"),
                    ))
                }
            }
        }
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| err(1, "missing header `-- key: col[, col]`".into()))?;
        let grain =
            grain.ok_or_else(|| err(1, "missing header `-- grain: day|realtime`".into()))?;
        let write = match write.as_deref() {
            Some("upsert") => WriteMode::Upsert,
            Some(_) => WriteMode::ReplaceDay {
                column: partition.unwrap_or_else(|| key[0].clone()),
            },
            None => {
                return Err(err(
                    1,
                    "missing header `-- write: replace_day|upsert`".into(),
                ))
            }
        };
        Ok(ModelSpec {
            name,
            file: file.to_string(),
            key,
            grain,
            write,
            depends_on,
            checks,
            datafusion,
            sql: text.to_string(),
        })
    }

    /// Finds the file line of a planning error: the `Line: N` DataFusion
    /// reports for parse errors, else the first line naming the identifier
    /// the error quotes, else the first SQL line.
    pub fn error_line(&self, message: &str) -> usize {
        if let Some(rest) = message.split("Line: ").nth(1) {
            if let Ok(n) = rest
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
            {
                return n;
            }
        }
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect()
        };
        // Quoted names, and the bare name in "No field named x".
        let mut quoted: Vec<String> = message
            .split(['\'', '"', '`'])
            .skip(1)
            .step_by(2)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        quoted.extend(
            message
                .split("named ")
                .skip(1)
                .map(ident)
                .filter(|s| !s.is_empty()),
        );
        for word in quoted {
            let word = word.trim_end_matches('.');
            let bare = word.rsplit('.').next().unwrap_or(word);
            if let Some(i) = self
                .sql
                .lines()
                .position(|l| !l.trim_start().starts_with("--") && l.contains(bare))
            {
                return i + 1;
            }
        }
        self.sql
            .lines()
            .position(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with("--")
            })
            .map_or(1, |i| i + 1)
    }
}

/// A `-- datafusion: key = value` line as DataFusion's (key, value), the
/// key spelled out from `datafusion.` as in `[engine.datafusion]`; an
/// unknown key or a value DataFusion refuses is an error here, not when
/// the model first runs.
fn setting(line: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = line.split_once('=').ok_or_else(|| {
        format!("datafusion `{line}`: expected `key = value` (a key below `datafusion.`)")
    })?;
    let key = format!("datafusion.{}", key.trim());
    let value = value.trim().trim_matches('"').to_string();
    datafusion::config::ConfigOptions::new()
        .set(&key, &value)
        .map_err(|e| format!("datafusion `{key}`: {e}"))?;
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_builtin_models() {
        for (file, sql) in crate::models::builtin::MODELS {
            let m = ModelSpec::parse(file, sql).unwrap();
            assert!(!m.key.is_empty());
        }
        let m =
            ModelSpec::parse("user_activity_agg.sql", crate::models::builtin::MODELS[1].1).unwrap();
        assert_eq!(m.key, vec!["day", "address"]);
        assert_eq!(
            m.write,
            WriteMode::ReplaceDay {
                column: "day".into()
            }
        );
    }

    #[test]
    fn header_errors_name_the_line() {
        let err = ModelSpec::parse("m.sql", "-- key: day\n-- grain: weekly\nSELECT 1")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("model m.sql:2:"), "{err}");
        let err = ModelSpec::parse("m.sql", "-- key: day\n-- grian: day\nSELECT 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.sql:2") && err.contains("grian"), "{err}");
        let err =
            ModelSpec::parse("m.sql", "-- grain: day\n-- write: upsert\nSELECT 1").unwrap_err();
        assert!(err.to_string().contains("key"));
    }

    #[test]
    fn check_lines_are_parsed_in_order_and_errors_name_the_line() {
        let m = ModelSpec::parse(
            "m.sql",
            "-- key: day\n-- grain: day\n-- write: replace_day\n-- check: not_null(day)\n-- check: row_count(1, 1) warn\nSELECT 1",
        )
        .unwrap();
        let names: Vec<&str> = m.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["not_null(day)", "row_count(1, 1)"]);
        let err =
            ModelSpec::parse("m.sql", "-- key: day\n-- check: not_nul(day)\nSELECT 1").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().starts_with("model m.sql:2:"), "{err}");
    }

    #[test]
    fn error_line_finds_the_identifier() {
        let m = ModelSpec::parse(
            "m.sql",
            "-- key: day\n-- grain: day\n-- write: replace_day\nSELECT\n  day,\n  nosuch\nFROM blocks",
        )
        .unwrap();
        assert_eq!(m.error_line("Schema error: No field named nosuch."), 6);
        assert_eq!(m.error_line("Schema error: No field named 'nosuch'."), 6);
        assert_eq!(
            m.error_line("sql parser error: Expected x at Line: 7, Column: 3"),
            7
        );
    }

    #[test]
    fn datafusion_lines_are_checked_settings_and_errors_name_the_line() {
        let head = "-- key: day\n-- grain: day\n-- write: replace_day\n";
        let m = ModelSpec::parse(
            "m.sql",
            &format!("{head}-- datafusion: optimizer.repartition_aggregations = false\n-- datafusion: execution.batch_size = \"4096\"\nSELECT 1"),
        )
        .unwrap();
        assert_eq!(
            m.datafusion,
            [
                (
                    "datafusion.optimizer.repartition_aggregations".to_string(),
                    "false".to_string()
                ),
                (
                    "datafusion.execution.batch_size".to_string(),
                    "4096".to_string()
                ),
            ]
        );
        for (line, says) in [
            (
                "-- datafusion: optimizer.no_such_thing = 1",
                "no_such_thing",
            ),
            ("-- datafusion: execution.batch_size = many", "batch_size"),
            ("-- datafusion: execution.batch_size", "key = value"),
        ] {
            let err = ModelSpec::parse("m.sql", &format!("{head}{line}\nSELECT 1")).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            let err = err.to_string();
            assert!(
                err.starts_with("model m.sql:4:") && err.contains(says),
                "{err}"
            );
        }
        let realtime = crate::models::builtin::MODELS
            .iter()
            .find(|(f, _)| f.starts_with("realtime_dashboard"))
            .unwrap();
        let m = ModelSpec::parse(realtime.0, realtime.1).unwrap();
        assert_eq!(
            m.datafusion,
            [(
                "datafusion.optimizer.repartition_aggregations".to_string(),
                "false".to_string()
            )]
        );
    }
}
