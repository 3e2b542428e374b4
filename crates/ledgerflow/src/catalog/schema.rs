//! The canonical Arrow schemas of the ledger tables (a subset of the public
//! ethereum-etl schema). Every layer is read *into* these schemas, so a model
//! sees the same types whichever layer a day came from.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Wei amounts do not fit in 64 bits: DECIMAL(38,0), exact.
pub const WEI: DataType = DataType::Decimal128(38, 0);

/// The time zone every timestamp carries.
pub const UTC: &str = "UTC";

/// Block and transaction timestamps: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// The ledger entities ledgerflow knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Blocks,
    Transactions,
}

impl Entity {
    pub const ALL: [Entity; 2] = [Entity::Blocks, Entity::Transactions];

    /// Table name, also the directory name in both layers.
    pub fn name(self) -> &'static str {
        match self {
            Entity::Blocks => "blocks",
            Entity::Transactions => "transactions",
        }
    }

    /// The column holding the block timestamp that decides a row's day.
    pub fn time_column(self) -> &'static str {
        match self {
            Entity::Blocks => "timestamp",
            Entity::Transactions => "block_timestamp",
        }
    }

    /// The column naming the block a row belongs to, used to drop rows of
    /// orphaned blocks.
    pub fn block_hash_column(self) -> &'static str {
        match self {
            Entity::Blocks => "hash",
            Entity::Transactions => "block_hash",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Entity::Blocks => blocks_schema(),
            Entity::Transactions => transactions_schema(),
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub fn blocks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("number", DataType::Int64, false),
        Field::new("hash", DataType::Utf8, false),
        Field::new("parent_hash", DataType::Utf8, false),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("miner", DataType::Utf8, true),
        Field::new("size", DataType::Int64, true),
        Field::new("gas_limit", DataType::Int64, false),
        Field::new("gas_used", DataType::Int64, false),
        Field::new("base_fee_per_gas", DataType::Int64, true),
        Field::new("transaction_count", DataType::Int64, false),
    ]))
}

pub fn transactions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("hash", DataType::Utf8, false),
        Field::new("block_number", DataType::Int64, false),
        Field::new("block_hash", DataType::Utf8, false),
        Field::new("block_timestamp", timestamp_type(), false),
        Field::new("transaction_index", DataType::Int64, false),
        Field::new("from_address", DataType::Utf8, false),
        Field::new("to_address", DataType::Utf8, true),
        Field::new("value", WEI, false),
        Field::new("gas", DataType::Int64, false),
        Field::new("gas_price", DataType::Int64, false),
        Field::new("receipt_gas_used", DataType::Int64, false),
        Field::new("receipt_status", DataType::Int64, true),
        Field::new("transaction_type", DataType::Int64, true),
    ]))
}

/// Whether a file column of type `actual` can be read as `expected` without
/// losing information (the engine casts on read).
pub fn compatible(expected: &DataType, actual: &DataType) -> bool {
    use DataType::*;
    if expected == actual {
        return true;
    }
    match (expected, actual) {
        (Int64, Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32) => true,
        (Utf8, LargeUtf8 | Utf8View) => true,
        (Timestamp(_, Some(_)), Timestamp(_, Some(tz))) => {
            matches!(tz.as_ref(), "UTC" | "+00:00" | "Z" | "Etc/UTC")
        }
        (Decimal128(38, 0), Decimal128(p, 0)) => *p <= 38,
        (Decimal128(38, 0), Int8 | Int16 | Int32 | Int64) => true,
        _ => false,
    }
}

/// Checks that a data file's schema has every expected column with a
/// compatible type; the error names the file, column and expected type.
pub fn check_file(file: &str, expected: &Schema, actual: &Schema) -> crate::Result<()> {
    for field in expected.fields() {
        match actual.field_with_name(field.name()) {
            Err(_) => {
                return Err(crate::Error::Schema {
                    file: file.to_string(),
                    column: field.name().clone(),
                    expected: field.data_type().to_string(),
                    problem: "is missing".into(),
                })
            }
            Ok(found) if !compatible(field.data_type(), found.data_type()) => {
                return Err(crate::Error::Schema {
                    file: file.to_string(),
                    column: field.name().clone(),
                    expected: field.data_type().to_string(),
                    problem: format!("has type {}", found.data_type()),
                })
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_missing_and_mistyped_columns() {
        let expected = blocks_schema();
        check_file("f", &expected, &expected).unwrap();
        let fields: Vec<Field> = expected
            .fields()
            .iter()
            .filter(|f| f.name() != "gas_used")
            .map(|f| f.as_ref().clone())
            .collect();
        let err = check_file("a.parquet", &expected, &Schema::new(fields))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.parquet") && err.contains("gas_used") && err.contains("missing"),
            "{err}"
        );
        let fields: Vec<Field> = expected
            .fields()
            .iter()
            .map(|f| {
                if f.name() == "number" {
                    Field::new("number", DataType::Utf8, false)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        let err = check_file("b.parquet", &expected, &Schema::new(fields))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("number") && err.contains("Int64") && err.contains("Utf8"),
            "{err}"
        );
    }
}
