//! SQL identifiers: quoted after [`crate::names::validate`].

pub use crate::names::{validate, MAX_LEN};

/// Double-quotes an identifier (after [`validate`], so no escaping is needed,
/// but quotes are doubled anyway as defence in depth).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"a", "b"`: each name [`quote`]d, comma-separated.
pub fn quoted_list<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    names
        .into_iter()
        .map(|n| quote(n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_names() {
        assert_eq!(quote("a"), "\"a\"");
        assert_eq!(quoted_list(["a", "b"]), "\"a\", \"b\"");
    }
}
