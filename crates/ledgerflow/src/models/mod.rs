//! Models: SQL files (DataFusion SQL) with a small header, like dbt models.
//! `spec` parses one file; `dag` orders a project's models; `builtin` holds
//! the three seed models a new project starts with.

pub mod builtin;
pub mod dag;
pub mod spec;

pub use spec::{Grain, ModelSpec};

use std::path::Path;

use crate::error::{Error, Result};

/// Loads every `*.sql` file of `dir`, sorted by name, in dependency order.
pub fn load_dir(dir: &Path) -> Result<Vec<ModelSpec>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    let mut models = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        models.push(ModelSpec::parse(&path.display().to_string(), &text)?);
    }
    dag::order(models)
}
