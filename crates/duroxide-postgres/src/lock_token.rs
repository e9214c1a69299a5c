//! Lock tokens: a random secret that proves ownership, followed by the key of the locked row.
//!
//! The secret is a v4 UUID (122 random bits, stored as `uuid`), so tokens never collide across
//! processes or hosts. The key after it (an instance id, a work item's id) lets acks, abandons and
//! renewals find their row by primary key, so no index on the secret is written on every fetch. The
//! key is a locator only: ownership is proven by the secret.

use uuid::Uuid;

/// A fresh random secret.
pub(crate) fn new_secret() -> Uuid {
    Uuid::new_v4()
}

/// The token handed to the caller for the row `key` locked with `secret`.
pub(crate) fn token(secret: Uuid, key: &str) -> String {
    format!("{}.{key}", secret.simple())
}

/// Splits a token into `(secret, key)`; `None` for text no fetch could have produced (the caller then
/// reports the lock as lost, exactly as for a well-formed but unknown token).
pub(crate) fn parse(token: &str) -> Option<(Uuid, &str)> {
    let (secret, key) = token.split_once('.')?;
    if secret.len() != 32 {
        return None;
    }
    Some((Uuid::try_parse(secret).ok()?, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_keys_with_dots() {
        let secret = new_secret();
        let token = token(secret, "orders.2024.07");
        assert_eq!(parse(&token), Some((secret, "orders.2024.07")));
    }

    #[test]
    fn garbage_is_not_a_token() {
        let dashed = format!("{}.key", new_secret());
        for text in [
            "",
            "no-dot",
            "short.key",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.key",
            dashed.as_str(),
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
