//! `[ingest.checks]`: column checks on a partner table's rows, applied at
//! merge time on each row's text, before it is parsed:
//!
//! ```toml
//! [ingest.checks]
//! transfers = ["not_null(tx_hash)", "range(amount, 0, *) warn", "accepted_values(token, ['ETH', 'USDC'])"]
//! ```
//! The kinds that judge one row at a time (`not_null`, `accepted_values`,
//! `range`) and the models' syntax. A `warn` check quarantines the row
//! (naming the check); an `error` check fails the table (nothing of it is
//! committed).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::checks::spec::{self, CheckKind, Severity};

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    NotNull,
    /// The literals' texts (strings unquoted).
    Accepted(Vec<String>),
    Range {
        min: Option<String>,
        max: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowCheck {
    /// As written, without its severity.
    pub name: String,
    pub column: String,
    pub severity: Severity,
    rule: Rule,
}

/// The checks of every table, by table name.
pub type TableChecks = BTreeMap<String, Vec<RowCheck>>;

/// Failing rows kept as a sample per check (`file:line`).
const SAMPLE: usize = 5;

/// One check's outcome over the rows it judged: a file's, then summed over
/// a (table, day). A row is counted under the first check it fails (it is
/// quarantined once, naming that check).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tally {
    /// As written, without its severity.
    pub check: String,
    pub severity: Severity,
    pub rows_checked: u64,
    pub failing_rows: u64,
    /// `file:line` of the first few failing rows.
    pub sample: Vec<String>,
}

impl Tally {
    /// A zero tally per check of `checks` (a check over several columns is
    /// one check).
    pub fn zeros(checks: &[RowCheck]) -> Vec<Tally> {
        let mut out: Vec<Tally> = Vec::new();
        for c in checks {
            if !out.iter().any(|t| t.check == c.name) {
                out.push(Tally {
                    check: c.name.clone(),
                    severity: c.severity,
                    rows_checked: 0,
                    failing_rows: 0,
                    sample: Vec::new(),
                });
            }
        }
        out
    }

    /// Adds `other`'s counts to the tally of the same check in `into`.
    pub fn add_all(into: &mut Vec<Tally>, other: &[Tally]) {
        for t in other {
            match into.iter_mut().find(|i| i.check == t.check) {
                Some(i) => {
                    i.rows_checked += t.rows_checked;
                    i.failing_rows += t.failing_rows;
                    let room = SAMPLE.saturating_sub(i.sample.len());
                    i.sample.extend(t.sample.iter().take(room).cloned());
                }
                None => into.push(t.clone()),
            }
        }
    }

    /// Counts one row every check judged, failing `failed` (if any) at
    /// `at` (`file:line`).
    pub fn count(tallies: &mut [Tally], failed: Option<&RowCheck>, at: impl FnOnce() -> String) {
        for t in tallies.iter_mut() {
            t.rows_checked += 1;
        }
        if let Some(check) = failed {
            if let Some(t) = tallies.iter_mut().find(|t| t.check == check.name) {
                t.failing_rows += 1;
                if t.sample.len() < SAMPLE {
                    t.sample.push(at());
                }
            }
        }
    }
}

/// Parses `[ingest.checks]`; the error names the table and the check.
pub fn parse(config: &BTreeMap<String, Vec<String>>) -> Result<TableChecks, String> {
    let mut out = TableChecks::new();
    for (table, texts) in config {
        let mut checks = Vec::new();
        for text in texts {
            let spec = spec::parse(text).map_err(|m| format!("{table}: {m}"))?;
            let (columns, rule) = match spec.kind {
                CheckKind::NotNull(cols) => (cols, Rule::NotNull),
                CheckKind::AcceptedValues { column, values } => (
                    vec![column],
                    Rule::Accepted(values.iter().map(|v| unquote(v)).collect()),
                ),
                CheckKind::Range { column, min, max } => (vec![column], Rule::Range { min, max }),
                _ => {
                    return Err(format!(
                    "{table}: `{}`: partner rows take not_null, accepted_values and range checks",
                    spec.name
                ))
                }
            };
            for column in columns {
                checks.push(RowCheck {
                    name: spec.name.clone(),
                    column,
                    severity: spec.severity,
                    rule: rule.clone(),
                });
            }
        }
        out.insert(table.clone(), checks);
    }
    Ok(out)
}

fn unquote(literal: &str) -> String {
    match literal
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
    {
        Some(inner) => inner.replace("''", "'"),
        None => literal.to_string(),
    }
}

/// A table's checks bound to one file's header.
pub struct Bound<'a> {
    checks: Vec<(&'a RowCheck, Option<usize>)>,
}

impl<'a> Bound<'a> {
    /// A check of a column the file lacks sees NULL in every row.
    pub fn new(checks: &'a [RowCheck], header: &[String]) -> Self {
        Self {
            checks: checks
                .iter()
                .map(|c| (c, header.iter().position(|h| h == &c.column)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// The first check `field` (a row's value by header position; empty =
    /// NULL) fails.
    pub fn violation<'f>(&self, field: impl Fn(usize) -> &'f str) -> Option<&'a RowCheck> {
        self.checks.iter().find_map(|(check, at)| {
            let text = at.map_or("", &field);
            let ok = match &check.rule {
                Rule::NotNull => !text.is_empty(),
                _ if text.is_empty() => true,
                Rule::Accepted(values) => values.iter().any(|v| {
                    v == text
                        || (is_number(v)
                            && is_number(text)
                            && compare(v, text) == Some(Ordering::Equal))
                }),
                Rule::Range { min, max } => within(text, min.as_deref(), max.as_deref()),
            };
            (!ok).then_some(*check)
        })
    }
}

/// Whether `text` is a number within [min, max] (exactly, as decimals);
/// text that is not a number is out of range.
fn within(text: &str, min: Option<&str>, max: Option<&str>) -> bool {
    let above_min =
        min.is_none_or(|m| matches!(compare(text, m), Some(Ordering::Greater | Ordering::Equal)));
    let below_max =
        max.is_none_or(|m| matches!(compare(text, m), Some(Ordering::Less | Ordering::Equal)));
    above_min && below_max
}

fn is_number(s: &str) -> bool {
    parse_decimal(s).is_some()
}

/// `-12.50` -> (negative, "12", "5"): sign, integer digits without leading
/// zeros, fraction digits without trailing zeros. Exponents are not taken.
fn parse_decimal(s: &str) -> Option<(bool, &str, &str)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let (int, frac) = (int.trim_start_matches('0'), frac.trim_end_matches('0'));
    let zero = int.is_empty() && frac.is_empty();
    Some((neg && !zero, int, frac))
}

/// Exact order of two decimal texts; `None` if one is not a number.
fn compare(a: &str, b: &str) -> Option<Ordering> {
    let (an, ai, af) = parse_decimal(a)?;
    let (bn, bi, bf) = parse_decimal(b)?;
    let magnitude = ai
        .len()
        .cmp(&bi.len())
        .then_with(|| ai.cmp(bi))
        .then_with(|| af.cmp(bf));
    Some(match (an, bn) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(texts: &[&str]) -> Vec<RowCheck> {
        let config = BTreeMap::from([(
            "t".to_string(),
            texts.iter().map(|s| s.to_string()).collect(),
        )]);
        parse(&config).unwrap().remove("t").unwrap()
    }

    #[test]
    fn decimals_compare_exactly() {
        assert_eq!(compare("10", "9"), Some(Ordering::Greater));
        assert_eq!(compare("-10", "-9"), Some(Ordering::Less));
        assert_eq!(compare("007.50", "7.5"), Some(Ordering::Equal));
        assert_eq!(compare("-0", "0"), Some(Ordering::Equal));
        assert_eq!(
            compare(
                "340282366920938463463374607431768211456",
                "340282366920938463463374607431768211455"
            ),
            Some(Ordering::Greater)
        );
        assert_eq!(compare("0.0001", "0.001"), Some(Ordering::Less));
        assert_eq!(compare("abc", "1"), None);
    }

    #[test]
    fn rows_are_judged_on_their_text() {
        let header = ["amount".to_string(), "token".to_string()];
        let all = checks(&[
            "not_null(amount)",
            "range(amount, 0, 1000) warn",
            "accepted_values(token, ['ETH', 'it''s', 5])",
        ]);
        let bound = Bound::new(&all, &header);
        let first =
            |row: [&'static str; 2]| bound.violation(move |i| row[i]).map(|c| c.name.as_str());
        assert_eq!(first(["5", "ETH"]), None);
        assert_eq!(first(["1000", "it's"]), None);
        assert_eq!(first(["", "ETH"]), Some("not_null(amount)"));
        assert_eq!(first(["-1", "ETH"]), Some("range(amount, 0, 1000)"));
        assert_eq!(first(["1000.5", "ETH"]), Some("range(amount, 0, 1000)"));
        assert_eq!(first(["1e3", "ETH"]), Some("range(amount, 0, 1000)"));
        assert_eq!(
            first(["7", "BTC"]),
            Some("accepted_values(token, ['ETH', 'it''s', 5])")
        );
        assert_eq!(first(["7", "5.0"]), None);
        assert_eq!(first(["7", ""]), None, "NULL is for not_null to judge");
        // A column the file does not have is NULL.
        let bound = Bound::new(&all, &["token".to_string()]);
        assert_eq!(
            bound.violation(|_| "ETH").map(|c| c.name.as_str()),
            Some("not_null(amount)")
        );
    }

    #[test]
    fn tallies_count_each_row_under_its_first_failing_check() {
        let all = checks(&["not_null(a, b)", "range(a, 0, 9) warn"]);
        let mut file = Tally::zeros(&all);
        assert_eq!(
            file.iter().map(|t| t.check.as_str()).collect::<Vec<_>>(),
            ["not_null(a, b)", "range(a, 0, 9)"],
            "a check over two columns is one check"
        );
        let bound = Bound::new(&all, &["a".to_string(), "b".to_string()]);
        for (line, row) in [["1", "x"], ["", "x"], ["12", ""], ["12", "x"]]
            .iter()
            .enumerate()
        {
            Tally::count(&mut file, bound.violation(|i| row[i]), || {
                format!("f:{line}")
            });
        }
        assert_eq!(file[0].rows_checked, 4);
        assert_eq!(
            (file[0].failing_rows, file[0].sample.clone()),
            (2, vec!["f:1".into(), "f:2".into()])
        );
        assert_eq!(
            (file[1].failing_rows, file[1].sample.clone()),
            (1, vec!["f:3".into()])
        );
        // Summed over files, the sample stays at its five first.
        let mut table = Vec::new();
        for _ in 0..3 {
            Tally::add_all(&mut table, &file);
        }
        assert_eq!((table[0].rows_checked, table[0].failing_rows), (12, 6));
        assert_eq!(table[0].sample.len(), SAMPLE);
        assert_eq!(table[1].failing_rows, 3);
    }

    #[test]
    fn only_row_kinds_are_accepted() {
        let config = BTreeMap::from([("t".to_string(), vec!["unique(a)".to_string()])]);
        let err = parse(&config).unwrap_err();
        assert!(err.starts_with("t: `unique(a)`"), "{err}");
        let config = BTreeMap::from([("t".to_string(), vec!["not_nul(a)".to_string()])]);
        assert!(parse(&config).unwrap_err().contains("not_nul"));
    }
}
