//! A replaced day's rows in the order of the table's key. SQLite grows the
//! key's index row by row under a day's re-insert: in key order each row
//! lands beside the one before instead of on a random page of the tree (a
//! mainnet day of user activity: 3.6-4.3 s to 2.5-2.9 s). The order is an
//! optimisation only: nothing reads it back, and a key SQLite orders
//! otherwise (a decimal stored as text) just loses the gain.
//!
//! Not used for PostgreSQL: its index is built once over the staged
//! partition, and the 60-210 ms a day presorted input saves there cost the
//! client more (docs/decisions.md).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::Array;
use arrow::compute::interleave;
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;

use crate::sinks::values::{Column, Datum};
use crate::sinks::{WriteMode, WriteRequest};

/// A row: (batch, row within the batch).
pub(super) type RowAt = (usize, usize);

/// Rows per re-ordered batch handed to the writer: the rows are gathered a
/// column at a time (cache-friendly), and only this many at once are held.
const CHUNK: usize = 8192;

/// The order `req`'s rows are inserted in: by its key without the column a
/// day or minute is replaced by (one value per write, or few). `None` for
/// an upsert, where the order of the rows decides which of two with one key
/// wins.
pub(super) fn write_order(req: &WriteRequest) -> Result<Option<Vec<RowAt>>, String> {
    let replaced = match &req.mode {
        WriteMode::Upsert => return Ok(None),
        WriteMode::ReplaceDay { column } | WriteMode::ReplaceMinutes { column, .. } => column,
    };
    let columns: Vec<usize> = req
        .key
        .iter()
        .filter(|k| *k != replaced)
        .filter_map(|k| req.schema.index_of(k).ok())
        .collect();
    let too_many = |n: usize| u32::try_from(n).is_err();
    if columns.is_empty()
        || too_many(req.batches.len())
        || req.batches.iter().any(|b| too_many(b.num_rows()))
        || req.batches.iter().map(RecordBatch::num_rows).sum::<usize>() < 2
    {
        return Ok(None);
    }
    key_order(&req.batches, &columns).map(Some)
}

/// Every row of `batches` ordered by the columns at `key` (at least one;
/// fewer than 2^32 batches and rows per batch): text bytewise
/// (SQLite's `BINARY`), numbers, dates and times by value (their text forms
/// sort the same way), nulls first. Ties keep no particular order.
pub(super) fn key_order(batches: &[RecordBatch], key: &[usize]) -> Result<Vec<RowAt>, String> {
    let columns = batches
        .iter()
        .map(|b| {
            key.iter()
                .map(|&i| Column::new(b.column(i).as_ref()))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total = batches.iter().map(RecordBatch::num_rows).sum();
    // Sorting on an 8-byte prefix of the first key column decides almost
    // every comparison without touching the arrays (a 42-byte address is
    // a memcmp behind two dynamic lookups).
    let mut rows: Vec<(u64, u32, u32)> = Vec::with_capacity(total);
    for (b, cols) in columns.iter().enumerate() {
        let first = &cols[0];
        for r in 0..batches[b].num_rows() {
            rows.push((prefix(datum(first, r)), b as u32, r as u32));
        }
    }
    rows.sort_unstable_by(|x, y| {
        x.0.cmp(&y.0).then_with(|| {
            let (a, b) = (&columns[x.1 as usize], &columns[y.1 as usize]);
            a.iter()
                .zip(b)
                .map(|(ca, cb)| compare(datum(ca, x.2 as usize), datum(cb, y.2 as usize)))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
    });
    Ok(rows
        .into_iter()
        .map(|(_, b, r)| (b as usize, r as usize))
        .collect())
}

/// `batches`' rows in `order`, a batch of up to [`CHUNK`] rows at a time.
pub(super) fn reordered<'a>(
    batches: &'a [RecordBatch],
    order: &'a [RowAt],
) -> impl Iterator<Item = Result<RecordBatch, String>> + 'a {
    // Every field nullable: batches of one output may disagree on it (the
    // first saying non-null, a later one holding a null), and the rows the
    // insert then refuses should fail there, as unsorted ones do.
    let schema = batches.first().map(|b| {
        let fields: Vec<_> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Arc::new(Schema::new(fields))
    });
    order.chunks(CHUNK).map(move |rows| {
        let schema = schema.clone().expect("rows to order come from a batch");
        let columns = (0..schema.fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(c).as_ref()).collect();
                interleave(&arrays, rows)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
    })
}

/// The batches of a write in the order the sink sends them: `batches` as
/// they are when `order` is `None`.
pub(super) fn in_order<'a>(
    batches: &'a [RecordBatch],
    order: Option<&'a [RowAt]>,
) -> Box<dyn Iterator<Item = Result<Cow<'a, RecordBatch>, String>> + Send + 'a> {
    match order {
        Some(order) => Box::new(reordered(batches, order).map(|b| b.map(Cow::Owned))),
        None => Box::new(batches.iter().map(|b| Ok(Cow::Borrowed(b)))),
    }
}

/// A value that fails to decode (a timestamp out of range) sorts as null:
/// the write reports it when it encodes the row.
fn datum<'a>(column: &Column<'a>, row: usize) -> Datum<'a> {
    column.value(row).unwrap_or(Datum::Null)
}

/// Order-preserving: `prefix(a) < prefix(b)` implies `a < b`, and equal
/// values have equal prefixes.
fn prefix(d: Datum<'_>) -> u64 {
    const SIGN: u64 = 1 << 63;
    match d {
        Datum::Null => 0,
        Datum::Int64(v) | Datum::Timestamp(v) => v as u64 ^ SIGN,
        Datum::Int32(v) | Datum::Date(v) => i64::from(v) as u64 ^ SIGN,
        Datum::Float64(f) => {
            // f64::total_cmp's order as an unsigned integer.
            let bits = f.to_bits();
            if bits & SIGN != 0 {
                !bits
            } else {
                bits ^ SIGN
            }
        }
        Datum::Text(s) => {
            let mut p = [0u8; 8];
            let n = s.len().min(8);
            p[..n].copy_from_slice(&s.as_bytes()[..n]);
            u64::from_be_bytes(p)
        }
        Datum::Boolean(b) => u64::from(b),
        Datum::Decimal(v, _) => ((v as u128 ^ (1 << 127)) >> 64) as u64,
    }
}

fn compare(a: Datum<'_>, b: Datum<'_>) -> Ordering {
    match (a, b) {
        (Datum::Null, Datum::Null) => Ordering::Equal,
        (Datum::Null, _) => Ordering::Less,
        (_, Datum::Null) => Ordering::Greater,
        (Datum::Int64(x), Datum::Int64(y)) | (Datum::Timestamp(x), Datum::Timestamp(y)) => {
            x.cmp(&y)
        }
        (Datum::Int32(x), Datum::Int32(y)) | (Datum::Date(x), Datum::Date(y)) => x.cmp(&y),
        (Datum::Float64(x), Datum::Float64(y)) => x.total_cmp(&y),
        (Datum::Text(x), Datum::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Datum::Boolean(x), Datum::Boolean(y)) => x.cmp(&y),
        // One column has one scale.
        (Datum::Decimal(x, _), Datum::Decimal(y, _)) => x.cmp(&y),
        // One column has one type.
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{AsArray, Decimal128Array, Int64Array, StringViewArray};
    use arrow::datatypes::{DataType, Field};

    fn batch(names: &[Option<&str>], n: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("address", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringViewArray::from(names.to_vec())),
                Arc::new(Int64Array::from(n.to_vec())),
            ],
        )
        .unwrap()
    }

    fn rows(batches: &[RecordBatch], key: &[usize]) -> Vec<(Option<String>, i64)> {
        let order = key_order(batches, key).unwrap();
        reordered(batches, &order)
            .flat_map(|b| {
                let b = b.unwrap();
                let a = b.column(0).as_string_view().clone();
                let n = b
                    .column(1)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .clone();
                (0..b.num_rows())
                    .map(|i| (a.is_valid(i).then(|| a.value(i).to_owned()), n.value(i)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn rows_across_batches_come_out_in_bytewise_key_order() {
        // Shared 8-byte prefixes (decided in full), a prefix of another key,
        // a byte above ASCII (after 'z' bytewise, unlike a locale), a null.
        let batches = [
            batch(&[Some("0xabcdef99"), Some("0xabcdef1"), None], &[1, 2, 3]),
            batch(
                &[
                    Some("0xabcdef"),
                    Some("0xé"),
                    Some("0xz"),
                    Some("0xabcdef10"),
                ],
                &[4, 5, 6, 7],
            ),
        ];
        let got: Vec<_> = rows(&batches, &[0]).into_iter().map(|r| r.1).collect();
        assert_eq!(got, vec![3, 4, 2, 7, 1, 6, 5]);

        // The plain-Rust order of the same keys.
        let mut want: Vec<(Option<&str>, i64)> = vec![
            (Some("0xabcdef99"), 1),
            (Some("0xabcdef1"), 2),
            (None, 3),
            (Some("0xabcdef"), 4),
            (Some("0xé"), 5),
            (Some("0xz"), 6),
            (Some("0xabcdef10"), 7),
        ];
        want.sort_by(|a, b| a.0.map(str::as_bytes).cmp(&b.0.map(str::as_bytes)));
        assert_eq!(got, want.iter().map(|r| r.1).collect::<Vec<_>>());
    }

    #[test]
    fn batches_that_disagree_on_nullability_are_reordered() {
        let strict = Schema::new(vec![
            Field::new("address", DataType::Utf8View, false),
            Field::new("n", DataType::Int64, false),
        ]);
        let first = RecordBatch::try_new(
            Arc::new(strict),
            vec![
                Arc::new(StringViewArray::from(vec!["b"])),
                Arc::new(Int64Array::from(vec![1])),
            ],
        )
        .unwrap();
        let second = batch(&[None, Some("a")], &[2, 3]);
        let got = rows(&[first, second], &[0]);
        assert_eq!(
            got,
            vec![(None, 2), (Some("a".into()), 3), (Some("b".into()), 1)]
        );
    }

    #[test]
    fn a_second_key_column_breaks_ties_of_the_first() {
        let batches = [
            batch(&[Some("b"), Some("a")], &[2, 9]),
            batch(&[Some("a"), Some("b")], &[-5, 1]),
        ];
        let got = rows(&batches, &[0, 1]);
        let want = [("a", -5), ("a", 9), ("b", 1), ("b", 2)];
        assert_eq!(got, want.map(|(a, n)| (Some(a.to_owned()), n)).to_vec());
        // Ordered by the number alone, across the sign.
        let by_n: Vec<i64> = rows(&batches, &[1]).into_iter().map(|r| r.1).collect();
        assert_eq!(by_n, vec![-5, 1, 2, 9]);
    }

    #[test]
    fn more_rows_than_a_chunk_keep_every_row_once() {
        let n = CHUNK * 2 + 17;
        let keys: Vec<String> = (0..n)
            .map(|i| format!("0x{:040x}", (i * 7919) % n))
            .collect();
        let half = n / 2;
        let batches = [
            batch(
                &keys[..half]
                    .iter()
                    .map(|k| Some(k.as_str()))
                    .collect::<Vec<_>>(),
                &(0..half as i64).collect::<Vec<_>>(),
            ),
            batch(
                &keys[half..]
                    .iter()
                    .map(|k| Some(k.as_str()))
                    .collect::<Vec<_>>(),
                &(half as i64..n as i64).collect::<Vec<_>>(),
            ),
        ];
        let got = rows(&batches, &[0]);
        let mut want: Vec<(Option<String>, i64)> =
            keys.iter().cloned().map(Some).zip(0..n as i64).collect();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn prefixes_keep_the_order_of_numbers_floats_and_decimals() {
        let ints = [i64::MIN, -1, 0, 1, i64::MAX];
        for w in ints.windows(2) {
            assert!(prefix(Datum::Int64(w[0])) < prefix(Datum::Int64(w[1])));
        }
        let floats = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            3.0,
            f64::INFINITY,
        ];
        for w in floats.windows(2) {
            assert!(
                prefix(Datum::Float64(w[0])) < prefix(Datum::Float64(w[1])),
                "{w:?}"
            );
        }
        let decimals = [i128::MIN, -(1 << 70), -1, 0, 1 << 70, i128::MAX];
        for w in decimals.windows(2) {
            assert!(prefix(Datum::Decimal(w[0], 0)) <= prefix(Datum::Decimal(w[1], 0)));
        }
        // Decimals that differ only in their low 64 bits tie on the prefix
        // and are ordered in full.
        let schema = Arc::new(Schema::new(vec![Field::new(
            "v",
            DataType::Decimal128(38, 0),
            false,
        )]));
        let dec = |v: Vec<i128>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(
                    Decimal128Array::from(v)
                        .with_precision_and_scale(38, 0)
                        .unwrap(),
                )],
            )
            .unwrap()
        };
        let batches = [dec(vec![5, -3]), dec(vec![2, 1 << 70])];
        assert_eq!(
            key_order(&batches, &[0]).unwrap(),
            vec![(0, 1), (1, 0), (0, 0), (1, 1)]
        );
    }
}
