//! Errors: why connecting failed, and how PostgreSQL failures map onto `ProviderError` kinds.

use std::error::Error as _;

use duroxide_core::provider::{ProviderError, ProviderErrorKind};
use tokio_postgres::error::SqlState;

/// Connecting (or preparing the schema) failed. Every message starts with
/// `Failed to connect to PostgreSQL:` and names what is wrong; it never contains the password.
/// Nothing is left half-created: a failed migration is rolled back whole.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connection URL (or key=value string) could not be read.
    #[error("Failed to connect to PostgreSQL: invalid connection URL: {reason}")]
    InvalidUrl { reason: String },
    /// The schema name breaks the naming rules (ASCII letters, digits and `_`, at most 63 bytes, not
    /// starting with a digit or `pg_`).
    #[error("Failed to connect to PostgreSQL: invalid schema name {schema:?}: {reason}")]
    InvalidSchema { schema: String, reason: String },
    /// No server answered at the address (refused, unknown host, timeout, network down).
    #[error("Failed to connect to PostgreSQL: cannot reach the server at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    /// The server rejected the credentials (wrong password, unknown role, missing password).
    #[error(
        "Failed to connect to PostgreSQL: authentication failed for user {user:?} at {target}: {reason}"
    )]
    Authentication {
        target: String,
        user: String,
        reason: String,
    },
    /// The server refused the session for another reason (no such database, too many connections,
    /// starting up or shutting down, TLS required).
    #[error("Failed to connect to PostgreSQL: the server at {target} refused the session: {reason}")]
    Refused {
        target: String,
        reason: String,
        retryable: bool,
    },
    /// The schema was written by a newer duroxide-postgres whose migrations this build does not know.
    #[error(
        "Failed to connect to PostgreSQL: schema {schema:?} at {target} has version {found}, newer than \
         version {supported} that this build of duroxide-postgres knows; upgrade duroxide to use it"
    )]
    SchemaTooNew {
        target: String,
        schema: String,
        found: i64,
        supported: i64,
    },
    /// Creating or migrating the schema failed (no privilege, a conflicting object); rolled back.
    #[error(
        "Failed to connect to PostgreSQL: cannot prepare schema {schema:?} at {target} ({step}): {reason}"
    )]
    Schema {
        target: String,
        schema: String,
        step: String,
        reason: String,
        retryable: bool,
    },
}

impl ConnectError {
    /// Whether connecting again later can succeed (the server was unreachable, busy or restarting).
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectError::Unreachable { .. } => true,
            ConnectError::Refused { retryable, .. } | ConnectError::Schema { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Sorts a failure of `tokio_postgres::Config::connect` by what the caller has to fix.
    pub(crate) fn from_connect(target: &str, user: &str, err: &tokio_postgres::Error) -> ConnectError {
        let reason = describe(err);
        if let Some(code) = err.code() {
            let class = code.code().get(..2).unwrap_or_default();
            // 28xxx: invalid authorization (wrong password, no such role, pg_hba rejection).
            if class == "28" {
                return ConnectError::Authentication {
                    target: target.to_owned(),
                    user: user.to_owned(),
                    reason,
                };
            }
            return ConnectError::Refused {
                target: target.to_owned(),
                reason,
                retryable: is_transient_code(code),
            };
        }
        if has_io_source(err) || reason.contains("timeout") || reason.contains("timed out") {
            return ConnectError::Unreachable {
                target: target.to_owned(),
                reason,
            };
        }
        // The server asked for a password the URL does not carry; tokio-postgres reports it before
        // sending anything.
        if reason.contains("password") {
            return ConnectError::Authentication {
                target: target.to_owned(),
                user: user.to_owned(),
                reason,
            };
        }
        ConnectError::Refused {
            target: target.to_owned(),
            reason,
            retryable: err.is_closed(),
        }
    }
}

impl From<ConnectError> for ProviderError {
    fn from(err: ConnectError) -> Self {
        let kind = match &err {
            ConnectError::InvalidUrl { .. } | ConnectError::InvalidSchema { .. } => {
                ProviderErrorKind::InvalidInput
            }
            e if e.is_retryable() => ProviderErrorKind::Retryable,
            _ => ProviderErrorKind::Permanent,
        };
        ProviderError::new(kind, "connect", err.to_string())
    }
}

/// SQLSTATEs after which the same call can succeed: connection trouble (class 08), serialization
/// failures and deadlocks (40001, 40P01), the server shutting down, restarting or cancelling (57P01,
/// 57P02, 57P03, 57014), lack of resources (class 53), lock timeouts (55P03) and I/O errors (58030).
fn is_transient_code(code: &SqlState) -> bool {
    let text = code.code();
    text.starts_with("08")
        || text.starts_with("53")
        || matches!(
            text,
            "40001" | "40P01" | "40003" | "57P01" | "57P02" | "57P03" | "57014" | "55P03" | "58030" | "25P03"
        )
}

fn has_io_source(err: &tokio_postgres::Error) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether retrying the failed call can help: a lost connection, a transient SQLSTATE, an I/O error.
pub(crate) fn is_transient(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(code) => is_transient_code(code),
        None => err.as_db_error().is_none() && (has_io_source(err) || err.to_string().contains("timeout")),
    }
}

/// The server's message with its detail and hint, or the client error's own text.
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                text.push_str(" (hint: ");
                text.push_str(hint);
                text.push(')');
            }
            text
        }
        None => with_causes(err),
    }
}

/// The error's text followed by the causes it does not already show (tokio-postgres keeps the
/// specifics, such as "Connection refused", in the cause).
pub(crate) fn with_causes(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The `ProviderError` for a PostgreSQL failure during `operation`.
pub(crate) fn db_error(operation: &'static str, err: tokio_postgres::Error) -> ProviderError {
    let kind = if is_transient(&err) {
        ProviderErrorKind::Retryable
    } else {
        ProviderErrorKind::Permanent
    };
    ProviderError::new(kind, operation, format!("PostgreSQL: {}", describe(&err)))
}

/// Shorthand for `map_err`: `client.query(..).await.map_err(sql_err(OP))?`.
pub(crate) fn sql_err(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> ProviderError {
    move |err| db_error(operation, err)
}

/// The `ProviderError` for failing to get a pooled connection.
pub(crate) fn pool_error(operation: &'static str, err: deadpool_postgres::PoolError) -> ProviderError {
    use deadpool_postgres::PoolError;
    match err {
        PoolError::Backend(err) => db_error(operation, err),
        PoolError::Timeout(what) => ProviderError::retryable(
            operation,
            format!("no PostgreSQL connection became available in time ({what:?})"),
        ),
        PoolError::Closed => ProviderError::permanent(operation, "the connection pool is closed"),
        other => ProviderError::permanent(operation, format!("connection pool: {other}")),
    }
}

/// A stored value that does not decode (corrupt or foreign data): never a panic, always `Permanent`.
pub(crate) fn corrupt(operation: &'static str, what: impl std::fmt::Display) -> ProviderError {
    ProviderError::permanent(operation, format!("stored data does not decode: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_concurrency_codes_are_transient() {
        for code in [
            SqlState::CONNECTION_FAILURE,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::LOCK_NOT_AVAILABLE,
        ] {
            assert!(is_transient_code(&code), "{code:?}");
        }
    }

    #[test]
    fn data_and_syntax_codes_are_permanent() {
        for code in [
            SqlState::UNIQUE_VIOLATION,
            SqlState::SYNTAX_ERROR,
            SqlState::UNDEFINED_TABLE,
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_CATALOG_NAME,
        ] {
            assert!(!is_transient_code(&code), "{code:?}");
        }
    }
}
