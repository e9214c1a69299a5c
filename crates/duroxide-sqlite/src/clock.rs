//! The provider's clock: Unix epoch milliseconds, the unit of every time the contract stores.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in Unix epoch milliseconds. A clock set before 1970 reads as 0 rather than failing a call.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in whole milliseconds, saturating (a lease of "forever" must not wrap around).
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
