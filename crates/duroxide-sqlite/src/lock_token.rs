//! Lock tokens for instance and worker-item leases.

/// A fresh random token: a v4 UUID carries 122 random bits, so tokens never collide across processes or
/// hosts (a counter or a timestamp would).
pub(crate) fn new_lock_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
