//! Where a database lives: a file path or a private in-memory database, parsed from a path or `sqlite:` URL.

use std::path::{Path, PathBuf};

use crate::error::OpenError;

/// The database a provider opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A database file (created with its missing parent folders when absent).
    File(PathBuf),
    /// A private in-memory database that lives as long as the provider.
    Memory,
}

impl Location {
    /// Reads a plain path or a `sqlite:` URL (`sqlite:app.db`, `sqlite://app.db`, `sqlite:///abs/app.db`,
    /// `sqlite::memory:`). A URL's query string (`?mode=rwc`, ...) is accepted and ignored: the provider
    /// always opens read-write and creates the file, which is what such options usually ask for.
    pub(crate) fn parse(text: &str) -> Result<Location, OpenError> {
        let invalid = |reason: &str| OpenError::InvalidLocation {
            location: text.to_owned(),
            reason: reason.into(),
        };
        let path = match text.strip_prefix("sqlite:") {
            Some(rest) => {
                // `sqlite://x` (sqlx style) names the path `x`; `sqlite:///abs` names `/abs`.
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                rest.split_once('?').map_or(rest, |(path, _query)| path)
            }
            None => text,
        };
        if path.is_empty() {
            return Err(invalid("the path is empty"));
        }
        if path == ":memory:" {
            return Ok(Location::Memory);
        }
        if path.contains('\0') {
            return Err(invalid("the path contains a NUL byte"));
        }
        Ok(Location::File(PathBuf::from(path)))
    }

    /// The file path, for error messages and checks; `None` for memory.
    pub(crate) fn path(&self) -> Option<&Path> {
        match self {
            Location::File(path) => Some(path),
            Location::Memory => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str) -> Location {
        Location::File(PathBuf::from(s))
    }

    #[test]
    fn plain_paths_are_files() {
        assert_eq!(Location::parse("app.db").ok(), Some(file("app.db")));
        assert_eq!(Location::parse("/tmp/x/app.db").ok(), Some(file("/tmp/x/app.db")));
    }

    #[test]
    fn sqlite_urls_name_paths() {
        assert_eq!(Location::parse("sqlite:app.db").ok(), Some(file("app.db")));
        assert_eq!(Location::parse("sqlite://app.db").ok(), Some(file("app.db")));
        assert_eq!(
            Location::parse("sqlite:///tmp/app.db").ok(),
            Some(file("/tmp/app.db"))
        );
        assert_eq!(
            Location::parse("sqlite://data/app.db?mode=rwc").ok(),
            Some(file("data/app.db"))
        );
        assert_eq!(Location::parse("sqlite::memory:").ok(), Some(Location::Memory));
    }

    #[test]
    fn empty_paths_are_refused() {
        assert!(Location::parse("").is_err());
        assert!(Location::parse("sqlite:").is_err());
        assert!(Location::parse("sqlite://?mode=rwc").is_err());
    }
}
