//! SQL text both sinks build the same way; only their column types differ.

use std::fmt::Display;

use arrow::datatypes::{DataType, Field};

use super::ident::{quote, quoted_list};
use super::WriteRequest;
use crate::error::Error;
use crate::ledger::RunState;

/// The ledger's columns, in the order each sink's `record` reads them.
pub const LEDGER_COLUMNS: &str = "id, model, day, state, attempt, \"trigger\", started_at, \
                                  finished_at, rows_written, fingerprint, source_layers, error, owner";

/// Whether a run in `state` is over, so its row gets a `finished_at`.
pub fn is_finished(state: RunState) -> bool {
    matches!(
        state,
        RunState::Success | RunState::Failed | RunState::Skipped | RunState::Superseded
    )
}

/// The body of `CREATE TABLE name (..)` for `req`'s output: every column
/// with the type `column_type` gives it (told whether the column is part of
/// the key), key columns `NOT NULL`, then the primary key over `key` (the
/// request's key columns, in the order the index should sort them).
pub fn table_defs<T: Display>(
    req: &WriteRequest,
    key: &[String],
    column_type: impl Fn(&DataType, bool) -> T,
) -> String {
    let mut defs: Vec<String> = req
        .schema
        .fields()
        .iter()
        .map(|f| {
            let key = req.key.contains(f.name());
            let not_null = if key { " NOT NULL" } else { "" };
            format!(
                "{} {}{not_null}",
                quote(f.name()),
                column_type(f.data_type(), key)
            )
        })
        .collect();
    if !key.is_empty() {
        defs.push(format!("PRIMARY KEY ({})", quoted_list(key)));
    }
    defs.join(", ")
}

/// What follows `ON CONFLICT (key) DO` in an upsert: every column outside
/// the key takes the new row's value; a table that is all key has nothing
/// to update.
pub fn conflict_action(req: &WriteRequest) -> String {
    let updates: Vec<String> = req
        .schema
        .fields()
        .iter()
        .filter(|f| !req.key.contains(f.name()))
        .map(|f| format!("{0} = excluded.{0}", quote(f.name())))
        .collect();
    if updates.is_empty() {
        "NOTHING".to_owned()
    } else {
        format!("UPDATE SET {}", updates.join(", "))
    }
}

/// Refuses an existing `table` whose column for `field` has a `problem`
/// ("is missing", "is bigint"), where the sink writes `want`.
pub fn column_mismatch(table: String, field: &Field, problem: &str, want: impl Display) -> Error {
    Error::SinkSchema {
        table,
        message: format!(
            "column `{}` {problem}, but the model writes {want} ({}); ledgerflow does not alter \
             existing tables: migrate or drop it",
            field.name(),
            field.data_type()
        ),
    }
}
