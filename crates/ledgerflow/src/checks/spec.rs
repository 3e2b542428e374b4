//! A declared check, as written on a model's `-- check:` header line:
//!
//! ```sql
//! -- check: not_null(address)
//! -- check: unique(address) warn
//! -- check: accepted_values(status, ['ok', 'failed'])
//! -- check: range(tx_count, 0, *)
//! -- check: expression(value_sent_wei >= 0)
//! -- check: row_count(1, *)
//! -- check: volume(change <= 50% vs median of the last 7 days) warn
//! ```
//! A trailing `warn` or `error` sets the severity (default `error`); `*`
//! leaves a bound open.

use serde::Serialize;

use crate::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A failure stops the day's write.
    Error,
    /// A failure is recorded and reported; the day is written.
    Warn,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warn => "warn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "error" => Some(Severity::Error),
            "warn" => Some(Severity::Warn),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// No two rows share these columns' values (beyond the key).
    Unique(Vec<String>),
    NotNull(Vec<String>),
    /// The column's non-null values are among these SQL literals.
    AcceptedValues {
        column: String,
        values: Vec<String>,
    },
    /// Numeric literals; `None` is open.
    Range {
        column: String,
        min: Option<String>,
        max: Option<String>,
    },
    /// A SQL boolean every row must satisfy (NULL fails).
    Expression(String),
    RowCount {
        min: Option<u64>,
        max: Option<u64>,
    },
    /// The output's row count within `max_change_pct` percent of the median
    /// of the last `days` successful days (from the ledger).
    Volume {
        max_change_pct: f64,
        days: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    /// As written, without its severity: what results and errors name.
    pub name: String,
    pub kind: CheckKind,
    pub severity: Severity,
}

const KINDS: &str = "unique, not_null, accepted_values, range, expression, row_count, volume";

/// Parses the value of a `-- check:` line.
pub fn parse(text: &str) -> Result<CheckSpec, String> {
    let text = text.trim();
    let open = text
        .find('(')
        .ok_or_else(|| format!("`{text}`: expected kind(arguments), one of {KINDS}"))?;
    let kind = text[..open].trim();
    let close = matching_paren(text, open)
        .ok_or_else(|| format!("`{text}`: unbalanced parentheses or quotes"))?;
    let inner = text[open + 1..close].trim();
    let rest = text[close + 1..].trim();
    let rest = rest
        .strip_prefix("severity")
        .map(|r| r.trim_start().trim_start_matches(['=', ':']).trim())
        .unwrap_or(rest);
    let severity = match rest {
        "" => Severity::Error,
        s => Severity::parse(s)
            .ok_or_else(|| format!("`{s}` after {kind}(..): expected `warn` or `error`"))?,
    };
    let args = split_top_level(inner);
    let columns = |args: &[String]| -> Result<Vec<String>, String> {
        if args.is_empty() {
            return Err(format!("{kind}: name at least one column"));
        }
        args.iter()
            .map(|a| names::validate(a).map(|_| a.clone()))
            .collect()
    };
    let bound = |s: &str, what: &str| -> Result<Option<String>, String> {
        match s {
            "*" | "" => Ok(None),
            n if n.parse::<f64>().is_ok() => Ok(Some(n.to_string())),
            other => Err(format!(
                "{kind}: {what} `{other}` is not a number (or `*` for none)"
            )),
        }
    };
    let kind = match kind {
        "unique" => CheckKind::Unique(columns(&args)?),
        "not_null" => CheckKind::NotNull(columns(&args)?),
        "accepted_values" => {
            let [column, values @ ..] = &args[..] else {
                return Err("accepted_values(column, [values]): name the column".into());
            };
            let list = match values {
                [one] if one.starts_with('[') && one.ends_with(']') => {
                    split_top_level(&one[1..one.len() - 1])
                }
                _ => values.to_vec(),
            };
            if list.is_empty() {
                return Err("accepted_values: list at least one value".into());
            }
            for v in &list {
                literal(v)?;
            }
            CheckKind::AcceptedValues {
                column: columns(std::slice::from_ref(column))?.remove(0),
                values: list,
            }
        }
        "range" => {
            let [column, min, max] = &args[..] else {
                return Err(
                    "range(column, min, max): three arguments (`*` leaves a bound open)".into(),
                );
            };
            let (min, max) = (bound(min, "min")?, bound(max, "max")?);
            if min.is_none() && max.is_none() {
                return Err("range: give a min or a max".into());
            }
            CheckKind::Range {
                column: columns(std::slice::from_ref(column))?.remove(0),
                min,
                max,
            }
        }
        "expression" => {
            if inner.is_empty() {
                return Err("expression(sql): give a boolean SQL expression".into());
            }
            CheckKind::Expression(inner.to_string())
        }
        "row_count" => {
            let [min, max] = &args[..] else {
                return Err("row_count(min, max): two arguments (`*` leaves a bound open)".into());
            };
            let count = |s: &str, what: &str| -> Result<Option<u64>, String> {
                match s {
                    "*" => Ok(None),
                    n => n.parse().map(Some).map_err(|_| {
                        format!("row_count: {what} `{n}` is not a whole number (or `*`)")
                    }),
                }
            };
            CheckKind::RowCount {
                min: count(min, "min")?,
                max: count(max, "max")?,
            }
        }
        "volume" => volume(inner)?,
        other => return Err(format!("unknown check `{other}` (expected one of {KINDS})")),
    };
    Ok(CheckSpec {
        name: text[..=close].to_string(),
        kind,
        severity,
    })
}

/// `volume(50%)`, `volume(change <= 50%, days = 14)` or
/// `volume(change <= 50% vs median of the last 7 days)`.
fn volume(inner: &str) -> Result<CheckKind, String> {
    let shape = "volume(change <= P% vs median of the last N days)";
    let pct_end = inner
        .find('%')
        .ok_or_else(|| format!("volume: expected {shape}"))?;
    let number_start = inner[..pct_end]
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    let max_change_pct: f64 = inner[number_start..pct_end]
        .parse()
        .map_err(|_| format!("volume: expected {shape}"))?;
    let words: Vec<&str> = inner[pct_end + 1..]
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .filter(|w| !w.is_empty())
        .collect();
    let days = words
        .iter()
        .find_map(|w| w.parse::<usize>().ok())
        .unwrap_or(7);
    if days == 0 || max_change_pct <= 0.0 {
        return Err(format!("volume: P and N must be positive ({shape})"));
    }
    Ok(CheckKind::Volume {
        max_change_pct,
        days,
    })
}

/// A SQL literal: a quoted string, a number, `true` or `false`.
fn literal(v: &str) -> Result<(), String> {
    let quoted = v.len() >= 2
        && v.starts_with('\'')
        && v.ends_with('\'')
        && !v[1..v.len() - 1].replace("''", "").contains('\'');
    if quoted || v.parse::<f64>().is_ok() || v == "true" || v == "false" {
        Ok(())
    } else {
        Err(format!(
            "accepted_values: `{v}` is not a SQL literal ('text', a number, true or false)"
        ))
    }
}

/// The index of the `)` closing the `(` at `open`, outside quotes.
fn matching_paren(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices().skip_while(|(i, _)| *i < open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (c == ')').then_some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits at commas outside quotes, parentheses and brackets; trimmed,
/// empty parts dropped.
fn split_top_level(text: &str) -> Vec<String> {
    let (mut parts, mut current) = (Vec::new(), String::new());
    let (mut depth, mut quote) = (0i32, None::<char>);
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_severity() {
        let c = parse("not_null(address, tx_sent)").unwrap();
        assert_eq!(c.name, "not_null(address, tx_sent)");
        assert_eq!(c.severity, Severity::Error);
        assert_eq!(
            c.kind,
            CheckKind::NotNull(vec!["address".into(), "tx_sent".into()])
        );
        let c = parse("unique(address) warn").unwrap();
        assert_eq!(c.severity, Severity::Warn);
        assert_eq!(c.name, "unique(address)");
        let c = parse("accepted_values(status, ['ok', 'it''s', 3]) severity = warn").unwrap();
        assert_eq!(
            c.kind,
            CheckKind::AcceptedValues {
                column: "status".into(),
                values: vec!["'ok'".into(), "'it''s'".into(), "3".into()]
            }
        );
        assert_eq!(c.severity, Severity::Warn);
        assert_eq!(
            parse("range(tx_count, 0, *)").unwrap().kind,
            CheckKind::Range {
                column: "tx_count".into(),
                min: Some("0".into()),
                max: None
            }
        );
        assert_eq!(
            parse("expression(coalesce(a, 0) >= b)").unwrap().kind,
            CheckKind::Expression("coalesce(a, 0) >= b".into())
        );
        assert_eq!(
            parse("row_count(1, *)").unwrap().kind,
            CheckKind::RowCount {
                min: Some(1),
                max: None
            }
        );
        for (text, pct, days) in [
            (
                "volume(change <= 50% vs median of the last 7 days)",
                50.0,
                7,
            ),
            ("volume(25%)", 25.0, 7),
            ("volume(change <= 12.5%, days = 14)", 12.5, 14),
        ] {
            assert_eq!(
                parse(text).unwrap().kind,
                CheckKind::Volume {
                    max_change_pct: pct,
                    days
                },
                "{text}"
            );
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (text, says) in [
            ("notnull(a)", "unknown check `notnull`"),
            ("not_null()", "at least one column"),
            ("not_null(a b)", "a b"),
            ("unique(a) maybe", "`maybe`"),
            ("range(a, 0)", "three arguments"),
            ("range(a, x, 1)", "`x` is not a number"),
            ("range(a, *, *)", "a min or a max"),
            ("accepted_values(a, [drop table])", "not a SQL literal"),
            ("row_count(-1, 5)", "whole number"),
            ("volume(half)", "volume(change <= P%"),
            ("expression((a > 1)", "unbalanced"),
            ("not_null", "expected kind(arguments)"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
