//! The single writer: one thread owns the connection and runs every operation inside a transaction.
//!
//! Why one thread: SQLite allows one writer at a time, and two connections of the same process
//! contending for it is exactly what produced "database is locked" under light load in earlier designs.
//! With a single owner of the connection, the provider's own operations queue in a channel instead of
//! racing for the file lock; `busy_timeout` only matters against *other* processes.
//!
//! Group commit: operations that queue up while a transaction runs are executed together in the next
//! one, each inside its own savepoint. An operation that fails is rolled back to its savepoint alone;
//! the others commit with a single `COMMIT` (one WAL append instead of many). Replies are sent only
//! after the commit, so a caller never sees success for work that was not stored.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use duroxide_core::provider::{ProviderError, ProviderErrorKind};
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::sql_error;

/// Most operations run in one transaction; bounds how long the first of them waits for its reply.
const MAX_BATCH: usize = 64;

/// How long the idle writer keeps looking for the next operation before it sleeps.
///
/// Only the writer spins, and it yields its CPU between looks. Callers do not: a caller spinning on
/// its reply (tried: yielding to the tokio scheduler until it arrives) halved latency on an idle
/// machine but made it three to five times worse on a busy one, where the spinning thread takes the
/// CPU the writer needs.
const SPIN: Duration = Duration::from_micros(50);

/// Called on the writer thread whenever it has been idle for `every`, with the connection.
pub(crate) struct IdleHook {
    pub(crate) every: Duration,
    pub(crate) run: Box<dyn FnMut(&Connection) + Send>,
}

impl std::fmt::Debug for IdleHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleHook")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// Why a transaction did not commit, delivered to every operation that was part of it.
#[derive(Debug, Clone)]
struct Failure {
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

/// Sends an operation's reply once its transaction committed (`Ok`) or failed (`Err`).
type Deliver = Box<dyn FnOnce(Result<(), Failure>) + Send>;

/// An executed operation awaiting the fate of its transaction.
struct Executed {
    succeeded: bool,
    deliver: Deliver,
}

/// One queued operation, erased over its result type.
trait Job: Send {
    fn execute(self: Box<Self>, conn: &Connection) -> Executed;
    /// Fails the operation without running it (the transaction could not even start).
    fn reject(self: Box<Self>, failure: Failure);
}

struct TypedJob<T, F> {
    operation: &'static str,
    work: F,
    reply: oneshot::Sender<Result<T, ProviderError>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, ProviderError> + Send,
{
    fn execute(self: Box<Self>, conn: &Connection) -> Executed {
        let TypedJob {
            operation,
            work,
            reply,
        } = *self;
        let result = work(conn);
        let succeeded = result.is_ok();
        let deliver: Deliver = Box::new(move |commit| {
            let outcome = match commit {
                Ok(()) => result,
                // The operation's own error explains more than the transaction's.
                Err(failure) => result.and_then(|_| Err(failure.into_error(operation))),
            };
            // The caller may have stopped waiting (a cancelled fetch); its lease then simply expires.
            let _ = reply.send(outcome);
        });
        Executed { succeeded, deliver }
    }

    fn reject(self: Box<Self>, failure: Failure) {
        let _ = self.reply.send(Err(failure.into_error(self.operation)));
    }
}

/// Handle to the writer thread. Dropping it lets queued work finish, then closes the connection.
pub(crate) struct Writer {
    sender: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("running", &self.sender.is_some())
            .finish()
    }
}

impl Writer {
    /// Moves `conn` onto a new writer thread. `commits`, when given, counts committed transactions
    /// (the background checkpointer watches it).
    pub(crate) fn start(
        conn: Connection,
        idle: Option<IdleHook>,
        commits: Option<Arc<AtomicU64>>,
    ) -> std::io::Result<Writer> {
        let (sender, receiver) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("duroxide-sqlite-writer".into())
            .spawn(move || writer_loop(conn, receiver, idle, commits))?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Runs `work` on the writer thread inside a transaction and returns its result once committed. An
    /// `Err` from `work` rolls back everything it did.
    pub(crate) async fn run<T, F>(&self, operation: &'static str, work: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ProviderError> + Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob {
            operation,
            work,
            reply,
        });
        let sender = self.sender.as_ref().ok_or_else(|| stopped(operation))?;
        sender.send(job).map_err(|_| stopped(operation))?;
        receiver.await.map_err(|_| stopped(operation))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the loop after the queued work; joining makes "provider dropped"
        // mean "connection closed", so a test (or an application) can reopen the file at once.
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

fn stopped(operation: &'static str) -> ProviderError {
    ProviderError::permanent(
        operation,
        "the SQLite writer thread stopped before answering (the operation panicked or the provider is closing)",
    )
}

fn writer_loop(
    conn: Connection,
    receiver: mpsc::Receiver<Box<dyn Job>>,
    mut idle: Option<IdleHook>,
    commits: Option<Arc<AtomicU64>>,
) {
    loop {
        let spun = spin_for_work(&receiver);
        let first = match (spun, &mut idle) {
            (Some(job), _) => job,
            (None, Some(hook)) => match receiver.recv_timeout(hook.every) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    (hook.run)(&conn);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            (None, None) => match receiver.recv() {
                Ok(job) => job,
                Err(mpsc::RecvError) => return,
            },
        };
        let mut batch = Vec::with_capacity(8);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
        if let Some(commits) = &commits {
            commits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Looks for work without sleeping for a short while before the loop blocks on the channel. A caller
/// that just got its reply usually sends the next operation within microseconds (a fetch is followed
/// by its ack); catching it here saves waking a parked thread, which costs tens of microseconds on a
/// virtual machine.
fn spin_for_work(receiver: &mpsc::Receiver<Box<dyn Job>>) -> Option<Box<dyn Job>> {
    let started = std::time::Instant::now();
    while started.elapsed() < SPIN {
        match receiver.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => return None,
        }
    }
    None
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs `jobs` in as few transactions as possible (one, unless SQLite aborts a transaction midway).
fn run_batch(conn: &Connection, jobs: Vec<Box<dyn Job>>) {
    let mut jobs = jobs.into_iter();
    while jobs.len() > 0 {
        if let Err(err) = exec(conn, "BEGIN IMMEDIATE") {
            let failure = Failure::from_sql("starting the transaction", err);
            jobs.for_each(|job| job.reject(failure.clone()));
            return;
        }
        // A lone operation needs no savepoint: its failure rolls back the whole transaction.
        let savepoints = jobs.len() > 1;
        let mut committed: Vec<Deliver> = Vec::with_capacity(jobs.len());
        let mut aborted = false;
        for job in jobs.by_ref() {
            if savepoints {
                if let Err(err) = exec(conn, "SAVEPOINT job") {
                    job.reject(Failure::from_sql("starting the savepoint", err));
                    continue;
                }
            }
            let executed =
                catch_unwind(AssertUnwindSafe(|| job.execute(conn))).unwrap_or_else(|_| Executed {
                    // The reply channel was dropped while unwinding, so the caller learns of the failure.
                    succeeded: false,
                    deliver: Box::new(|_| {}),
                });
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
                    .for_each(|deliver| deliver(Err(failure.clone())));
                (executed.deliver)(Err(failure));
                aborted = true;
                break;
            }
            if executed.succeeded {
                if savepoints {
                    if let Err(err) = exec(conn, "RELEASE job") {
                        (executed.deliver)(Err(Failure::from_sql("releasing the savepoint", err)));
                        continue;
                    }
                }
                committed.push(executed.deliver);
            } else {
                let undo = if savepoints {
                    exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
                } else {
                    exec(conn, "ROLLBACK")
                };
                if let Err(err) = undo {
                    tracing::error!(error = %err, "rolling back a failed SQLite operation failed");
                }
                (executed.deliver)(Ok(()));
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
            Ok(()) => committed.into_iter().for_each(|deliver| deliver(Ok(()))),
            Err(err) => {
                let failure = Failure::from_sql("committing", err);
                if !conn.is_autocommit() {
                    let _ = exec(conn, "ROLLBACK");
                }
                committed
                    .into_iter()
                    .for_each(|deliver| deliver(Err(failure.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn writer() -> Arc<Writer> {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", [])
            .expect("table");
        Arc::new(Writer::start(conn, None, None).expect("start"))
    }

    fn insert(conn: &Connection, id: i64) -> Result<(), ProviderError> {
        conn.execute("INSERT INTO t (id) VALUES (?1)", [id])
            .map(drop)
            .map_err(|e| sql_error("insert", e))
    }

    async fn ids(writer: &Writer) -> Vec<i64> {
        writer
            .run("read", |conn| {
                let mut stmt = conn
                    .prepare("SELECT id FROM t ORDER BY id")
                    .map_err(|e| sql_error("read", e))?;
                let rows = stmt
                    .query_map([], |row| row.get(0))
                    .map_err(|e| sql_error("read", e))?;
                rows.collect::<Result<Vec<i64>, _>>()
                    .map_err(|e| sql_error("read", e))
            })
            .await
            .expect("read")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failing_operation_in_a_shared_transaction_rolls_back_alone() {
        let writer = writer();
        // Hold the writer so that the next three operations queue up and run as one batch.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let gate = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .run("gate", move |_| hold.recv().map_err(|_| stopped("gate")))
                    .await
            }
        });
        let spawn = |id: i64, fail: bool| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .run("op", move |conn| {
                        insert(conn, id)?;
                        if fail {
                            return Err(ProviderError::permanent("op", "refused after writing"));
                        }
                        Ok(id)
                    })
                    .await
            })
        };
        let ops = [spawn(1, false), spawn(2, true), spawn(3, false)];
        // On a current-thread runtime, one yield polls every spawned task once: all jobs are queued.
        tokio::task::yield_now().await;
        release.send(()).expect("release the gate");
        gate.await.expect("join").expect("gate");

        let mut results = Vec::new();
        for op in ops {
            results.push(op.await.expect("join").map_err(|e| e.message));
        }
        assert_eq!(results, [Ok(1), Err("refused after writing".to_owned()), Ok(3)]);
        assert_eq!(ids(&writer).await, [1, 3]);
    }

    #[tokio::test]
    async fn a_panicking_operation_fails_alone_and_the_writer_goes_on() {
        let writer = writer();
        let err = writer
            .run("boom", |conn| -> Result<(), ProviderError> {
                insert(conn, 7)?;
                panic!("a bug in an operation");
            })
            .await
            .expect_err("the panic is reported");
        assert_eq!(err.kind, ProviderErrorKind::Permanent);
        assert_eq!(err.operation, "boom");
        writer
            .run("after", |conn| insert(conn, 8))
            .await
            .expect("the writer still runs");
        assert_eq!(
            ids(&writer).await,
            [8],
            "the panicking operation's write was rolled back"
        );
    }
}
