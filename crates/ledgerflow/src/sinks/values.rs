//! Arrow values as the sinks see them. Both sinks read a batch through
//! [`Column`], so every supported Arrow type is decoded in one place, and
//! store dates, timestamps and decimals in the text forms defined here when
//! the database has no exact native type (SQLite).

use std::collections::HashSet;

use arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    Int64Array, LargeStringArray, StringArray, StringViewArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate};

use super::{ident, WriteMode, WriteRequest};
use crate::error::{Error, Result};

/// One column of a batch, downcast once so that reading a row is a match and
/// an index, not a dynamic cast.
#[derive(Debug)]
pub enum Column<'a> {
    Int64(&'a Int64Array),
    Int32(&'a Int32Array),
    Float64(&'a Float64Array),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    /// DataFusion reads Parquet strings as views by default.
    Utf8View(&'a StringViewArray),
    Boolean(&'a BooleanArray),
    Date32(&'a Date32Array),
    /// Raw values in `unit`; the timezone does not matter, Arrow timestamps
    /// always count from the Unix epoch in UTC.
    Timestamp(&'a dyn Array, &'a [i64], TimeUnit),
    Decimal128(&'a Decimal128Array, i8),
}

/// One value of a [`Column`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Datum<'a> {
    Null,
    Int64(i64),
    Int32(i32),
    Float64(f64),
    Text(&'a str),
    Boolean(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// Unscaled value and scale: `value * 10^-scale`.
    Decimal(i128, i8),
}

impl<'a> Column<'a> {
    pub fn new(array: &'a dyn Array) -> Result<Self, String> {
        Ok(match array.data_type() {
            DataType::Int64 => Column::Int64(array.as_primitive::<Int64Type>()),
            DataType::Int32 => Column::Int32(array.as_primitive::<Int32Type>()),
            DataType::Float64 => Column::Float64(array.as_primitive::<Float64Type>()),
            DataType::Utf8 => Column::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Column::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => Column::Utf8View(array.as_string_view()),
            DataType::Boolean => Column::Boolean(array.as_boolean()),
            DataType::Date32 => Column::Date32(array.as_primitive::<Date32Type>()),
            DataType::Timestamp(unit, _) => {
                let values = match unit {
                    TimeUnit::Second => array.as_primitive::<TimestampSecondType>().values(),
                    TimeUnit::Millisecond => {
                        array.as_primitive::<TimestampMillisecondType>().values()
                    }
                    TimeUnit::Microsecond => {
                        array.as_primitive::<TimestampMicrosecondType>().values()
                    }
                    TimeUnit::Nanosecond => {
                        array.as_primitive::<TimestampNanosecondType>().values()
                    }
                };
                Column::Timestamp(array, values, *unit)
            }
            DataType::Decimal128(_, scale) => {
                Column::Decimal128(array.as_primitive::<Decimal128Type>(), *scale)
            }
            other => return Err(format!("unsupported column type {other}")),
        })
    }

    pub fn value(&self, row: usize) -> Result<Datum<'a>, String> {
        let array: &dyn Array = match self {
            Column::Int64(a) => *a,
            Column::Int32(a) => *a,
            Column::Float64(a) => *a,
            Column::Utf8(a) => *a,
            Column::LargeUtf8(a) => *a,
            Column::Utf8View(a) => *a,
            Column::Boolean(a) => *a,
            Column::Date32(a) => *a,
            Column::Timestamp(a, ..) => *a,
            Column::Decimal128(a, _) => *a,
        };
        if array.is_null(row) {
            return Ok(Datum::Null);
        }
        Ok(match self {
            Column::Int64(a) => Datum::Int64(a.value(row)),
            Column::Int32(a) => Datum::Int32(a.value(row)),
            Column::Float64(a) => Datum::Float64(a.value(row)),
            Column::Utf8(a) => Datum::Text(a.value(row)),
            Column::LargeUtf8(a) => Datum::Text(a.value(row)),
            Column::Utf8View(a) => Datum::Text(a.value(row)),
            Column::Boolean(a) => Datum::Boolean(a.value(row)),
            Column::Date32(a) => Datum::Date(a.value(row)),
            Column::Timestamp(_, values, unit) => {
                let v = values[row];
                Datum::Timestamp(
                    to_micros(v, *unit)
                        .ok_or_else(|| format!("timestamp {v} ({unit:?}) is out of range"))?,
                )
            }
            Column::Decimal128(a, scale) => Datum::Decimal(a.value(row), *scale),
        })
    }
}

/// Every column of `batch`, in order.
pub fn batch_columns(batch: &RecordBatch) -> Result<Vec<Column<'_>>, String> {
    batch
        .columns()
        .iter()
        .map(|a| Column::new(a.as_ref()))
        .collect()
}

/// Sub-microsecond digits are floored, so a nanosecond timestamp lands in the
/// microsecond that contains it, also before 1970.
pub fn to_micros(value: i64, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Second => value.checked_mul(1_000_000),
        TimeUnit::Millisecond => value.checked_mul(1_000),
        TimeUnit::Microsecond => Some(value),
        TimeUnit::Nanosecond => Some(value.div_euclid(1_000)),
    }
}

pub fn date_from_days(days: i32) -> Option<NaiveDate> {
    crate::day::from_epoch_days(days)
}

/// A value as text both sinks' read-back agrees on (SQLite's stored
/// form): integers and booleans as integers, floats in Rust's shortest
/// round-trip form, dates and timestamps as [`date_text`] and
/// [`timestamp_text`], decimals exact; NULL as `NULL`.
pub fn canonical_text(value: Datum<'_>) -> Result<String, String> {
    Ok(match value {
        Datum::Null => "NULL".into(),
        Datum::Int64(v) => v.to_string(),
        Datum::Int32(v) => v.to_string(),
        Datum::Float64(v) => float_text(v),
        Datum::Text(s) => s.to_string(),
        Datum::Boolean(v) => i64::from(v).to_string(),
        Datum::Date(days) => date_text(days)?,
        Datum::Timestamp(micros) => timestamp_text(micros)?,
        Datum::Decimal(v, scale) => decimal_text(v, scale.into()),
    })
}

pub fn float_text(v: f64) -> String {
    format!("{v:?}")
}

/// `YYYY-MM-DD`.
pub fn date_text(days: i32) -> Result<String, String> {
    date_from_days(days)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or_else(|| format!("date {days} days from 1970-01-01 is out of range"))
}

/// `2026-11-03T12:34:56.000000Z`: always six fractional digits, so the text
/// sorts like the instant it names (for years 0000-9999).
pub fn timestamp_text(micros: i64) -> Result<String, String> {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .ok_or_else(|| format!("timestamp {micros} µs from 1970 is out of range"))
}

/// The exact decimal text of `unscaled * 10^-scale`, with `scale` fractional
/// digits: `decimal_text(12345, 2) == "123.45"`, `decimal_text(-5, 3) == "-0.005"`.
pub fn decimal_text(unscaled: i128, scale: i16) -> String {
    let sign = if unscaled < 0 { "-" } else { "" };
    let digits = unscaled.unsigned_abs().to_string();
    if scale <= 0 {
        let zeros = if unscaled == 0 {
            0
        } else {
            scale.unsigned_abs() as usize
        };
        return format!("{sign}{digits}{}", "0".repeat(zeros));
    }
    let scale = scale as usize;
    let digits = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Inverse of [`decimal_text`]: the unscaled value of `text` at `scale`, or
/// `None` if it is not a plain decimal, needs more fractional digits than
/// `scale`, or overflows `i128`.
pub fn parse_decimal(text: &str, scale: i16) -> Option<i128> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let scale = usize::try_from(scale).ok()?;
    if int.is_empty()
        || frac.len() > scale
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut value: i128 = 0;
    let padded = frac.bytes().chain(std::iter::repeat(b'0')).take(scale);
    for b in int.bytes().chain(padded) {
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// Checks what both sinks rely on before touching the database: plain
/// identifiers, supported types, key and day columns present, and batches
/// shaped like the schema.
pub fn validate_request(req: &WriteRequest) -> Result<()> {
    let fail = |message: String| Error::SinkSchema {
        table: req.table.clone(),
        message,
    };
    ident::validate(&req.table).map_err(fail)?;
    let fields = req.schema.fields();
    if fields.is_empty() {
        return Err(fail("the model output has no columns".into()));
    }
    let mut seen = HashSet::new();
    for field in fields {
        ident::validate(field.name()).map_err(|m| fail(format!("column {m}")))?;
        // SQLite compares column names case-insensitively.
        if !seen.insert(field.name().to_ascii_lowercase()) {
            return Err(fail(format!("column `{}` appears twice", field.name())));
        }
        if !supported(field.data_type()) {
            return Err(fail(format!(
                "column `{}` has type {}, which the sinks cannot store (supported: Int64, \
                 Int32, Float64, Utf8, Boolean, Date32, Timestamp, Decimal128)",
                field.name(),
                field.data_type()
            )));
        }
    }
    for key in &req.key {
        if req.schema.field_with_name(key).is_err() {
            return Err(fail(format!(
                "key column `{key}` is not in the model output"
            )));
        }
    }
    match &req.mode {
        WriteMode::ReplaceDay { column } => match req.schema.field_with_name(column) {
            Ok(f) if *f.data_type() == DataType::Date32 => {}
            Ok(f) => {
                return Err(fail(format!(
                    "day column `{column}` is {}, expected Date32",
                    f.data_type()
                )))
            }
            Err(_) => {
                return Err(fail(format!(
                    "day column `{column}` is not in the model output"
                )))
            }
        },
        WriteMode::Upsert if req.key.is_empty() => {
            return Err(fail("upsert needs a key".into()));
        }
        WriteMode::Upsert => {}
        WriteMode::ReplaceMinutes { column, .. } => match req.schema.field_with_name(column) {
            Ok(f) if matches!(f.data_type(), DataType::Timestamp(..)) => {}
            _ => {
                return Err(fail(format!(
                    "realtime writes need a timestamp output column `{column}` (the minute)"
                )))
            }
        },
    }
    for batch in &req.batches {
        let schema = batch.schema();
        let types = schema.fields().iter().map(|f| f.data_type());
        if batch.num_columns() != fields.len() || !types.eq(fields.iter().map(|f| f.data_type())) {
            return Err(fail(format!(
                "a batch's columns ({}) do not match the output schema ({})",
                batch.schema(),
                req.schema
            )));
        }
        // Replacing a day deletes only that day: a row of another day would
        // survive every later run and pile up.
        if let WriteMode::ReplaceDay { column } = &req.mode {
            let days = batch
                .column_by_name(column)
                .and_then(|c| c.as_any().downcast_ref::<arrow::array::Date32Array>());
            let want = crate::day::epoch_days(req.day);
            if let Some(days) = days {
                if let Some(other) = days.iter().find(|d| *d != Some(want)) {
                    return Err(fail(format!(
                        "replace_day for {} got a row whose `{column}` is {}; a run may only \
                         write its own day",
                        req.day,
                        other
                            .and_then(date_from_days)
                            .map_or("NULL".into(), |d| d.to_string())
                    )));
                }
            }
        }
    }
    Ok(())
}

pub fn supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int64
            | DataType::Int32
            | DataType::Float64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Date32
            | DataType::Timestamp(..)
            | DataType::Decimal128(..)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, TimestampNanosecondArray, TimestampSecondArray};

    use super::*;

    #[test]
    fn replace_day_refuses_rows_of_another_day() {
        use super::fixtures::{activity, big_rows, day, replace};
        let ok = replace("t", day(1), vec![activity(day(1), &big_rows())], 1);
        validate_request(&ok).unwrap();
        let mixed = replace(
            "t",
            day(1),
            vec![activity(day(1), &big_rows()), activity(day(2), &big_rows())],
            1,
        );
        let err = validate_request(&mixed).unwrap_err().to_string();
        assert!(err.contains("only write its own day"), "{err}");
    }

    #[test]
    fn decimal_text_is_exact() {
        assert_eq!(decimal_text(0, 0), "0");
        assert_eq!(decimal_text(0, 2), "0.00");
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(123, -2), "12300");
        let max = 10i128.pow(38) - 1;
        assert_eq!(decimal_text(max, 0), "9".repeat(38));
        assert_eq!(decimal_text(-max, 38), format!("-0.{}", "9".repeat(38)));
        assert_eq!(decimal_text(i128::MIN, 0), i128::MIN.to_string());
        for (v, s) in [(0, 0), (12345, 2), (-5, 3), (max, 0), (-max, 38), (7, 4)] {
            assert_eq!(parse_decimal(&decimal_text(v, s), s), Some(v), "{v} {s}");
        }
        assert_eq!(parse_decimal("1.5", 3), Some(1500));
        assert_eq!(parse_decimal("1.555", 2), None);
        assert_eq!(parse_decimal("1e5", 0), None);
        assert_eq!(parse_decimal(&"9".repeat(40), 0), None);
    }

    #[test]
    fn timestamps_floor_to_microseconds_and_sort_as_text() {
        let ns: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
            Some(1_700_000_000_123_456_789),
            Some(-1),
            None,
        ]));
        let col = Column::new(ns.as_ref()).unwrap();
        assert_eq!(
            col.value(0).unwrap(),
            Datum::Timestamp(1_700_000_000_123_456)
        );
        assert_eq!(col.value(1).unwrap(), Datum::Timestamp(-1));
        assert_eq!(col.value(2).unwrap(), Datum::Null);
        assert_eq!(
            timestamp_text(1_700_000_000_123_456).unwrap(),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(timestamp_text(0).unwrap(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(date_text(0).unwrap(), "1970-01-01");
        let huge: ArrayRef = Arc::new(TimestampSecondArray::from(vec![i64::MAX]));
        assert!(Column::new(huge.as_ref()).unwrap().value(0).is_err());
    }
}

/// Data shared by both sinks' tests: a `user_activity_agg`-like table keyed
/// by (day, address) with one column of every supported type.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
        StringArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
    use arrow::record_batch::RecordBatch;
    use chrono::NaiveDate;

    use crate::ledger::{NewRun, RunState};
    use crate::sinks::{WriteMode, WriteRequest};

    /// One input row: (address, n, v). The other columns derive from `n`.
    pub type Row = (Option<&'static str>, i64, i128);

    pub const BASE_MICROS: i64 = 1_700_000_000_000_000;

    pub(crate) use crate::day::nov as day;

    pub fn activity_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("day", DataType::Date32, false),
            Field::new("address", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("i", DataType::Int32, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("v", DataType::Decimal128(38, 0), true),
            Field::new("amt", DataType::Decimal128(20, 2), true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "ts_ns",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
        ]))
    }

    /// `ts` of a row; `ts_ns` is the same instant plus 789 ns.
    pub fn ts_micros(n: i64) -> i64 {
        BASE_MICROS + n * 1_000_000 + 123_456
    }

    /// `amt` of a row, unscaled at scale 2.
    pub fn amt(n: i64) -> i128 {
        i128::from(n) * 100 + 45
    }

    pub fn activity(day: NaiveDate, rows: &[Row]) -> RecordBatch {
        let days = crate::day::epoch_days(day);
        let ns: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from(vec![days; rows.len()])),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(ns.clone())),
            Arc::new(Int32Array::from(
                ns.iter().map(|&n| n as i32).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                ns.iter().map(|&n| n as f64 + 0.5).collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from(
                ns.iter().map(|&n| n % 2 == 0).collect::<Vec<_>>(),
            )),
            Arc::new(
                Decimal128Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from(ns.iter().map(|&n| amt(n)).collect::<Vec<_>>())
                    .with_precision_and_scale(20, 2)
                    .unwrap(),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(
                    ns.iter().map(|&n| ts_micros(n)).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(TimestampNanosecondArray::from(
                ns.iter()
                    .map(|&n| ts_micros(n) * 1000 + 789)
                    .collect::<Vec<_>>(),
            )),
        ];
        RecordBatch::try_new(activity_schema(), columns).unwrap()
    }

    pub fn replace(
        table: &str,
        day: NaiveDate,
        batches: Vec<RecordBatch>,
        run_id: i64,
    ) -> WriteRequest {
        WriteRequest {
            table: table.into(),
            key: vec!["day".into(), "address".into()],
            mode: WriteMode::ReplaceDay {
                column: "day".into(),
            },
            day,
            schema: activity_schema(),
            batches,
            run_id: Some(run_id),
            checkpoint: None,
            version: None,
        }
    }

    pub fn running(model: &str, day: NaiveDate) -> NewRun {
        NewRun {
            model: model.into(),
            day,
            state: RunState::Running,
            attempt: 1,
            trigger: "run".into(),
            fingerprint: Some(format!("fp-{model}-{day}")),
            source_layers: Some("blocks=batch".into()),
            owner: None,
            error: None,
        }
    }

    /// Big decimals: above 2^64, and the largest 38-digit value.
    pub fn big_rows() -> Vec<Row> {
        vec![
            (Some("0xaa"), 1, (1i128 << 64) + 1),
            (Some("0xbb"), 2, 10i128.pow(38) - 1),
            (Some("0xcc"), 3, -(10i128.pow(30))),
        ]
    }
}
