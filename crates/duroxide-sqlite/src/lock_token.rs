//! Lock tokens: a random secret that proves ownership, followed by the key of the locked row.
//!
//! The secret is 32 hex digits of a v4 UUID (122 random bits), so tokens never collide across
//! processes or hosts (a counter or a timestamp would). The key after it (an instance id, a work item's
//! row id) lets an ack, abandon or renewal find its row by primary key, so no index on the secret has
//! to be written on every fetch and every ack. The key is a locator only: ownership is the secret.

/// Length of the secret part.
const SECRET_LEN: usize = 32;

/// A fresh random secret.
pub(crate) fn new_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The token handed to the caller for the row `key` locked with `secret`.
pub(crate) fn token(secret: &str, key: &str) -> String {
    format!("{secret}.{key}")
}

/// Splits a token into `(secret, key)`; `None` for text that no fetch could have produced (the caller
/// then reports the lock as lost, exactly as for a well-formed but unknown token).
pub(crate) fn parse(token: &str) -> Option<(&str, &str)> {
    let (secret, key) = token.split_once('.')?;
    let well_formed = secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then_some((secret, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_keys_with_dots() {
        let secret = new_secret();
        let token = token(&secret, "orders.2024.07");
        assert_eq!(parse(&token), Some((secret.as_str(), "orders.2024.07")));
    }

    #[test]
    fn secrets_differ() {
        assert_ne!(new_secret(), new_secret());
    }

    #[test]
    fn garbage_is_not_a_token() {
        for text in ["", "no-dot", "short.key", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.key"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
