//! Schema names: validation, quoting, and what is derived from them (the notification channel, the
//! migrations' advisory lock key, SQL text with the schema filled in).

use crate::fingerprint;

/// The schema [`PostgresProvider::connect`](crate::PostgresProvider::connect) uses.
pub const DEFAULT_SCHEMA: &str = "duroxide";

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1), which would silently merge two names.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Stands for the quoted schema name in the SQL templates.
const PLACEHOLDER: &str = "__schema__";

/// A validated schema name. Every SQL text uses it quoted, so names are case-sensitive exactly as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schema {
    name: String,
    quoted: String,
}

impl Schema {
    /// Accepts ASCII letters, digits and `_`, at most 63 bytes, not starting with a digit and not with
    /// `pg_` (reserved by PostgreSQL for system schemas). The error says which rule the name breaks.
    pub(crate) fn new(name: &str) -> Result<Schema, String> {
        if name.is_empty() {
            return Err("the name is empty".into());
        }
        if name.len() > MAX_IDENTIFIER_BYTES {
            return Err(format!(
                "the name is {} bytes long; PostgreSQL identifiers hold at most {MAX_IDENTIFIER_BYTES}",
                name.len()
            ));
        }
        if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
            return Err(format!(
                "it contains {bad:?}; only ASCII letters, digits and '_' are allowed"
            ));
        }
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("it starts with a digit".into());
        }
        if name.starts_with("pg_") {
            return Err("the prefix \"pg_\" is reserved for PostgreSQL's system schemas".into());
        }
        Ok(Schema {
            name: name.to_owned(),
            // Validation leaves nothing that needs escaping; quoting keeps the case and keywords inert.
            quoted: format!("\"{name}\""),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn quoted(&self) -> &str {
        &self.quoted
    }

    /// The LISTEN/NOTIFY channel of this schema. Notifications are per database, so every provider
    /// object on the schema (in any process) derives the same channel. Long names are hashed to keep
    /// the channel within PostgreSQL's identifier length.
    pub(crate) fn channel(&self) -> String {
        let readable = format!("duroxide.{}", self.name);
        if readable.len() <= MAX_IDENTIFIER_BYTES {
            readable
        } else {
            format!("duroxide.{:016x}", fingerprint::of_str(&self.name))
        }
    }

    /// The key of the transaction-level advisory lock that serialises migrations of this schema.
    pub(crate) fn migration_lock_key(&self) -> i64 {
        fingerprint::of_str(&format!("duroxide-postgres migrations {}", self.name)) as i64
    }

    /// `template` with every placeholder replaced by the quoted schema name.
    pub(crate) fn render(&self, template: &str) -> String {
        template.replace(PLACEHOLDER, &self.quoted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for name in ["duroxide", "Tenant_42", "_x", "a", &"n".repeat(63)] {
            let schema = Schema::new(name).expect(name);
            assert_eq!(schema.quoted(), format!("\"{name}\""));
        }
    }

    #[test]
    fn refuses_names_that_would_need_escaping_or_get_truncated() {
        let cases = [
            ("", "empty"),
            ("my schema", "' '"),
            ("evil\"; DROP TABLE x; --", "'\"'"),
            ("o'brien", "'\\''"),
            ("dash-ed", "'-'"),
            ("é", "'é'"),
            ("1abc", "starts with a digit"),
            ("pg_mine", "reserved"),
        ];
        for (name, reason) in cases {
            let err = Schema::new(name).expect_err(name);
            assert!(err.contains(reason), "{name:?}: {err}");
        }
        let long = "n".repeat(64);
        assert!(Schema::new(&long).expect_err("too long").contains("64 bytes"));
    }

    #[test]
    fn channel_fits_an_identifier() {
        let short = Schema::new("s").expect("valid");
        assert_eq!(short.channel(), "duroxide.s");
        let long = Schema::new(&"n".repeat(63)).expect("valid");
        assert!(long.channel().len() <= MAX_IDENTIFIER_BYTES);
        assert_ne!(
            long.channel(),
            Schema::new(&"m".repeat(63)).expect("valid").channel()
        );
    }

    #[test]
    fn render_quotes_every_placeholder() {
        let schema = Schema::new("Mixed").expect("valid");
        assert_eq!(
            schema.render("SELECT * FROM __schema__.a JOIN __schema__.b"),
            "SELECT * FROM \"Mixed\".a JOIN \"Mixed\".b"
        );
    }
}
