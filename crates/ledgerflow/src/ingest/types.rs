//! The column type lattice of partner data. A value's type is the narrowest
//! that parses it; a column's type is the join of its values' types.
//!
//! ```text
//!   int -> bigint -> decimal(38,s) -> string      (numeric family)
//!   date -> timestamp -> string                   (temporal family)
//!   boolean -> string
//! ```
//! Moving up a chain is a widening (allowed and recorded). A change between
//! families (a bigint column now holding dates) is incompatible and follows
//! the table's policy.

use std::fmt;
use std::str::FromStr;

use arrow::compute::kernels::cast_utils::string_to_datetime;
use arrow::datatypes::DataType;
use chrono::Utc;

use crate::catalog::schema::timestamp_type;

/// Largest decimal scale inferred; more fractional digits make a string.
pub const MAX_SCALE: u8 = 18;
const PRECISION: u8 = 38;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColType {
    /// Only empty values seen: fits every type.
    Null,
    Boolean,
    Int,
    BigInt,
    Decimal(u8),
    Date,
    Timestamp,
    String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Null,
    Boolean,
    Numeric,
    Temporal,
    String,
}

/// How a registered type meets the type a new file's values have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The values fit the registered type.
    Fits,
    /// Up a chain, to this type.
    Widen(ColType),
    /// Across families; the policy decides.
    Incompatible,
}

impl ColType {
    fn family(self) -> Family {
        match self {
            ColType::Null => Family::Null,
            ColType::Boolean => Family::Boolean,
            ColType::Int | ColType::BigInt | ColType::Decimal(_) => Family::Numeric,
            ColType::Date | ColType::Timestamp => Family::Temporal,
            ColType::String => Family::String,
        }
    }

    fn numeric_rank(self) -> u8 {
        match self {
            ColType::Int => 0,
            ColType::BigInt => 1,
            _ => 2,
        }
    }

    /// The least type both fit in.
    pub fn join(self, other: ColType) -> ColType {
        use ColType::*;
        match (self, other) {
            (Null, t) | (t, Null) => t,
            (a, b) if a == b => a,
            (Decimal(a), Decimal(b)) => Decimal(a.max(b)),
            (Decimal(s), n) | (n, Decimal(s)) if n.family() == Family::Numeric => Decimal(s),
            (a, b) if a.family() == Family::Numeric && b.family() == Family::Numeric => {
                if a.numeric_rank() >= b.numeric_rank() {
                    a
                } else {
                    b
                }
            }
            (Date, Timestamp) | (Timestamp, Date) => Timestamp,
            _ => String,
        }
    }

    /// Classifies a file whose values have type `seen` against `self`, the
    /// registered type.
    pub fn change_to(self, seen: ColType) -> Change {
        let joined = self.join(seen);
        if joined == self {
            Change::Fits
        } else if self.family() == seen.family() || seen == ColType::String || self == ColType::Null
        {
            Change::Widen(joined)
        } else {
            Change::Incompatible
        }
    }

    /// The stored type of a column whose values were all empty.
    pub fn or_string(self) -> ColType {
        if self == ColType::Null {
            ColType::String
        } else {
            self
        }
    }

    pub fn arrow(self) -> DataType {
        match self {
            ColType::Null | ColType::String => DataType::Utf8,
            ColType::Boolean => DataType::Boolean,
            ColType::Int => DataType::Int32,
            ColType::BigInt => DataType::Int64,
            ColType::Decimal(s) => DataType::Decimal128(PRECISION, s as i8),
            ColType::Date => DataType::Date32,
            ColType::Timestamp => timestamp_type(),
        }
    }

    /// The narrowest type of one non-empty value.
    pub fn of_value(v: &str) -> ColType {
        if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
            return ColType::Boolean;
        }
        let b = v.as_bytes();
        let first = b[0];
        if first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.' {
            if let Some(t) = numeric_type(v) {
                return t;
            }
            if b.len() == 10 && date_days(v).is_some() {
                return ColType::Date;
            }
            if b.len() >= 19 && parse_timestamp(v).is_some() {
                return ColType::Timestamp;
            }
        }
        ColType::String
    }
}

fn numeric_type(v: &str) -> Option<ColType> {
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    if !int.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    match frac {
        None => {
            if int.is_empty() {
                None
            } else if v.parse::<i32>().is_ok() {
                Some(ColType::Int)
            } else if v.parse::<i64>().is_ok() {
                Some(ColType::BigInt)
            } else if int.len() <= PRECISION as usize {
                Some(ColType::Decimal(0))
            } else {
                None
            }
        }
        Some(f) => {
            let ok = f.bytes().all(|c| c.is_ascii_digit())
                && !(int.is_empty() && f.is_empty())
                && f.len() <= MAX_SCALE as usize
                && int.len() + f.len() <= PRECISION as usize;
            ok.then_some(ColType::Decimal(f.len() as u8))
        }
    }
}

/// A `YYYY-MM-DD` text as days since 1970-01-01 (Arrow's Date32).
pub fn date_days(v: &str) -> Option<i32> {
    date_days_with(v, &mut DayMemo::default())
}

/// [`date_days`], reusing the day of the previous value in `memo`.
pub fn date_days_with(v: &str, memo: &mut DayMemo) -> Option<i32> {
    // Exactly `YYYY-MM-DD`: arrow's parser would also take a timestamp and
    // drop its time, which in a date column would lose data silently.
    if v.len() != 10 {
        return None;
    }
    if let Some(days) = memo.days(v.as_bytes()) {
        return Some(days);
    }
    string_to_datetime(&Utc, v)
        .ok()
        .map(|t| crate::day::epoch_days(t.date_naive()))
}

/// RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]` / `...T...` taken as UTC.
/// Microseconds since the epoch. Arrow's fixed-layout parser: chrono's
/// format-string parsing was ~18% of an ingest's CPU.
pub fn parse_timestamp(v: &str) -> Option<i64> {
    parse_timestamp_with(v, &mut DayMemo::default())
}

/// [`parse_timestamp`], reusing the day of the previous value in `memo`.
pub fn parse_timestamp_with(v: &str, memo: &mut DayMemo) -> Option<i64> {
    if v.len() < 19 {
        return None;
    }
    if let Some(micros) = fixed_layout_micros(v.as_bytes(), memo) {
        return Some(micros);
    }
    string_to_datetime(&Utc, v)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// The last `YYYY-MM-DD` a column's fixed-layout parse accepted, and its
/// day number: a partner's daily file has nearly every row on one day, and
/// the calendar checks and arithmetic were ~1.4% of an ingest's CPU.
#[derive(Debug, Clone, Default)]
pub struct DayMemo {
    last: Option<([u8; 10], i32)>,
}

impl DayMemo {
    /// The day of `b`'s first ten bytes if they are `YYYY-MM-DD`.
    fn days(&mut self, b: &[u8]) -> Option<i32> {
        let key = b.get(..10)?;
        if let Some((k, d)) = &self.last {
            if k == key {
                return Some(*d);
            }
        }
        let d = fixed_layout_days(key)?;
        self.last = Some((key.try_into().expect("ten bytes"), d));
        Some(d)
    }
}

/// The common layouts read without Arrow's general parser (whose setup and
/// chrono date checks were ~3% of an ingest's CPU): `YYYY-MM-DD`, and
/// `YYYY-MM-DD[ T]HH:MM:SS[Z]`. Anything else, valid or not, is `None`
/// here and left to Arrow, so both paths agree by construction on all but
/// the layouts below (tested against Arrow over every day of 400 years).
fn fixed_layout_days(b: &[u8]) -> Option<i32> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])? as i32;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

fn fixed_layout_micros(b: &[u8], memo: &mut DayMemo) -> Option<i64> {
    let time = match b.len() {
        19 => &b[10..],
        20 if b[19] == b'Z' => &b[10..19],
        _ => return None,
    };
    if !(time[0] == b' ' || time[0] == b'T') || time[3] != b':' || time[6] != b':' {
        return None;
    }
    let (h, m, s) = (
        digits(&time[1..3])?,
        digits(&time[4..6])?,
        digits(&time[7..9])?,
    );
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let days = i64::from(memo.days(b)?);
    Some((days * 86_400 + i64::from(h * 3600 + m * 60 + s)) * 1_000_000)
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A decimal text as an integer scaled by `10^scale`; `None` if it has more
/// fractional digits than `scale` or more than 38 digits.
pub fn parse_decimal(v: &str, scale: u8) -> Option<i128> {
    let (neg, digits) = match v.as_bytes().first()? {
        b'-' => (true, &v[1..]),
        b'+' => (false, &v[1..]),
        _ => (false, v),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty())
        || frac.len() > scale as usize
        || int.len() + scale as usize > PRECISION as usize
        || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut n: i128 = 0;
    for c in int.bytes().chain(frac.bytes()) {
        n = n * 10 + i128::from(c - b'0');
    }
    for _ in frac.len()..scale as usize {
        n *= 10;
    }
    Some(if neg { -n } else { n })
}

impl fmt::Display for ColType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColType::Null => f.write_str("null"),
            ColType::Boolean => f.write_str("boolean"),
            ColType::Int => f.write_str("int"),
            ColType::BigInt => f.write_str("bigint"),
            ColType::Decimal(s) => write!(f, "decimal(38,{s})"),
            ColType::Date => f.write_str("date"),
            ColType::Timestamp => f.write_str("timestamp"),
            ColType::String => f.write_str("string"),
        }
    }
}

impl FromStr for ColType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "null" => ColType::Null,
            "boolean" => ColType::Boolean,
            "int" => ColType::Int,
            "bigint" => ColType::BigInt,
            "date" => ColType::Date,
            "timestamp" => ColType::Timestamp,
            "string" => ColType::String,
            _ => {
                let scale = s
                    .strip_prefix("decimal(38,")
                    .and_then(|r| r.strip_suffix(')'))
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|n| *n <= MAX_SCALE)
                    .ok_or_else(|| format!("unknown column type `{s}`"))?;
                ColType::Decimal(scale)
            }
        })
    }
}

impl serde::Serialize for ColType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ColType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::ColType::*;
    use super::*;
    use chrono::NaiveDate;

    /// `v` reads as `want` (a date, or none), with or without a memo that
    /// already holds another valid day.
    fn assert_days(v: &str, want: Option<NaiveDate>) {
        let want = want.map(crate::day::epoch_days);
        assert_eq!(date_days(v), want, "{v}");
        let mut memo = DayMemo::default();
        assert!(memo.days(b"2026-02-28").is_some());
        assert_eq!(date_days_with(v, &mut memo), want, "{v}");
    }

    #[test]
    fn values_get_the_narrowest_type() {
        for (v, t) in [
            ("42", Int),
            ("-3000000000", BigInt),
            ("123456789012345678901234567890", Decimal(0)),
            ("1.50", Decimal(2)),
            ("2026-11-01", Date),
            ("2026-11-01 10:00:00", Timestamp),
            ("2026-11-01T10:00:00.5+02:00", Timestamp),
            ("TRUE", Boolean),
            ("1e5", String),
            ("0x12ab", String),
            ("-", String),
            (".", String),
            ("1".repeat(39).as_str(), String),
        ] {
            assert_eq!(ColType::of_value(v), t, "{v}");
        }
    }

    #[test]
    fn the_lattice_widens_along_chains_only() {
        assert_eq!(Int.join(BigInt), BigInt);
        assert_eq!(BigInt.join(Decimal(2)), Decimal(2));
        assert_eq!(Decimal(4).join(Decimal(2)), Decimal(4));
        assert_eq!(Date.join(Timestamp), Timestamp);
        assert_eq!(Null.join(Date), Date);
        assert_eq!(Int.join(Date), String);
        assert_eq!(Int.change_to(Int), Change::Fits);
        assert_eq!(BigInt.change_to(Int), Change::Fits);
        assert_eq!(Int.change_to(BigInt), Change::Widen(BigInt));
        assert_eq!(Date.change_to(Timestamp), Change::Widen(Timestamp));
        assert_eq!(BigInt.change_to(String), Change::Widen(String));
        assert_eq!(BigInt.change_to(Date), Change::Incompatible);
        assert_eq!(Boolean.change_to(Int), Change::Incompatible);
        assert_eq!(String.change_to(Int), Change::Fits);
        for t in [Int, Decimal(7), Timestamp, String] {
            assert_eq!(t.to_string().parse::<ColType>().unwrap(), t);
        }
    }

    #[test]
    fn dates_and_timestamps_parse_as_chrono_reads_them() {
        use chrono::{DateTime, NaiveDateTime};
        let chrono_ts = |v: &str| {
            NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f"))
                .map(|t| t.and_utc().timestamp_micros())
                .ok()
                .or_else(|| {
                    DateTime::parse_from_rfc3339(v)
                        .ok()
                        .map(|t| t.timestamp_micros())
                })
        };
        for v in [
            "2026-11-01 10:00:00",
            "2026-11-01T10:00:00",
            "2026-11-01 23:59:59.123456",
            "2026-11-01T10:00:00.5+02:00",
            "2026-11-01T10:00:00Z",
            "1969-12-31 23:59:59.999999",
            "2026-02-29 10:00:00",
            "2026-11-01 25:00:00",
            "2026-11-01 10:00:00 x",
            "0x1234567890abcdef12",
        ] {
            assert_eq!(parse_timestamp(v), chrono_ts(v), "{v}");
        }
        for v in [
            "2026-11-01",
            "2024-02-29",
            "2026-02-29",
            "2026-13-01",
            "2026-11-01 10:00:00",
        ] {
            let want = (v.len() == 10)
                .then(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .flatten();
            assert_days(v, want);
        }
    }

    #[test]
    fn fixed_layouts_read_as_arrow_reads_them() {
        let arrow_ts = |v: &str| {
            string_to_datetime(&Utc, v)
                .ok()
                .map(|t| t.timestamp_micros())
        };
        let mut day = NaiveDate::from_ymd_opt(1800, 1, 1).unwrap();
        let mut checked = 0;
        // One memo across all days, as a column's: each day is met four
        // times in a row (hits), then the next (a miss).
        let mut memo = DayMemo::default();
        while day < NaiveDate::from_ymd_opt(2200, 1, 1).unwrap() {
            let text = day.to_string();
            assert_eq!(
                fixed_layout_days(text.as_bytes()),
                Some(crate::day::epoch_days(day)),
                "{text}"
            );
            let s = checked % 86_400;
            for sep in [" ", "T"] {
                for zone in ["", "Z"] {
                    let ts = format!(
                        "{text}{sep}{:02}:{:02}:{:02}{zone}",
                        s / 3600,
                        s / 60 % 60,
                        s % 60
                    );
                    let got = fixed_layout_micros(ts.as_bytes(), &mut memo);
                    assert_eq!(got, arrow_ts(&ts), "{ts}");
                }
            }
            day = day.succ_opt().unwrap();
            checked += 7919;
        }
        for v in [
            "0000-01-01",
            "9999-12-31",
            "2024-02-29",
            "2000-02-29",
            "1900-02-29",
            "2026-02-30",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "2026-1-011",
            "2026/01/01",
            "20a6-01-01",
            "+026-01-01",
        ] {
            // What the code did before the fast path: Arrow's parser alone.
            let want = (v.len() == 10)
                .then(|| string_to_datetime(&Utc, v).ok().map(|t| t.date_naive()))
                .flatten();
            assert_days(v, want);
        }
        for v in [
            "2026-11-01 24:00:00",
            "2026-11-01 23:60:00",
            "2026-11-01 23:59:60",
            "2026-11-01x10:00:00",
            "2026-11-01 10:00:00z",
            "2026-11-01 10-00-00",
            "2026-11-01 1a:00:00",
            "2026-02-29 10:00:00Z",
        ] {
            // Even when the memo already holds the (valid) day, the time
            // is still checked.
            let mut memo = DayMemo::default();
            let _ = memo.days(v.as_bytes());
            assert_eq!(fixed_layout_micros(v.as_bytes(), &mut memo), None, "{v}");
            assert_eq!(parse_timestamp_with(v, &mut memo), arrow_ts(v), "{v}");
            assert_eq!(parse_timestamp(v), arrow_ts(v), "{v}");
        }
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("1.5", 2), Some(150));
        assert_eq!(parse_decimal("-0.07", 2), Some(-7));
        assert_eq!(parse_decimal("12", 0), Some(12));
        assert_eq!(parse_decimal("1.234", 2), None);
        assert_eq!(
            parse_decimal("123456789012345678901234567890", 0),
            Some(123456789012345678901234567890)
        );
        assert_eq!(parse_decimal("abc", 0), None);
    }
}
