//! The writer: one connection, one transaction at a time, run by whichever caller finds it free.
//!
//! Why not a thread per connection: every call used to be sent to a writer thread and answered over a
//! oneshot, two thread hand-offs per call, and those hand-offs (not SQLite) bounded the runtime's
//! throughput and latency. A short transaction on an in-memory database or a WAL file with
//! `synchronous = NORMAL` takes microseconds, less than waking a parked thread, so running it on the
//! calling thread (a tokio worker) is both faster and harmless to the async scheduler.
//!
//! How ("flat combining"): a caller queues its operation and, if no transaction is running, becomes
//! the *combiner*: it runs everything queued (its own operation first) in batched transactions (see
//! [`transaction`](crate::transaction)), then leaves. Callers that find a combiner at work just wait
//! for their reply without blocking their thread, and their operations share its next transaction
//! (group commit). Only one combiner exists at a time, so SQLite sees one writer and the provider's
//! own load never meets "database is locked"; `busy_timeout` only matters against other processes.
//!
//! Fairness: a combiner that has worked for [`INLINE_BUDGET`] while others kept queueing steps down and
//! wakes one of the waiting callers to take over, so no caller is kept from its own reply by a steady
//! stream of other work, and the work stays on the async threads (handing it to a thread would bring
//! back the hand-offs).
//!
//! The background thread: long operations (bulk deletes and prunes, large reads) and, with
//! `Durability::Full`, every operation (each commit waits for an fsync) must not block async threads.
//! Their callers hand the combiner role to a dedicated thread instead, which steps down like any
//! combiner once only short operations are left. The thread also runs the idle hook (noticing other
//! processes' commits) and, as a safety net, operations left queued without a combiner (a step-down
//! whose waiting callers had all given up waiting).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duroxide_core::provider::ProviderError;
use rusqlite::Connection;
use tokio::sync::{oneshot, Notify};

use crate::checkpointer::WalUse;
use crate::transaction::{run_batch, Job, TypedJob};

/// Most operations run in one transaction; bounds how long the first of them waits for its reply.
const MAX_BATCH: usize = 64;

/// How long a caller may combine others' operations before it steps down for a waiting caller.
const INLINE_BUDGET: Duration = Duration::from_millis(1);

/// How often the background thread looks for queued operations without a combiner (and runs the idle
/// hook, if any).
const THREAD_CHECK: Duration = Duration::from_millis(100);

/// How long an operation may hold the connection, and so where it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cost {
    /// Microseconds: run on the calling thread.
    Short,
    /// Unbounded (proportional to stored data): run on the background thread.
    Long,
}

/// Called on the background thread about every [`THREAD_CHECK`] while no transaction runs, with the
/// connection.
pub(crate) type IdleHook = Box<dyn FnMut(&Connection) + Send>;

/// How the writer is set up.
pub(crate) struct WriterConfig {
    /// Run every operation on the background thread (commits wait for an fsync).
    pub(crate) all_long: bool,
    pub(crate) idle: Option<IdleHook>,
    /// Shared with the background checkpointer of a file database.
    pub(crate) wal: Option<Arc<WalUse>>,
}

struct Queued {
    job: Box<dyn Job>,
    long: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// A combiner is at work (on some caller's thread or on the background thread).
    busy: bool,
    /// The combiner role was handed to the background thread.
    thread_turn: bool,
    closing: bool,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the background thread (a hand-over or closing).
    wake: Condvar,
    /// Signalled when a combiner steps down with operations still queued: one waiting caller takes over.
    vacancy: Notify,
    /// Only the combiner locks it, so the lock is never contended; it makes sharing the connection
    /// between threads sound.
    conn: Mutex<Connection>,
    wal: Option<Arc<WalUse>>,
    all_long: bool,
}

/// Where a combiner runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A caller's thread, usually a tokio worker: short operations only, for a bounded time.
    Caller,
    Thread,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // The critical sections only move queue entries and flags; they cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // Operations run under `catch_unwind`; a poisoned lock holds a connection outside a transaction.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the combiner role if nobody holds it while operations are queued.
    fn take_over(&self) -> bool {
        let mut state = self.state();
        let vacant = !state.busy && !state.queue.is_empty();
        if vacant {
            state.busy = true;
        }
        vacant
    }

    /// A step-down's signal can be consumed by a caller whose reply was ready at the same moment; that
    /// caller signals again if the role is still vacant.
    fn pass_on_vacancy(&self) {
        let vacant = {
            let state = self.state();
            !state.busy && !state.queue.is_empty()
        };
        if vacant {
            self.vacancy.notify_one();
        }
    }

    /// Runs queued operations until the queue is empty (then clears `busy`), or until only short
    /// operations are queued and the budget is spent (then steps down for a waiting caller), or, at
    /// `Place::Caller`, until a long operation is queued (then hands over to the thread).
    fn combine(&self, place: Place) {
        let started = Instant::now();
        loop {
            let batch: Vec<Box<dyn Job>> = {
                let mut state = self.state();
                if state.queue.is_empty() {
                    state.busy = false;
                    return;
                }
                let long_queued = state.queue.iter().any(|q| q.long);
                if place == Place::Caller && long_queued {
                    state.thread_turn = true;
                    self.wake.notify_one();
                    return;
                }
                // The thread steps down too once only short operations are left, so a busy provider
                // does not stay on the thread after a long operation.
                if !long_queued && started.elapsed() >= INLINE_BUDGET {
                    state.busy = false;
                    drop(state);
                    self.vacancy.notify_one();
                    return;
                }
                let n = state.queue.len().min(MAX_BATCH);
                state.queue.drain(..n).map(|queued| queued.job).collect()
            };
            let transaction = self.wal.as_deref().map(WalUse::transaction);
            run_batch(&self.conn(), batch);
            drop(transaction);
            if let Some(wal) = &self.wal {
                wal.committed();
            }
        }
    }
}

/// Handle to the writer. Dropping it lets queued work finish, stops the background thread and closes
/// the connection.
pub(crate) struct Writer {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("all_long", &self.inner.all_long)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Takes over `conn` and starts the background thread.
    pub(crate) fn start(conn: Connection, config: WriterConfig) -> std::io::Result<Writer> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            vacancy: Notify::new(),
            conn: Mutex::new(conn),
            wal: config.wal,
            all_long: config.all_long,
        });
        let thread = std::thread::Builder::new()
            .name("duroxide-sqlite-writer".into())
            .spawn({
                let inner = inner.clone();
                move || thread_loop(&inner, config.idle)
            })?;
        Ok(Writer {
            inner,
            thread: Some(thread),
        })
    }

    /// Runs `work` inside a transaction and returns its result once committed. An `Err` from `work`
    /// rolls back everything it did. `cost` decides whether it may run on the calling thread.
    pub(crate) async fn run<T, F>(
        &self,
        operation: &'static str,
        cost: Cost,
        work: F,
    ) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ProviderError> + Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        let long = cost == Cost::Long || self.inner.all_long;
        let combine_here = {
            let mut state = self.inner.state();
            state.queue.push_back(Queued {
                job: Box::new(TypedJob::new(operation, work, reply)),
                long,
            });
            if state.busy {
                false
            } else {
                state.busy = true;
                if long {
                    state.thread_turn = true;
                    self.inner.wake.notify_one();
                }
                !long
            }
        };
        if combine_here {
            self.inner.combine(Place::Caller);
        }
        tokio::pin!(receiver);
        loop {
            tokio::select! {
                // A reply wins over a vacancy, which then passes on to another waiter.
                biased;
                reply = &mut receiver => {
                    self.inner.pass_on_vacancy();
                    return reply.map_err(|_| stopped(operation))?;
                }
                () = self.inner.vacancy.notified() => {
                    if self.inner.take_over() {
                        self.inner.combine(Place::Caller);
                    }
                }
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The thread finishes a hand-over first; joining makes "provider dropped" mean "connection
        // closed", so a test (or an application) can reopen the file at once.
        self.inner.state().closing = true;
        self.inner.wake.notify_one();
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
        "the SQLite writer stopped before answering (the provider is closing)",
    )
}

fn thread_loop(inner: &Inner, mut idle: Option<IdleHook>) {
    let mut state = inner.state();
    loop {
        if state.thread_turn {
            state.thread_turn = false;
            drop(state);
            inner.combine(Place::Thread);
            state = inner.state();
            continue;
        }
        if state.closing {
            // Operations whose callers stopped waiting still run before the connection closes.
            if !state.busy && !state.queue.is_empty() {
                state.busy = true;
                drop(state);
                inner.combine(Place::Thread);
                state = inner.state();
                continue;
            }
            return;
        }
        let (guard, waited) = inner
            .wake
            .wait_timeout(state, THREAD_CHECK)
            .unwrap_or_else(PoisonError::into_inner);
        state = guard;
        if waited.timed_out() && !state.busy {
            // Holding the combiner role keeps callers off the connection meanwhile; they queue and
            // are served by the `combine` that follows (with anything left queued before).
            state.busy = true;
            drop(state);
            if let Some(hook) = &mut idle {
                hook(&inner.conn());
            }
            inner.combine(Place::Thread);
            state = inner.state();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::sql_error;
    use duroxide_core::provider::ProviderErrorKind;

    fn writer(all_long: bool) -> Arc<Writer> {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)", [])
            .expect("table");
        let config = WriterConfig {
            all_long,
            idle: None,
            wal: None,
        };
        Arc::new(Writer::start(conn, config).expect("start"))
    }

    fn insert(conn: &Connection, id: i64) -> Result<(), ProviderError> {
        conn.execute("INSERT INTO t (id) VALUES (?1)", [id])
            .map(drop)
            .map_err(|e| sql_error("insert", e))
    }

    async fn ids(writer: &Writer) -> Vec<i64> {
        writer
            .run("read", Cost::Short, |conn| {
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
        let writer = writer(false);
        // Hold the writer with a long operation (on the background thread) so that the next three
        // operations queue up and run as one batch.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let gate = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .run("gate", Cost::Long, move |_| {
                        hold.recv().map_err(|_| stopped("gate"))
                    })
                    .await
            }
        });
        tokio::task::yield_now().await; // the gate is queued first
        let spawn = |id: i64, fail: bool| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .run("op", Cost::Short, move |conn| {
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
        for all_long in [false, true] {
            let writer = writer(all_long);
            let err = writer
                .run("boom", Cost::Short, |conn| -> Result<(), ProviderError> {
                    insert(conn, 7)?;
                    panic!("a bug in an operation");
                })
                .await
                .expect_err("the panic is reported");
            assert_eq!(err.kind, ProviderErrorKind::Permanent);
            assert_eq!(err.operation, "boom");
            writer
                .run("after", Cost::Short, |conn| insert(conn, 8))
                .await
                .expect("the writer still runs");
            assert_eq!(
                ids(&writer).await,
                [8],
                "the panicking operation's write was rolled back"
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn short_operations_run_on_the_calling_thread_and_long_ones_do_not() {
        let writer = writer(false);
        let caller = std::thread::current().id();
        let short = writer
            .run("short", Cost::Short, |_| Ok(std::thread::current().id()))
            .await
            .expect("short");
        let long = writer
            .run("long", Cost::Long, |_| Ok(std::thread::current().id()))
            .await
            .expect("long");
        assert_eq!(short, caller);
        assert_ne!(long, caller);
        let everything_long = self::writer(true);
        let offloaded = everything_long
            .run("short", Cost::Short, |_| Ok(std::thread::current().id()))
            .await
            .expect("short");
        assert_ne!(
            offloaded, caller,
            "with all_long, short operations go to the thread too"
        );
    }

    #[test]
    fn a_combiner_past_its_budget_leaves_the_rest_to_a_waiting_caller() {
        let writer = writer(false);
        let (started, has_started) = std::sync::mpsc::channel();
        let slow = std::thread::spawn({
            let writer = writer.clone();
            move || {
                block_on(writer.run("slow", Cost::Short, move |_| {
                    started.send(()).expect("signal");
                    std::thread::sleep(INLINE_BUDGET * 20);
                    Ok(std::thread::current().id())
                }))
            }
        });
        has_started.recv().expect("the slow operation runs");
        // Queued behind the slow operation's transaction, from two other threads.
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    block_on(writer.run("queued", Cost::Short, |_| Ok(std::thread::current().id())))
                })
            })
            .collect();
        // Both are queued once the slow operation ends (its combiner then finds them).
        while writer.inner.state().queue.len() < 2 {
            std::thread::yield_now();
        }
        let slow_thread = slow.join().expect("join").expect("slow");
        for handle in queued {
            let ran_on = handle.join().expect("join").expect("queued");
            assert_ne!(ran_on, slow_thread, "the combiner stepped down after its budget");
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_all_get_their_own_results() {
        let writer = writer(false);
        let tasks: Vec<_> = (0..8_i64)
            .map(|task| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    for i in 0..200 {
                        let id = task * 1_000 + i;
                        let got = writer
                            .run("op", Cost::Short, move |conn| insert(conn, id).map(|()| id))
                            .await
                            .expect("op");
                        assert_eq!(got, id);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("join");
        }
        assert_eq!(ids(&writer).await.len(), 1_600);
    }
}
