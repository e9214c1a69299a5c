//! Running operations in transactions: one `BEGIN IMMEDIATE … COMMIT` for a whole batch of queued
//! operations, each in its own savepoint, replies only after the commit.
//!
//! Group commit: operations that queue up while a transaction runs are executed together in the next
//! one. An operation that fails is rolled back to its savepoint alone; the others commit with a single
//! `COMMIT` (one WAL append, or one fsync with `Durability::Full`, instead of many). A caller never
//! sees success for work that was not stored.

use std::panic::{catch_unwind, AssertUnwindSafe};

use duroxide_core::provider::{ProviderError, ProviderErrorKind};
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::sql_error;

/// Why a transaction did not commit, delivered to every operation that was part of it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    kind: ProviderErrorKind,
    message: String,
}

impl Failure {
    fn from_sql(context: &str, err: rusqlite::Error) -> Failure {
        let mapped = sql_error("transaction", err);
        Failure {
            kind: mapped.kind,
            message: format!("{context}: {}", mapped.message),
        }
    }

    fn into_error(self, operation: &'static str) -> ProviderError {
        ProviderError::new(self.kind, operation, self.message)
    }
}

/// One queued operation, erased over its result type.
pub(crate) trait Job: Send {
    /// Runs the operation on `conn` and keeps its result; returns whether it succeeded (so its writes
    /// are to be kept).
    fn execute(&mut self, conn: &Connection) -> bool;
    /// Replies to the caller: with the operation's result once its transaction committed (`Ok`), or
    /// with the reason the transaction failed. Also called for an operation that never ran.
    fn finish(self: Box<Self>, commit: Result<(), Failure>);
}

/// The [`Job`] for an operation returning `T`, answered over a oneshot channel.
pub(crate) struct TypedJob<T, F> {
    operation: &'static str,
    work: Option<F>,
    result: Option<Result<T, ProviderError>>,
    reply: oneshot::Sender<Result<T, ProviderError>>,
}

impl<T, F> TypedJob<T, F> {
    pub(crate) fn new(
        operation: &'static str,
        work: F,
        reply: oneshot::Sender<Result<T, ProviderError>>,
    ) -> TypedJob<T, F> {
        TypedJob {
            operation,
            work: Some(work),
            result: None,
            reply,
        }
    }
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, ProviderError> + Send,
{
    fn execute(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn);
        let succeeded = result.is_ok();
        self.result = Some(result);
        succeeded
    }

    fn finish(self: Box<Self>, commit: Result<(), Failure>) {
        let operation = self.operation;
        let outcome = match (self.result, commit) {
            (Some(result), Ok(())) => result,
            // The operation's own error explains more than the transaction's.
            (Some(result), Err(failure)) => result.and_then(|_| Err(failure.into_error(operation))),
            (None, Err(failure)) => Err(failure.into_error(operation)),
            (None, Ok(())) => Err(ProviderError::permanent(
                operation,
                "the operation panicked; nothing of it was stored",
            )),
        };
        // The caller may have stopped waiting (a cancelled fetch); its lease then simply expires.
        let _ = self.reply.send(outcome);
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs `jobs` in as few transactions as possible (one, unless SQLite aborts a transaction midway).
pub(crate) fn run_batch(conn: &Connection, jobs: impl IntoIterator<Item = Box<dyn Job>>) {
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        if let Err(err) = exec(conn, "BEGIN IMMEDIATE") {
            let failure = Failure::from_sql("starting the transaction", err);
            jobs.for_each(|job| job.finish(Err(failure.clone())));
            return;
        }
        let first = jobs.next();
        // A lone operation needs no savepoint: its failure rolls back the whole transaction.
        let savepoints = jobs.peek().is_some();
        let mut committed: Vec<Box<dyn Job>> = Vec::new();
        let mut aborted = false;
        for mut job in first.into_iter().chain(jobs.by_ref()) {
            if savepoints {
                if let Err(err) = exec(conn, "SAVEPOINT job") {
                    job.finish(Err(Failure::from_sql("starting the savepoint", err)));
                    continue;
                }
            }
            // A panicking operation counts as failed: its writes are rolled back below.
            let succeeded = catch_unwind(AssertUnwindSafe(|| job.execute(conn))).unwrap_or(false);
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (I/O error, full disk, interrupted): the
                // operations before this one lost their work too. Fail them, and start afresh.
                let failure = Failure {
                    kind: ProviderErrorKind::Retryable,
                    message: "SQLite rolled the transaction back; nothing of this operation was stored"
                        .into(),
                };
                committed
                    .drain(..)
                    .for_each(|job| job.finish(Err(failure.clone())));
                job.finish(Err(failure));
                aborted = true;
                break;
            }
            if succeeded {
                if savepoints {
                    if let Err(err) = exec(conn, "RELEASE job") {
                        job.finish(Err(Failure::from_sql("releasing the savepoint", err)));
                        continue;
                    }
                }
                committed.push(job);
            } else {
                let undo = if savepoints {
                    exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
                } else {
                    exec(conn, "ROLLBACK")
                };
                if let Err(err) = undo {
                    tracing::error!(error = %err, "rolling back a failed SQLite operation failed");
                }
                job.finish(Ok(()));
            }
        }
        if aborted {
            continue;
        }
        if conn.is_autocommit() {
            // The lone operation failed and was rolled back above; nothing is left to commit.
            return;
        }
        match exec(conn, "COMMIT") {
            Ok(()) => committed.into_iter().for_each(|job| job.finish(Ok(()))),
            Err(err) => {
                let failure = Failure::from_sql("committing", err);
                if !conn.is_autocommit() {
                    let _ = exec(conn, "ROLLBACK");
                }
                committed
                    .into_iter()
                    .for_each(|job| job.finish(Err(failure.clone())));
            }
        }
    }
}
