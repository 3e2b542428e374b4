//! Binary COPY: rows encoded straight from Arrow arrays, and values
//! decoded back as canonical text.

use super::*;

/// Binary COPY framing (PostgreSQL's "COPY ... Binary Format"): this
/// signature, 32-bit flags and header-extension length, then per row a
/// 16-bit field count and per field a 32-bit length (-1: NULL) and the
/// value in its binary send format, then a 16-bit -1.
pub(super) const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Bytes per CopyData message. tokio-postgres's `BinaryCopyInWriter` sends
/// every 4 KiB: for a day of user activity (~100 MB) that is 25 k messages
/// handed to the connection task on the other core, and the COPY was bound
/// by that client side; 1 MiB chunks leave the encoding loop to itself.
pub(super) const COPY_CHUNK: usize = 1 << 20;
/// A chunk's buffer: room for the chunk and the row that crosses its end.
pub(super) const COPY_BUFFER: usize = COPY_CHUNK + (64 << 10);

/// One row of a batch, encoded straight from the Arrow arrays into the COPY
/// buffer: no per-row allocation.
pub(super) fn put_row(
    columns: &[Column<'_>],
    row: usize,
    out: &mut BytesMut,
) -> Result<(), String> {
    out.put_i16(columns.len() as i16);
    for column in columns {
        let at = out.len();
        out.put_i32(0);
        let len = if put_cell(column, row, out).map_err(|e| e.to_string())? {
            (out.len() - at - 4) as i32
        } else {
            -1
        };
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// Writes one value in its binary send format; false for NULL.
pub(super) fn put_cell(
    column: &Column<'_>,
    row: usize,
    out: &mut BytesMut,
) -> Result<bool, BoxError> {
    match column.value(row)? {
        Datum::Null => return Ok(false),
        Datum::Int64(v) => out.put_i64(v),
        Datum::Int32(v) => out.put_i32(v),
        Datum::Float64(v) => out.put_f64(v),
        Datum::Text(v) => out.put_slice(v.as_bytes()),
        Datum::Boolean(v) => out.put_u8(v.into()),
        Datum::Date(days) => {
            out.put_i32(days.checked_sub(PG_EPOCH_DAYS).ok_or("date out of range")?)
        }
        Datum::Timestamp(micros) => out.put_i64(
            micros
                .checked_sub(PG_EPOCH_MICROS)
                .ok_or("timestamp out of range")?,
        ),
        Datum::Decimal(v, scale) => put_numeric(v, scale.into(), out)?,
    }
    Ok(true)
}

/// Column `i` of `row`, decoded by the Arrow type it was written from, as
/// [`values::canonical_text`] (`None` for NULL).
pub(super) fn read_text(
    row: &Row,
    i: usize,
    data_type: &DataType,
) -> std::result::Result<Option<String>, tokio_postgres::Error> {
    use chrono::{DateTime, Utc};
    Ok(match data_type {
        DataType::Int64 => row.try_get::<_, Option<i64>>(i)?.map(|v| v.to_string()),
        DataType::Int32 => row.try_get::<_, Option<i32>>(i)?.map(|v| v.to_string()),
        DataType::Float64 => row.try_get::<_, Option<f64>>(i)?.map(values::float_text),
        DataType::Boolean => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| i64::from(v).to_string()),
        DataType::Date32 => row
            .try_get::<_, Option<NaiveDate>>(i)?
            .map(|d| d.format("%Y-%m-%d").to_string()),
        DataType::Timestamp(..) => row
            .try_get::<_, Option<DateTime<Utc>>>(i)?
            .and_then(|t| values::timestamp_text(t.timestamp_micros()).ok()),
        DataType::Decimal128(..) => row
            .try_get::<_, Option<PgNumeric>>(i)?
            .map(|n| n.to_string()),
        _ => row.try_get::<_, Option<String>>(i)?,
    })
}
