//! Column types as PostgreSQL names them, from and against Arrow's.

use super::*;

/// A column type as `information_schema.columns` names it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PgType {
    pub(super) name: String,
    /// numeric's (precision, scale); `None` for an unconstrained numeric.
    pub(super) numeric: Option<(i32, i32)>,
}

impl PgType {
    pub(super) fn of(data_type: &DataType) -> PgType {
        let name = match data_type {
            DataType::Int64 => "bigint",
            DataType::Int32 => "integer",
            DataType::Float64 => "double precision",
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
            DataType::Boolean => "boolean",
            DataType::Date32 => "date",
            DataType::Timestamp(..) => "timestamp with time zone",
            DataType::Decimal128(p, s) => {
                return PgType {
                    name: "numeric".into(),
                    numeric: Some((i32::from(*p), i32::from(*s))),
                }
            }
            other => unreachable!("values::validate_request refuses {other}"),
        };
        PgType {
            name: name.into(),
            numeric: None,
        }
    }

    /// Text key columns compare bytewise (`COLLATE "C"`): keys are
    /// identifiers, and only the C collation lets PostgreSQL sort them by
    /// abbreviated keys, so a day's primary-key build took ~30% less time.
    pub(super) fn key_ddl(&self, key: bool) -> String {
        if key && self.name == "text" {
            "text COLLATE \"C\"".into()
        } else {
            self.ddl()
        }
    }

    pub(super) fn ddl(&self) -> String {
        match self.numeric {
            Some((p, s)) => format!("{}({p},{s})", self.name),
            None => self.name.clone(),
        }
    }

    /// Whether a column of this type stores `want`'s values unchanged: the
    /// same type, and for numeric the same scale and at least the precision.
    pub(super) fn holds(&self, want: &PgType) -> bool {
        self.name == want.name
            && match (self.numeric, want.numeric) {
                (None, _) => true,
                (Some((p, s)), Some((wp, ws))) => s == ws && p >= wp,
                (Some(_), None) => false,
            }
    }
}
