//! A second connection for short client reads of a file database, so they never wait for the writer.
//!
//! Why: in WAL mode readers and the writer do not block each other, but on the writer's connection a
//! read queues behind whatever transaction is running (and takes the write lock, which other
//! processes then wait for). Status polls and KV reads are frequent and tiny, so they run at once on
//! the calling thread, each in its own deferred transaction (a consistent snapshot that sees every
//! commit made before it began, so a caller reads its own writes). The lock only serialises readers of
//! this provider among themselves, for microseconds. An in-memory database has a single connection;
//! its reads go through the writer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use duroxide_core::provider::ProviderError;
use rusqlite::Connection;

use crate::checkpointer::WalUse;
use crate::error::sql_error;

pub(crate) struct Reader {
    conn: Mutex<Connection>,
    /// Shared with the checkpointer, which may hold reads off for a few milliseconds.
    wal: Arc<WalUse>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens the reading connection of the (already migrated) database at `path`.
    pub(crate) fn open(path: &Path, wal: Arc<WalUse>) -> rusqlite::Result<Reader> {
        let conn = crate::connection::open_reader(path)?;
        Ok(Reader {
            conn: Mutex::new(conn),
            wal,
        })
    }

    /// Runs `work` in a read transaction on the calling thread.
    pub(crate) fn read<T>(
        &self,
        operation: &'static str,
        work: impl FnOnce(&Connection) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        // A panic in `work` is caught below; the connection is then outside any transaction.
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let _transaction = self.wal.transaction();
        conn.prepare_cached("BEGIN")
            .and_then(|mut stmt| stmt.execute([]))
            .map_err(|err| sql_error(operation, err))?;
        let result = catch_unwind(AssertUnwindSafe(|| work(&conn))).unwrap_or_else(|_| {
            Err(ProviderError::permanent(
                operation,
                "the read panicked; nothing was changed",
            ))
        });
        // Ending a read transaction only releases its snapshot; it cannot lose anything.
        if let Err(err) = conn
            .prepare_cached("COMMIT")
            .and_then(|mut stmt| stmt.execute([]))
        {
            tracing::warn!(operation, error = %err, "ending a SQLite read transaction failed");
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Durability;

    fn count(conn: &Connection) -> Result<i64, ProviderError> {
        conn.query_row("SELECT COUNT(*) FROM instances", [], |row| row.get(0))
            .map_err(|err| sql_error("count", err))
    }

    const INSERT: &str =
        "INSERT INTO instances (instance_id, name, current_execution_id, status, created_at_ms, \
                          updated_at_ms) VALUES ('i', 'n', 1, 'Running', 0, 0)";

    #[test]
    fn reads_run_beside_an_open_write_transaction_and_see_every_earlier_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r.db");
        let writer = crate::connection::open_file(&path, Durability::Normal).expect("open");
        let reader = Reader::open(&path, Arc::default()).expect("reader");

        writer.execute_batch("BEGIN IMMEDIATE").expect("begin");
        writer.execute(INSERT, []).expect("insert");
        // The writer holds the write lock: the read neither waits nor sees the uncommitted row.
        let started = std::time::Instant::now();
        assert_eq!(reader.read("count", count).expect("read"), 0);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));

        writer.execute_batch("COMMIT").expect("commit");
        assert_eq!(reader.read("count", count).expect("read"), 1);
    }

    #[test]
    fn a_panicking_read_is_an_error_and_the_reader_goes_on() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r.db");
        let _writer = crate::connection::open_file(&path, Durability::Normal).expect("open");
        let reader = Reader::open(&path, Arc::default()).expect("reader");
        let err = reader
            .read("boom", |_| -> Result<(), ProviderError> {
                panic!("a bug in a read")
            })
            .expect_err("reported");
        assert_eq!(err.operation, "boom");
        assert_eq!(reader.read("count", count).expect("read"), 0);
    }
}
