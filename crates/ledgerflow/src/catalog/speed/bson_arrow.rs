//! MongoDB documents <-> Arrow rows of the canonical ledger schemas.
//!
//! Reading is driven by the schema, so both entities share one converter:
//! integers accept BSON int32/int64 (and integral doubles), timestamps a
//! BSON date, wei a Decimal128, a decimal string or an integer, all exact.
//! A value that does not fit names the collection, the document `_id` and
//! the field. Writing stores wei as Decimal128 when it fits its 34 digits,
//! else as a decimal string (both read back exactly).

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, Decimal128Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Decimal128Type, Int64Type, SchemaRef, TimestampMicrosecondType};
use mongodb::bson::{Bson, DateTime, Decimal128, Document, RawBsonRef, RawDocument};

/// Decimal128's exponent bias and largest coefficient (34 digits).
const D128_BIAS: u128 = 6176;
const D128_MAX_COEFF: u128 = 9_999_999_999_999_999_999_999_999_999_999_999;

/// An integer as Decimal128, exactly; `None` if it needs more than 34
/// significant digits.
pub fn i128_to_decimal128(v: i128) -> Option<Decimal128> {
    let negative = v < 0;
    let mut magnitude = v.unsigned_abs();
    let mut exponent = D128_BIAS;
    while magnitude > D128_MAX_COEFF {
        if !magnitude.is_multiple_of(10) {
            return None;
        }
        magnitude /= 10;
        exponent += 1;
    }
    let bits = (u128::from(negative) << 127) | (exponent << 113) | magnitude;
    Some(Decimal128::from_bytes(bits.to_le_bytes()))
}

/// A Decimal128 as an integer, exactly; `None` for NaN, infinities,
/// fractions and values beyond i128.
pub fn decimal128_to_i128(d: &Decimal128) -> Option<i128> {
    let bits = u128::from_le_bytes(d.bytes());
    if (bits >> 122) & 0b11111 >= 0b11110 {
        return None;
    }
    // The "large coefficient" form only encodes coefficients above the
    // 34-digit maximum, which are non-canonical and read as zero.
    let (exponent, coefficient) = if (bits >> 125) & 0b11 == 0b11 {
        (((bits >> 111) & 0x3FFF) as i32, 0)
    } else {
        let c = bits & ((1u128 << 113) - 1);
        (
            ((bits >> 113) & 0x3FFF) as i32,
            if c > D128_MAX_COEFF { 0 } else { c },
        )
    };
    let mut value = coefficient as i128;
    let e = exponent - D128_BIAS as i32;
    if e >= 0 {
        for _ in 0..e {
            value = value.checked_mul(10)?;
        }
    } else {
        for _ in 0..-e {
            if value % 10 != 0 {
                return None;
            }
            value /= 10;
        }
    }
    Some(if bits >> 127 == 1 { -value } else { value })
}

/// Where a bad value was found, for the error message.
pub struct DocContext<'a> {
    pub collection: &'a str,
}

/// Builds Arrow batches of `schema` from documents, one row per document.
pub struct DocBatcher {
    schema: SchemaRef,
    builders: Vec<Box<dyn ArrayBuilder>>,
    rows: usize,
}

impl DocBatcher {
    pub fn new(schema: SchemaRef) -> Self {
        let builders = schema
            .fields()
            .iter()
            .map(|f| -> Box<dyn ArrayBuilder> {
                match f.data_type() {
                    DataType::Int64 => Box::new(Int64Builder::new()),
                    DataType::Utf8 => Box::new(StringBuilder::new()),
                    DataType::Timestamp(_, tz) => {
                        Box::new(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
                    }
                    DataType::Decimal128(p, s) => Box::new(
                        Decimal128Builder::new()
                            .with_precision_and_scale(*p, *s)
                            .expect("schema precision is valid"),
                    ),
                    other => unreachable!("ledger schemas have no {other} column"),
                }
            })
            .collect();
        Self {
            schema,
            builders,
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one document; on error nothing of it is appended.
    pub fn push(&mut self, doc: &RawDocument, ctx: &DocContext<'_>) -> Result<(), String> {
        // Values are checked first, so a bad document leaves the builders
        // aligned.
        let mut values = Vec::with_capacity(self.builders.len());
        for field in self.schema.fields() {
            let raw = doc
                .get(field.name())
                .map_err(|e| describe(doc, ctx, field.name(), &format!("unreadable: {e}")))?;
            let value = match raw {
                None | Some(RawBsonRef::Null) | Some(RawBsonRef::Undefined) => {
                    if !field.is_nullable() {
                        let problem = if raw.is_none() {
                            "is missing"
                        } else {
                            "is null"
                        };
                        return Err(describe(doc, ctx, field.name(), problem));
                    }
                    Cell::Null
                }
                Some(v) => convert(field.data_type(), v)
                    .map_err(|problem| describe(doc, ctx, field.name(), &problem))?,
            };
            values.push(value);
        }
        for (builder, value) in self.builders.iter_mut().zip(values) {
            append(builder.as_mut(), value);
        }
        self.rows += 1;
        Ok(())
    }

    /// The rows pushed so far as one batch; the batcher starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), columns).expect("builders follow the schema")
    }
}

enum Cell {
    Null,
    Int(i64),
    Text(String),
    Micros(i64),
    Wei(i128),
}

fn convert(ty: &DataType, v: RawBsonRef<'_>) -> Result<Cell, String> {
    let found = |v: RawBsonRef<'_>| format!("has BSON type {:?}", v.element_type());
    Ok(match ty {
        DataType::Int64 => Cell::Int(match v {
            RawBsonRef::Int32(i) => i64::from(i),
            RawBsonRef::Int64(i) => i,
            RawBsonRef::Double(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => d as i64,
            other => return Err(format!("{} (expected an integer)", found(other))),
        }),
        DataType::Utf8 => Cell::Text(match v {
            RawBsonRef::String(s) => s.to_string(),
            other => return Err(format!("{} (expected a string)", found(other))),
        }),
        DataType::Timestamp(..) => Cell::Micros(match v {
            RawBsonRef::DateTime(d) => d
                .timestamp_millis()
                .checked_mul(1000)
                .ok_or("is a date out of range")?,
            other => return Err(format!("{} (expected a date)", found(other))),
        }),
        DataType::Decimal128(p, _) => {
            let wei = match v {
                RawBsonRef::Decimal128(d) => decimal128_to_i128(&d)
                    .ok_or_else(|| format!("Decimal128 {d} is not an integer that fits"))?,
                RawBsonRef::String(s) => s
                    .parse::<i128>()
                    .map_err(|_| format!("`{s}` is not a decimal integer"))?,
                RawBsonRef::Int32(i) => i128::from(i),
                RawBsonRef::Int64(i) => i128::from(i),
                other => {
                    return Err(format!(
                        "{} (expected Decimal128 or a decimal string)",
                        found(other)
                    ))
                }
            };
            if wei.unsigned_abs() >= 10u128.pow(u32::from(*p)) {
                return Err(format!("{wei} has more than {p} digits"));
            }
            Cell::Wei(wei)
        }
        other => unreachable!("ledger schemas have no {other} column"),
    })
}

fn append(builder: &mut dyn ArrayBuilder, value: Cell) {
    let any = builder.as_any_mut();
    if let Some(b) = any.downcast_mut::<Int64Builder>() {
        match value {
            Cell::Int(i) => b.append_value(i),
            _ => b.append_null(),
        }
    } else if let Some(b) = any.downcast_mut::<StringBuilder>() {
        match value {
            Cell::Text(s) => b.append_value(s),
            _ => b.append_null(),
        }
    } else if let Some(b) = any.downcast_mut::<TimestampMicrosecondBuilder>() {
        match value {
            Cell::Micros(m) => b.append_value(m),
            _ => b.append_null(),
        }
    } else if let Some(b) = any.downcast_mut::<Decimal128Builder>() {
        match value {
            Cell::Wei(w) => b.append_value(w),
            _ => b.append_null(),
        }
    }
}

fn describe(doc: &RawDocument, ctx: &DocContext<'_>, field: &str, problem: &str) -> String {
    let id = match doc.get("_id") {
        Ok(Some(RawBsonRef::ObjectId(o))) => o.to_hex(),
        Ok(Some(RawBsonRef::String(s))) => s.to_string(),
        Ok(Some(other)) => format!("{other:?}"),
        _ => "?".into(),
    };
    format!(
        "collection `{}`, document _id {id}: field `{field}` {problem}",
        ctx.collection
    )
}

/// One document per row of `batch` (a ledger schema). Timestamps must be
/// whole milliseconds: a BSON date holds no finer.
pub fn batch_documents(batch: &RecordBatch) -> Result<Vec<Document>, String> {
    let schema = batch.schema();
    let mut docs = vec![Document::new(); batch.num_rows()];
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name();
        for (row, doc) in docs.iter_mut().enumerate() {
            let value = if column.is_null(row) {
                Bson::Null
            } else {
                match field.data_type() {
                    DataType::Int64 => Bson::Int64(column.as_primitive::<Int64Type>().value(row)),
                    DataType::Utf8 => Bson::String(column.as_string::<i32>().value(row).to_owned()),
                    DataType::Timestamp(..) => {
                        let micros = column.as_primitive::<TimestampMicrosecondType>().value(row);
                        if micros % 1000 != 0 {
                            return Err(format!(
                                "`{name}` {micros} µs is not a whole millisecond (BSON dates hold milliseconds)"
                            ));
                        }
                        Bson::DateTime(DateTime::from_millis(micros / 1000))
                    }
                    DataType::Decimal128(..) => {
                        let wei = column.as_primitive::<Decimal128Type>().value(row);
                        match i128_to_decimal128(wei) {
                            Some(d) => Bson::Decimal128(d),
                            None => Bson::String(wei.to_string()),
                        }
                    }
                    other => return Err(format!("`{name}`: no BSON mapping for {other}")),
                }
            };
            doc.insert(name.as_str(), value);
        }
    }
    Ok(docs)
}

/// The projection that reads exactly the schema's fields.
pub fn projection(schema: &SchemaRef) -> Document {
    let mut doc = Document::new();
    for f in schema.fields() {
        doc.insert(f.name().as_str(), 1);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::schema::Entity;
    use mongodb::bson::{doc, RawDocumentBuf};

    #[test]
    fn decimal128_round_trips_integers_exactly() {
        for v in [
            0i128,
            1,
            -1,
            10i128.pow(27) + 7,
            -(10i128.pow(33) * 9 + 123),
            10i128.pow(34) - 1,
            10i128.pow(37),
        ] {
            let d = i128_to_decimal128(v).unwrap();
            assert_eq!(decimal128_to_i128(&d), Some(v), "{v}");
            // The same bytes as the bson crate's own parser.
            assert_eq!(
                d.bytes(),
                v.to_string().parse::<Decimal128>().unwrap().bytes()
            );
        }
        assert!(i128_to_decimal128(10i128.pow(35) + 1).is_none());
        assert_eq!(decimal128_to_i128(&"1.5".parse().unwrap()), None);
        assert_eq!(decimal128_to_i128(&"1500E-1".parse().unwrap()), Some(150));
    }

    #[test]
    fn documents_round_trip_through_the_schema() {
        let schema = Entity::Transactions.schema();
        let huge = 10i128.pow(37) + 3; // beyond Decimal128: stored as a string
        let docs = [
            doc! {"_id": 1, "hash": "h1", "block_number": 5i64, "block_hash": "b", "block_timestamp": DateTime::from_millis(1_700_000_000_000),
            "transaction_index": 0, "from_address": "a", "to_address": Bson::Null, "value": i128_to_decimal128(10i128.pow(25)).unwrap(),
            "gas": 21000, "gas_price": 7i64, "receipt_gas_used": 21000, "receipt_status": 1, "transaction_type": 2},
            doc! {"_id": 2, "hash": "h2", "block_number": 5i64, "block_hash": "b", "block_timestamp": DateTime::from_millis(1_700_000_000_000),
            "transaction_index": 1, "from_address": "a", "to_address": "c", "value": huge.to_string(),
            "gas": 21000, "gas_price": 7i64, "receipt_gas_used": 21000},
        ];
        let mut batcher = DocBatcher::new(schema.clone());
        let ctx = DocContext {
            collection: "transactions",
        };
        for d in &docs {
            batcher
                .push(&RawDocumentBuf::from_document(d).unwrap(), &ctx)
                .unwrap();
        }
        let batch = batcher.finish();
        assert_eq!(batch.num_rows(), 2);
        let values = batch.column(7).as_primitive::<Decimal128Type>();
        assert_eq!(values.value(0), 10i128.pow(25));
        assert_eq!(values.value(1), huge);
        assert!(batch.column(6).is_null(0) && batch.column(11).is_null(1));
        let back = batch_documents(&batch).unwrap();
        assert_eq!(back[1].get_str("value").unwrap(), huge.to_string());
        assert!(matches!(back[0].get("value"), Some(Bson::Decimal128(_))));
    }

    #[test]
    fn a_bad_document_names_collection_id_and_field() {
        let mut batcher = DocBatcher::new(Entity::Blocks.schema());
        let ctx = DocContext {
            collection: "blocks",
        };
        let d = doc! {"_id": "x9", "number": "twelve"};
        let err = batcher
            .push(&RawDocumentBuf::from_document(&d).unwrap(), &ctx)
            .unwrap_err();
        assert!(
            err.contains("blocks") && err.contains("x9") && err.contains("`number`"),
            "{err}"
        );
        assert_eq!(batcher.rows(), 0);
        let d = doc! {"_id": "x10", "number": 1, "hash": "h", "parent_hash": "p"};
        let err = batcher
            .push(&RawDocumentBuf::from_document(&d).unwrap(), &ctx)
            .unwrap_err();
        assert!(err.contains("`timestamp` is missing"), "{err}");
    }
}
