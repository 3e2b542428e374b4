//! Dependency order of models (`depends_on` headers): a stable topological
//! sort that names the model at fault on a cycle or unknown dependency.

use std::collections::{BTreeMap, BTreeSet};

use super::ModelSpec;
use crate::error::{Error, Result};

pub fn order(models: Vec<ModelSpec>) -> Result<Vec<ModelSpec>> {
    let mut by_name: BTreeMap<String, ModelSpec> = BTreeMap::new();
    for m in models {
        if let Some(prev) = by_name.get(&m.name) {
            return Err(Error::Model {
                file: m.file.clone(),
                line: 1,
                message: format!("model `{}` is also defined in {}", m.name, prev.file),
            });
        }
        by_name.insert(m.name.clone(), m);
    }
    for m in by_name.values() {
        for dep in &m.depends_on {
            if !by_name.contains_key(dep) {
                return Err(Error::Model {
                    file: m.file.clone(),
                    line: 1,
                    message: format!("depends_on names unknown model `{dep}`"),
                });
            }
        }
    }
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::new();
    while done.len() < by_name.len() {
        let ready: Vec<String> = by_name
            .values()
            .filter(|m| !done.contains(&m.name) && m.depends_on.iter().all(|d| done.contains(d)))
            .map(|m| m.name.clone())
            .collect();
        if ready.is_empty() {
            let stuck = by_name
                .values()
                .find(|m| !done.contains(&m.name))
                .expect("some model is not done");
            return Err(Error::Model {
                file: stuck.file.clone(),
                line: 1,
                message: format!("dependency cycle through model `{}`", stuck.name),
            });
        }
        for name in ready {
            done.insert(name.clone());
            ordered.push(by_name[&name].clone());
        }
    }
    Ok(ordered)
}

/// Whether any of `models` reads `name` (names it in `depends_on`).
pub fn is_read_by(name: &str, models: &[ModelSpec]) -> bool {
    models
        .iter()
        .any(|m| m.depends_on.iter().any(|d| d == name))
}

/// The models `model` reads, transitively, in dependency order (`all` is
/// a project's models as [`order`] returned them).
pub fn upstreams<'a>(model: &ModelSpec, all: &'a [ModelSpec]) -> Vec<&'a ModelSpec> {
    let mut needed: BTreeSet<&str> = model.depends_on.iter().map(String::as_str).collect();
    // Backwards, a dependent comes before its own upstreams.
    for m in all.iter().rev() {
        if needed.contains(m.name.as_str()) {
            needed.extend(m.depends_on.iter().map(String::as_str));
        }
    }
    all.iter()
        .filter(|m| needed.contains(m.name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, deps: &str) -> ModelSpec {
        let text = format!(
            "-- key: day\n-- grain: day\n-- write: replace_day\n-- depends_on: {deps}\nSELECT 1"
        );
        ModelSpec::parse(&format!("{name}.sql"), &text).unwrap()
    }

    #[test]
    fn orders_dependencies_first_and_rejects_cycles() {
        let names: Vec<String> = order(vec![m("c", "b"), m("b", "a"), m("a", "")])
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        let err = order(vec![m("a", "b"), m("b", "a")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cycle"), "{err}");
        let err = order(vec![m("a", "zzz")]).unwrap_err().to_string();
        assert!(err.contains("zzz") && err.contains("a.sql"), "{err}");
    }

    #[test]
    fn upstreams_are_transitive_and_in_dependency_order() {
        let all = order(vec![
            m("d", "c"),
            m("c", "a, b"),
            m("b", "a"),
            m("a", ""),
            m("x", ""),
        ])
        .unwrap();
        let names = |model: &str| -> Vec<&str> {
            let model = all.iter().find(|m| m.name == model).unwrap();
            upstreams(model, &all)
                .iter()
                .map(|m| m.name.as_str())
                .collect()
        };
        assert_eq!(names("d"), ["a", "b", "c"]);
        assert_eq!(names("b"), ["a"]);
        assert!(names("x").is_empty());
    }
}
