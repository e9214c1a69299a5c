//! Lock tokens: a random secret that proves ownership, followed by the key of the locked row.
//!
//! The secret is a UUID (stored as `uuid`) whose first 8 bytes name the provider object that made it
//! (its [`Owner`]) and whose last 8 are random, so tokens never collide across processes or hosts.
//! The key after it (an instance id, a work item's id) lets acks, abandons and renewals find their
//! row by primary key, so no index on the secret is written on every fetch. The key is a locator
//! only: ownership is proven by the secret.
//!
//! The owner prefix lets the database tell whether an instance's last ack came from the provider
//! object now fetching it, whose runtime then likely holds the history (migration 6).

use uuid::Uuid;

/// The 8 bytes every lock secret of one provider object starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner([u8; 8]);

impl Owner {
    /// A random owner; 64 random bits keep two live provider objects apart.
    pub(crate) fn random() -> Owner {
        let bytes = *Uuid::new_v4().as_bytes();
        Owner(bytes[..8].try_into().expect("8 of 16 bytes"))
    }

    /// A fresh secret of this owner: its prefix, then 64 random bits.
    pub(crate) fn new_secret(&self) -> Uuid {
        let mut bytes = *Uuid::new_v4().as_bytes();
        bytes[..8].copy_from_slice(&self.0);
        Uuid::from_bytes(bytes)
    }

    /// The first 18 characters of the text form of this owner's secrets (`xxxxxxxx-xxxx-xxxx`),
    /// which migration 6 compares with `left(last_ack_token::text, 18)`.
    pub(crate) fn text(&self) -> String {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.0);
        let mut text = Uuid::from_bytes(bytes).hyphenated().to_string();
        text.truncate(18);
        text
    }
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
        let secret = Owner::random().new_secret();
        let token = token(secret, "orders.2024.07");
        assert_eq!(parse(&token), Some((secret, "orders.2024.07")));
    }

    #[test]
    fn an_owners_secrets_share_its_prefix_and_nothing_else() {
        let (owner, other) = (Owner::random(), Owner::random());
        assert_ne!(owner, other);
        let (a, b) = (owner.new_secret(), owner.new_secret());
        assert_ne!(a, b, "the last 8 bytes are random");
        for secret in [a, b] {
            assert_eq!(secret.hyphenated().to_string()[..18], owner.text());
            assert_ne!(secret.hyphenated().to_string()[..18], other.text());
        }
        assert_eq!(owner.text().len(), 18);
    }

    #[test]
    fn garbage_is_not_a_token() {
        let dashed = format!("{}.key", Owner::random().new_secret());
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
