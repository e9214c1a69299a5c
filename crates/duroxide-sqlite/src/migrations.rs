//! Versioned, forward-only schema migrations, recorded in the database itself.
//!
//! Each migration runs once, in order, inside one `BEGIN IMMEDIATE` transaction together with the row
//! that records it in `schema_migrations`; so several processes opening a fresh file at once serialise
//! on SQLite's write lock, and the later ones find the work done. A database whose recorded version is
//! newer than [`LATEST_VERSION`] is refused before anything is written.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::clock::now_ms;
use crate::error::OpenError;

/// One schema change. Versions are consecutive from 1; a released migration is never edited.
#[derive(Debug)]
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "initial schema",
    sql: include_str!("migrations/0001_initial.sql"),
}];

/// The schema version this build writes and reads.
pub const LATEST_VERSION: i64 = 1;

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version       INTEGER NOT NULL PRIMARY KEY,
    description   TEXT    NOT NULL,
    applied_at_ms INTEGER NOT NULL
)";

/// The highest applied version, `None` for a database without duroxide tables. Reads only, so it is
/// safe to call before deciding whether the file may be touched at all.
pub(crate) fn applied_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |row| row.get(0),
    )?;
    if !has_table {
        return Ok(None);
    }
    conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
        row.get::<_, Option<i64>>(0)
    })
    .optional()
    .map(Option::flatten)
}

/// Refuses a database written by a newer build.
pub(crate) fn check_not_newer(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let found = applied_version(conn).map_err(|source| setup(path, "reading the schema version", source))?;
    match found {
        Some(found) if found > LATEST_VERSION => Err(OpenError::SchemaTooNew {
            path: path.to_owned(),
            found,
            supported: LATEST_VERSION,
        }),
        _ => Ok(()),
    }
}

/// Applies every migration the database lacks, in one transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|source| setup(path, "starting the migration transaction", source))?;
    // Checked again under the write lock: another process may have migrated since the first look.
    check_not_newer(&tx, path)?;
    tx.execute(CREATE_MIGRATIONS_TABLE, [])
        .map_err(|source| setup(path, "creating schema_migrations", source))?;
    let current = applied_version(&tx)
        .map_err(|source| setup(path, "reading the schema version", source))?
        .unwrap_or(0);
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let step = || {
            format!(
                "applying migration {} ({})",
                migration.version, migration.description
            )
        };
        tx.execute_batch(migration.sql)
            .map_err(|source| setup(path, &step(), source))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, description, applied_at_ms) VALUES (?1, ?2, ?3)",
            rusqlite::params![migration.version, migration.description, now_ms()],
        )
        .map_err(|source| setup(path, &step(), source))?;
    }
    tx.commit()
        .map_err(|source| setup(path, "committing the migrations", source))
}

fn setup(path: &Path, step: &str, source: rusqlite::Error) -> OpenError {
    OpenError::Setup {
        path: path.to_owned(),
        step: step.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_end_at_latest() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i64 + 1,
                "migration {} is out of sequence",
                m.description
            );
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(LATEST_VERSION));
    }

    #[test]
    fn migrating_twice_applies_each_version_once() {
        let mut conn = Connection::open_in_memory().expect("open");
        let path = Path::new(":memory:");
        migrate(&mut conn, path).expect("first");
        migrate(&mut conn, path).expect("second");
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, LATEST_VERSION);
        assert_eq!(applied_version(&conn).expect("version"), Some(LATEST_VERSION));
    }

    #[test]
    fn a_newer_version_is_refused() {
        let mut conn = Connection::open_in_memory().expect("open");
        let path = Path::new(":memory:");
        migrate(&mut conn, path).expect("migrate");
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?1, 'future', 0)",
            [LATEST_VERSION + 1],
        )
        .expect("bump");
        let err = migrate(&mut conn, path).expect_err("must refuse");
        assert!(
            matches!(err, OpenError::SchemaTooNew { found, .. } if found == LATEST_VERSION + 1),
            "{err}"
        );
    }
}
