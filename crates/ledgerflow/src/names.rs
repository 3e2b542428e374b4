//! Names from config or data (tables, columns, schemas): validated before
//! anything uses them. PostgreSQL silently truncates names at 63 bytes, so
//! longer names are refused rather than letting two tables collide. Neutral
//! ground: models, ingest, config and the sinks all check names here.

pub const MAX_LEN: usize = 63;

/// Accepts `[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes.
pub fn validate(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an identifier cannot be empty".into());
    }
    if name.len() > MAX_LEN {
        return Err(format!(
            "`{name}` is {} bytes; identifiers are limited to {MAX_LEN} (PostgreSQL would truncate it)",
            name.len()
        ));
    }
    let mut chars = name.chars();
    let first = chars.next().expect("non-empty");
    if !(first.is_ascii_alphabetic() || first == '_')
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "`{name}` is not a plain identifier (letters, digits and _, not starting with a digit)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_long_and_odd_names() {
        assert!(validate("block_daily_metrics").is_ok());
        assert!(validate(&"x".repeat(63)).is_ok());
        assert!(validate(&"x".repeat(64)).unwrap_err().contains("63"));
        assert!(validate("1abc").is_err());
        assert!(validate("a;drop table x").is_err());
        assert!(validate("").is_err());
    }
}
