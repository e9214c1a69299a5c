//! A small, stable 64-bit hash (FNV-1a) for names derived from the schema and for ack fingerprints.
//!
//! Stable across processes, builds and Rust versions (unlike `DefaultHasher`), because two processes
//! must derive the same notification channel and advisory lock key from one schema name, and a retried
//! ack must hash to the value stored by its first attempt.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// Feeds values into an FNV-1a hash. Variable-length values are length-prefixed and optional ones
/// tagged, so that different sequences of values cannot produce the same byte stream.
#[derive(Debug, Clone)]
pub(crate) struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(OFFSET_BASIS)
    }
}

impl Fingerprint {
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(PRIME);
        }
        self
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes(&value.to_le_bytes())
    }

    pub(crate) fn str(&mut self, value: &str) -> &mut Self {
        self.u64(value.len() as u64).bytes(value.as_bytes())
    }

    pub(crate) fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => self.bytes(&[0]),
            Some(text) => self.bytes(&[1]).str(text),
        }
    }

    pub(crate) fn opt_u64(&mut self, value: Option<u64>) -> &mut Self {
        match value {
            None => self.bytes(&[0]),
            Some(n) => self.bytes(&[1]).u64(n),
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash of one string.
pub(crate) fn of_str(text: &str) -> u64 {
    Fingerprint::default().bytes(text.as_bytes()).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv1a_vectors() {
        assert_eq!(of_str(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(of_str("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(of_str("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn length_prefixes_keep_sequences_apart() {
        let ab_c = Fingerprint::default().str("ab").str("c").finish();
        let a_bc = Fingerprint::default().str("a").str("bc").finish();
        assert_ne!(ab_c, a_bc);
        let none = Fingerprint::default().opt_str(None).finish();
        let empty = Fingerprint::default().opt_str(Some("")).finish();
        assert_ne!(none, empty);
    }
}
