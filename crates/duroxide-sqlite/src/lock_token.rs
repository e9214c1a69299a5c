//! Lock tokens: a secret that proves ownership, followed by the key of the locked row.
//!
//! The secret is 32 hex digits: 64 random bits drawn once per process (from the OS) and a 64-bit
//! per-process sequence offset by another 64 random bits. Tokens therefore never repeat within a
//! process and never collide across processes or hosts (which would need the same 64 random bits), and
//! a fetch costs no system call (drawing fresh OS randomness per fetch did: one `getrandom` per lock).
//! The key after it (an instance id, a work item's row id) lets an ack, abandon or renewal find its row
//! by primary key, so no index on the secret has to be written on every fetch and every ack. The key
//! is a locator only: ownership is the secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Length of the secret part.
const SECRET_LEN: usize = 32;

/// This process's random prefix and sequence offset.
fn process_random() -> (u64, u64) {
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    *SEED.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair())
}

/// A fresh secret, unique among all secrets of all processes.
pub(crate) fn new_secret() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let (prefix, offset) = process_random();
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed).wrapping_add(offset);
    format!("{prefix:016x}{n:016x}")
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
    fn secrets_never_repeat_and_are_well_formed() {
        let secrets: std::collections::HashSet<String> = (0..10_000).map(|_| new_secret()).collect();
        assert_eq!(secrets.len(), 10_000);
        assert!(secrets.iter().all(|s| parse(&token(s, "k")).is_some()));
    }

    #[test]
    fn garbage_is_not_a_token() {
        for text in ["", "no-dot", "short.key", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.key"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
