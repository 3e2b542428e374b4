//! The schema registry: one JSON document per table in
//! `<batch root>/_schemas/<table>.json`, holding every version of the
//! table's columns and what changed at each. A file's header and inferred
//! types are resolved against the latest version: new columns are added
//! (nullable), missing ones read as null, widenings are recorded, and an
//! incompatible change follows the table's policy.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::types::{Change, ColType};
use crate::catalog::meta::MetaDir;
use crate::config::IncompatiblePolicy;
use crate::error::{Error, Result};

pub const DIR: &str = "_schemas";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColType,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub version: u32,
    pub created_at: DateTime<Utc>,
    /// The partition day of the file that caused it.
    pub day: NaiveDate,
    /// `archive!entry` of that file.
    pub source: String,
    pub columns: Vec<Column>,
    /// Human-readable: `added x bigint`, `widened y int -> bigint`.
    pub changes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableSchema {
    pub table: String,
    pub versions: Vec<Version>,
}

/// The outcome of resolving one file against the registry.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Registry columns absent from the file (written as null).
    pub missing: Vec<String>,
    /// Columns whose values are of another family, kept at the registered
    /// type under the `quarantine` policy (their bad values quarantine rows).
    pub incompatible: Vec<String>,
    /// Changes recorded in a new version (empty: no new version).
    pub changes: Vec<String>,
}

impl TableSchema {
    pub fn new(table: &str) -> Self {
        Self {
            table: table.to_string(),
            versions: Vec::new(),
        }
    }

    pub fn current(&self) -> Option<&Version> {
        self.versions.last()
    }

    pub fn version(&self) -> u32 {
        self.current().map_or(0, |v| v.version)
    }

    pub fn columns(&self) -> &[Column] {
        self.current().map_or(&[], |v| v.columns.as_slice())
    }

    /// Arrow schema of the current version; every column nullable (a column
    /// may be missing from any file).
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow_schema_at(self.version())
    }

    /// Arrow schema of version `version` (1-based; 0 is the empty schema).
    pub fn arrow_schema_at(&self, version: u32) -> SchemaRef {
        let columns = match version {
            0 => &[][..],
            v => self.versions[v as usize - 1].columns.as_slice(),
        };
        Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(&c.name, c.ty.arrow(), true))
                .collect::<Vec<_>>(),
        ))
    }

    /// Resolves a file's columns (normalized names, types inferred from its
    /// first rows) and records a new version if anything changed. Under the
    /// `fail` policy an incompatible change is an error naming the column.
    pub fn resolve(
        &mut self,
        file: &[(String, ColType)],
        policy: IncompatiblePolicy,
        day: NaiveDate,
        source: &str,
    ) -> std::result::Result<Resolution, String> {
        let mut columns = self.columns().to_vec();
        let mut res = Resolution::default();
        let first = self.versions.is_empty();
        for (name, seen) in file {
            match columns.iter_mut().find(|c| &c.name == name) {
                None => {
                    let ty = seen.or_string();
                    if !first {
                        res.changes.push(format!("added {name} {ty}"));
                    }
                    columns.push(Column {
                        name: name.clone(),
                        ty,
                    });
                }
                Some(col) => match col.ty.change_to(*seen) {
                    Change::Fits => {}
                    Change::Widen(to) => {
                        res.changes.push(format!("widened {name} {} -> {to}", col.ty));
                        col.ty = to;
                    }
                    Change::Incompatible => match policy {
                        IncompatiblePolicy::Fail => {
                            return Err(format!(
                                "column `{name}` is registered as {} but {source} holds {seen} values: an incompatible change (policy: fail)",
                                col.ty
                            ))
                        }
                        IncompatiblePolicy::Quarantine => res.incompatible.push(name.clone()),
                    },
                },
            }
        }
        res.missing = columns
            .iter()
            .filter(|c| !file.iter().any(|(n, _)| n == &c.name))
            .map(|c| c.name.clone())
            .collect();
        if first || !res.changes.is_empty() {
            if first {
                res.changes
                    .push(format!("created with {} columns", columns.len()));
            }
            self.versions.push(Version {
                version: self.version() + 1,
                created_at: Utc::now(),
                day,
                source: source.to_string(),
                columns,
                changes: res.changes.clone(),
            });
        }
        Ok(res)
    }
}

/// Where the registry lives: one document per table.
#[derive(Debug, Clone)]
pub struct Registry {
    docs: MetaDir,
}

impl Registry {
    pub fn new(docs: MetaDir) -> Self {
        Self { docs }
    }

    fn key_of(table: &str) -> String {
        format!("{DIR}/{table}.json")
    }

    pub fn load(&self, table: &str) -> Result<TableSchema> {
        let doc_key = Self::key_of(table);
        match self.docs.read(&doc_key)? {
            Some(bytes) => {
                serde_json::from_slice::<TableSchema>(&bytes).map_err(|e| Error::Config {
                    path: self.docs.describe(&doc_key).into(),
                    message: format!("schema registry document is corrupt: {e}"),
                })
            }
            None => Ok(TableSchema::new(table)),
        }
    }

    /// Every table's document, by name.
    pub fn load_all(&self) -> Result<Vec<TableSchema>> {
        self.docs
            .list(DIR)?
            .iter()
            .filter_map(|n| n.strip_suffix(".json"))
            .map(|n| self.load(n))
            .collect()
    }

    /// A reader sees the old or the new document, never half.
    pub fn save(&self, schema: &TableSchema) -> Result<()> {
        let json = serde_json::to_vec_pretty(schema).expect("schemas serialize");
        self.docs.write(&Self::key_of(&schema.table), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(spec: &[(&str, ColType)]) -> Vec<(String, ColType)> {
        spec.iter().map(|(n, t)| (n.to_string(), *t)).collect()
    }

    #[test]
    fn drift_adds_widens_and_keeps_missing_columns() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let mut s = TableSchema::new("t");
        let q = IncompatiblePolicy::Quarantine;
        s.resolve(
            &cols(&[("id", ColType::Int), ("d", ColType::Date)]),
            q,
            day,
            "a",
        )
        .unwrap();
        assert_eq!(s.version(), 1);
        // Same shape, narrower values: no new version.
        let r = s
            .resolve(
                &cols(&[("id", ColType::Int), ("d", ColType::Null)]),
                q,
                day,
                "b",
            )
            .unwrap();
        assert!(r.changes.is_empty());
        assert_eq!(s.version(), 1);
        let r = s
            .resolve(
                &cols(&[("id", ColType::BigInt), ("x", ColType::Decimal(2))]),
                q,
                day,
                "c",
            )
            .unwrap();
        assert_eq!(s.version(), 2);
        assert_eq!(r.missing, vec!["d"]);
        assert_eq!(
            r.changes,
            vec!["widened id int -> bigint", "added x decimal(38,2)"]
        );
        let r = s
            .resolve(&cols(&[("d", ColType::Int)]), q, day, "d")
            .unwrap();
        assert_eq!(r.incompatible, vec!["d"]);
        assert_eq!(s.version(), 2);
        let err = s
            .resolve(
                &cols(&[("d", ColType::Int)]),
                IncompatiblePolicy::Fail,
                day,
                "e",
            )
            .unwrap_err();
        assert!(err.contains("`d` is registered as date"), "{err}");
        assert_eq!(
            s.arrow_schema().field(0).data_type(),
            &arrow::datatypes::DataType::Int64
        );
    }

    #[test]
    fn documents_round_trip_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(crate::catalog::meta::MetaDir::local(tmp.path()));
        let mut s = reg.load("t").unwrap();
        assert_eq!(s.version(), 0);
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        s.resolve(
            &cols(&[("id", ColType::Int)]),
            IncompatiblePolicy::Fail,
            day,
            "a",
        )
        .unwrap();
        reg.save(&s).unwrap();
        let back = reg.load_all().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].columns(), s.columns());
    }
}
