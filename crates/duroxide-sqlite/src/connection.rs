//! Opening and configuring the one SQLite connection a provider owns: checks first, writes after.
//!
//! The order matters for "bad input writes nothing": the folder is created only when missing, then the
//! file is opened and *read* (is it a database? which schema version?) before the first statement that
//! writes (`journal_mode = WAL`, migrations).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, DatabaseName, ErrorCode, OpenFlags};

use crate::checkpointer;
use crate::error::OpenError;
use crate::migrations;
use crate::options::Durability;

/// How long a statement waits for another process's lock before giving up with "busy". The provider's
/// own writes never contend (one writer at a time); this is the safety net for other processes (a second
/// runtime on the same file, a backup, the `sqlite3` shell).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection: every hot statement of the provider fits, so none is
/// parsed twice.
const STATEMENT_CACHE: usize = 256;

/// Opens (creating when absent) the database file at `path`, migrated and ready.
pub(crate) fn open_file(path: &Path, durability: Durability) -> Result<Connection, OpenError> {
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_folder(path, folder)?;
    }
    if path.is_dir() {
        return Err(OpenError::NotADatabase {
            path: path.to_owned(),
            reason: "it is a folder".into(),
        });
    }
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|source| OpenError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| setup(path, "setting busy_timeout", source))?;
    // SQLite opens a write-protected file read-only without complaint; every later commit would fail.
    if conn.is_readonly(DatabaseName::Main).unwrap_or(false) {
        return Err(OpenError::ReadOnly {
            path: path.to_owned(),
            reason: "the file is write-protected".into(),
        });
    }
    // Reading the schema makes SQLite read and check the file header: a file that is not a database
    // fails here, before anything has been written to it.
    if let Err(err) = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| {
        row.get::<_, i64>(0)
    }) {
        return Err(match err.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => OpenError::NotADatabase {
                path: path.to_owned(),
                reason: err.to_string(),
            },
            _ => setup(path, "reading the schema", err),
        });
    }
    migrations::check_not_newer(&conn, path)?;

    // WAL lets readers (the sqlite3 shell, backups, other processes) run beside the writer; see
    // `Durability` for the synchronous setting (NORMAL by default, the standard pairing with WAL).
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|source| setup(path, "switching to WAL", source))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "SQLite refused WAL mode; continuing in this journal mode");
    }
    conn.pragma_update(None, "synchronous", durability.synchronous_pragma())
        .map_err(|source| setup(path, "setting synchronous", source))?;
    // Checkpoints run on a background connection (see `checkpointer`); inline ones only as a backstop.
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        checkpointer::WRITER_AUTOCHECKPOINT_PAGES,
    )
    .map_err(|source| setup(path, "setting wal_autocheckpoint", source))?;
    configure(&conn, path)?;
    migrations::migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens a second connection to the database file at `path` (created and migrated by [`open_file`])
/// for reads: same busy timeout and statement cache, a smaller page cache (its reads are point reads).
pub(crate) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "cache_size", -4_096)?;
    Ok(conn)
}

/// Opens a private in-memory database, migrated and ready.
pub(crate) fn open_memory() -> Result<Connection, OpenError> {
    let path = Path::new(":memory:");
    let mut conn = Connection::open_in_memory().map_err(|source| OpenError::Open {
        path: path.to_owned(),
        source,
    })?;
    configure(&conn, path)?;
    migrations::migrate(&mut conn, path)?;
    Ok(conn)
}

/// Settings shared by both kinds of database.
fn configure(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(|source| setup(path, "setting temp_store", source))?;
    // 16 MiB of page cache keeps the hot indexes of a busy database in memory.
    conn.pragma_update(None, "cache_size", -16_384)
        .map_err(|source| setup(path, "setting cache_size", source))?;
    Ok(())
}

/// Makes sure `folder` exists and is a folder, creating it (and its parents) when missing.
fn ensure_folder(path: &Path, folder: &Path) -> Result<(), OpenError> {
    let fail = |reason: String| OpenError::Folder {
        path: path.to_owned(),
        folder: folder.to_owned(),
        reason,
    };
    match std::fs::metadata(folder) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(fail("it exists and is not a folder".into())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(folder).map_err(|err| fail(err.to_string()))
        }
        Err(err) => Err(fail(err.to_string())),
    }
}

fn setup(path: &Path, step: &str, source: rusqlite::Error) -> OpenError {
    OpenError::Setup {
        path: path.to_owned(),
        step: step.to_owned(),
        source,
    }
}
