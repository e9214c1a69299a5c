//! Shared connections for single-statement operations: concurrent calls on one connection are
//! pipelined instead of each taking a connection of its own.
//!
//! Why: on a busy server most of the cost of a short statement is not the statement but the round
//! trip around it. A backend that answers one statement and then waits for the next goes to sleep and
//! is woken again, and so is the client; measured on the reference machine (2 cores), four work item
//! acks sent one after another cost the server ~250 µs of CPU each, and the same four acks sent
//! back to back ~110 µs each, whether or not they shared a transaction. tokio-postgres pipelines
//! requests issued concurrently on one client (it writes everything queued before flushing), so
//! fetches and acks from many dispatcher tasks that share a few connections reach the server in
//! batches, without any change to what each of them does: every call is still its own statement and
//! its own transaction (each request ends with a Sync), with its own commit, its own durability and
//! its own errors. An error in one call does not affect the calls around it.
//!
//! A call is a whole transaction by itself (autocommit), with one exception: a batch of acks (see
//! `batch`) sends `BEGIN`, its statements and `COMMIT` as one group ([`Conn::send_together`]). Every
//! request goes out through the connection's send gate, so nothing another task sends lands inside a
//! group: there it would run in the group's transaction and return before that committed (or with
//! it rolled back), and a fetch's settings would apply to the group's commit. Other operations that
//! need a transaction take a pooled connection for themselves. Statements run one after another on a
//! connection, so a slow statement delays those queued behind it: each call takes the least busy
//! connection, and the slow, rare ones (management scans) use the pool.
//!
//! Connections open lazily: the first when the first statement runs, another only when every open one
//! is busy, up to the configured number. A connection that fails is replaced at the next call; the
//! calls that were on it fail as retryable.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use duroxide_core::provider::ProviderError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::connection::Target;

/// One shared connection and the statements prepared on it.
pub(crate) struct Conn {
    client: Client,
    /// Keyed by SQL text (rendered for the schema).
    statements: Mutex<HashMap<String, Statement>>,
    in_flight: AtomicUsize,
    /// Held while requests are handed to the client: a group of them goes out with nothing between.
    send_gate: Mutex<()>,
}

/// A request on a connection: a future that sends it when first polled, then waits for its reply
/// (as tokio-postgres's statement futures do).
pub(crate) type Step<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Runs `statement` as a transaction of its own and returns its rows.
    pub(crate) async fn query(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.send_one(self.client.query(statement, params)).await
    }

    /// Runs `statement` as a transaction of its own and returns how many rows it changed.
    pub(crate) async fn execute(
        &self,
        statement: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        self.send_one(self.client.execute(statement, params)).await
    }

    /// Sends the requests of `steps` back to back in this order, nothing of other callers between
    /// them, without waiting for one another's replies; `sent` runs once they all went out. Returns
    /// their results in order once all replied. (Each step sends on its first poll, and the first
    /// polls of all of them happen under the send gate.)
    pub(crate) async fn send_together<'a, T>(
        &'a self,
        mut steps: Vec<Step<'a, T>>,
        sent: impl FnOnce(),
    ) -> Vec<T> {
        let mut results: Vec<Option<T>> = steps.iter().map(|_| None).collect();
        let mut sent = Some(sent);
        std::future::poll_fn(|cx| {
            let gate = sent.is_some().then(|| self.gate());
            let mut pending = false;
            for (step, result) in steps.iter_mut().zip(results.iter_mut()) {
                if result.is_none() {
                    match step.as_mut().poll(cx) {
                        Poll::Ready(value) => *result = Some(value),
                        Poll::Pending => pending = true,
                    }
                }
            }
            drop(gate);
            if let Some(sent) = sent.take() {
                sent();
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        results.into_iter().flatten().collect()
    }

    /// One request through the send gate.
    async fn send_one<T>(&self, request: impl Future<Output = T> + Send) -> T {
        let mut request = std::pin::pin!(request);
        let mut first = true;
        std::future::poll_fn(|cx| {
            let _gate = std::mem::take(&mut first).then(|| self.gate());
            request.as_mut().poll(cx)
        })
        .await
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, ()> {
        self.send_gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client itself, for the steps of [`send_together`](Self::send_together) only: a request
    /// sent through it elsewhere would bypass the send gate. (A step must not use the gated methods:
    /// it is first polled with the gate held.)
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the connection failed (calls on it would fail at once).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The connection's prepared statement for `sql`, preparing it (one round trip) the first time;
    /// `true` when it was prepared now.
    pub(crate) async fn statement(&self, sql: &str) -> Result<(Statement, bool), tokio_postgres::Error> {
        if let Some(statement) = self.statements().get(sql) {
            return Ok((statement.clone(), false));
        }
        // (A statement of built-in types is prepared in one request, sent at the first poll.)
        let statement = self.send_one(self.client.prepare(sql)).await?;
        self.statements().insert(sql.to_owned(), statement.clone());
        Ok((statement, true))
    }

    fn statements(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection lent to one call; counted as busy until dropped.
pub(crate) struct Lease {
    conn: Arc<Conn>,
}

impl Lease {
    /// Counts a call on `conn` (also one that a wake-up directed there, see `wakeups`).
    pub(crate) fn new(conn: Arc<Conn>) -> Lease {
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        Lease { conn }
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl std::ops::Deref for Lease {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Slot {
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while this slot connects, so that concurrent calls do not open several connections.
    connecting: tokio::sync::Mutex<()>,
    /// A background task is opening this slot's connection.
    opening: AtomicBool,
}

impl Slot {
    /// The slot's connection if it is open and not closed.
    fn live(&self) -> Option<Arc<Conn>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|conn| !conn.client.is_closed())
            .cloned()
    }
}

/// The shared connections of one provider object.
pub(crate) struct Mux {
    target: Target,
    slots: Arc<Vec<Slot>>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux")
            .field("connections", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Mux {
    pub(crate) fn new(target: Target, connections: usize) -> Mux {
        Mux {
            target,
            slots: Arc::new((0..connections.max(1)).map(|_| Slot::default()).collect()),
        }
    }

    /// The least busy open connection. When every open one is busy, another is opened in the
    /// background (the call does not wait for it); when none is open, the call opens one.
    pub(crate) async fn lease(&self, operation: &'static str) -> Result<Lease, ProviderError> {
        let mut best: Option<(usize, Arc<Conn>)> = None;
        let mut closed = None;
        for (i, slot) in self.slots.iter().enumerate() {
            match slot.live() {
                Some(conn) => {
                    let load = conn.in_flight.load(Ordering::SeqCst);
                    if best.as_ref().is_none_or(|(least, _)| load < *least) {
                        best = Some((load, conn));
                    }
                }
                None if closed.is_none() => closed = Some(i),
                None => {}
            }
        }
        match (best, closed) {
            (Some((load, conn)), Some(i)) if load > 0 => {
                if !self.slots[i].opening.swap(true, Ordering::SeqCst) {
                    let (target, slots) = (self.target.clone(), self.slots.clone());
                    tokio::spawn(async move {
                        let _ = connect(&target, &slots[i]).await;
                        slots[i].opening.store(false, Ordering::SeqCst);
                    });
                }
                Ok(Lease::new(conn))
            }
            (Some((_, conn)), _) => Ok(Lease::new(conn)),
            (None, i) => {
                let conn = connect(&self.target, &self.slots[i.unwrap_or(0)])
                    .await
                    .map_err(|reason| ProviderError::retryable(operation, reason))?;
                Ok(Lease::new(conn))
            }
        }
    }
}

/// Opens the slot's connection unless another call just did.
async fn connect(target: &Target, slot: &Slot) -> Result<Arc<Conn>, String> {
    let _connecting = slot.connecting.lock().await;
    if let Some(conn) = slot.live() {
        return Ok(conn);
    }
    let client = target.connect_one().await.map_err(|err| err.to_string())?;
    let conn = Arc::new(Conn {
        client,
        statements: Mutex::new(HashMap::new()),
        in_flight: AtomicUsize::new(0),
        send_gate: Mutex::new(()),
    });
    *slot.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
    Ok(conn)
}
