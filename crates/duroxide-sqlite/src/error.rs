//! Errors: why opening a database failed, and how SQLite failures map onto `ProviderError` kinds.

use std::path::PathBuf;

use duroxide_core::provider::{ProviderError, ProviderErrorKind};
use rusqlite::ErrorCode;

/// Opening a database failed. Every variant names the database and the reason; none of them leaves
/// anything written behind.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path or URL could not be read as a database location.
    #[error("invalid SQLite database location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },
    /// The folder meant to hold the database could not be created or is not a folder.
    #[error("cannot create the folder {folder} for the SQLite database {path}: {reason}")]
    Folder {
        path: PathBuf,
        folder: PathBuf,
        reason: String,
    },
    /// SQLite could not open (or create) the file.
    #[error("cannot open the SQLite database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    /// The file exists but is not a SQLite database (or is damaged beyond reading).
    #[error("{path} is not a SQLite database: {reason}")]
    NotADatabase { path: PathBuf, reason: String },
    /// The file (or its folder) cannot be written, so the provider could never commit anything.
    #[error("the SQLite database {path} is read-only: {reason}")]
    ReadOnly { path: PathBuf, reason: String },
    /// The database was written by a newer duroxide-sqlite whose schema this build does not know.
    #[error(
        "the SQLite database {path} has schema version {found}, newer than version {supported} that this \
         build of duroxide-sqlite knows; open it with a newer duroxide"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// Configuring the connection or applying a migration failed.
    #[error("cannot prepare the SQLite database {path}: {step}: {source}")]
    Setup {
        path: PathBuf,
        step: String,
        source: rusqlite::Error,
    },
    /// The writer's background thread could not be started.
    #[error("cannot start the writer's background thread for the SQLite database {path}: {source}")]
    Thread { path: PathBuf, source: std::io::Error },
}

impl OpenError {
    /// Whether opening again later can succeed (another process held the database locked).
    pub fn is_retryable(&self) -> bool {
        match self {
            OpenError::Open { source, .. } | OpenError::Setup { source, .. } => is_busy(source),
            OpenError::Thread { .. } => true,
            _ => false,
        }
    }
}

impl From<OpenError> for ProviderError {
    fn from(err: OpenError) -> Self {
        let kind = match &err {
            OpenError::InvalidLocation { .. } => ProviderErrorKind::InvalidInput,
            e if e.is_retryable() => ProviderErrorKind::Retryable,
            _ => ProviderErrorKind::Permanent,
        };
        ProviderError::new(kind, "open", err.to_string())
    }
}

/// Whether SQLite gave up because another connection held a lock: waiting and retrying can help.
pub(crate) fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The `ProviderError` for a SQLite failure during `operation`: busy/locked is `Retryable`, a full disk
/// too (space can be freed), everything else `Permanent`.
pub(crate) fn sql_error(operation: &'static str, err: rusqlite::Error) -> ProviderError {
    let kind = match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull) => {
            ProviderErrorKind::Retryable
        }
        _ => ProviderErrorKind::Permanent,
    };
    ProviderError::new(kind, operation, format!("SQLite: {err}"))
}

/// Shorthand for `map_err`: `stmt.execute(..).map_err(sql(OP))?`.
pub(crate) fn sql(operation: &'static str) -> impl Fn(rusqlite::Error) -> ProviderError {
    move |err| sql_error(operation, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: std::os::raw::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_and_locked_are_retryable() {
        for code in [rusqlite::ffi::SQLITE_BUSY, rusqlite::ffi::SQLITE_LOCKED] {
            assert_eq!(sql_error("x", failure(code)).kind, ProviderErrorKind::Retryable);
        }
    }

    #[test]
    fn constraint_violations_are_permanent() {
        let err = sql_error("x", failure(rusqlite::ffi::SQLITE_CONSTRAINT));
        assert_eq!(err.kind, ProviderErrorKind::Permanent);
        assert_eq!(err.operation, "x");
    }
}
