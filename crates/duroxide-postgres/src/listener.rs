//! The listener connection: LISTEN for other processes' writes, and NOTIFY them of ours.
//!
//! Each provider object keeps one dedicated connection outside the pool. It LISTENs on the schema's
//! channel and turns every notification into a wake-up of the right queue. The same connection sends
//! this object's own announcements (`pg_notify`), coalesced: while one is in flight, further ones merge
//! into the next. A notification names its queue and how many items it announces (`o3`, `w1`; `*` for
//! "wake every fetch"), so that other processes wake only as many fetches as there is work for.
//!
//! Why notifications are sent after the commit, from here, rather than inside the writing transaction:
//! PostgreSQL serialises the commits of all transactions that issued NOTIFY on one global lock held
//! across the commit's WAL flush, which on this hardware cut a write workload from ~6,000 to ~1,700
//! commits/s. A separate NOTIFY-only transaction writes no WAL and takes microseconds. The price is that
//! a process dying between its commit and its notification leaves other processes to notice the work at
//! their next due time or recheck (`wakeups::RECHECK`) instead of at once; nothing is lost.
//!
//! Notifications sent by this connection come back to it; they are ignored (by backend pid), since
//! this object's fetches were already woken directly. When the connection drops, the listener
//! reconnects with backoff; meanwhile fetches fall back to looking at every wake-up.

use std::future::poll_fn;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Socket};

use crate::connection::Target;
use crate::error::{describe, ConnectError};
use crate::wakeups::{Queue, Wake, Wakeups};

const ORCHESTRATOR_PREFIX: char = 'o';
const WORKER_PREFIX: char = 'w';
/// The pending count that stands for [`Wake::All`].
const ALL: u32 = u32::MAX;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Announcements waiting to be sent: per queue, the items announced since the last NOTIFY (0: none;
/// [`ALL`]: wake every fetch).
#[derive(Debug, Default)]
struct Outbox {
    orchestrator: AtomicU32,
    worker: AtomicU32,
    ready: Notify,
    /// NOTIFY statements sent so far.
    sent: AtomicU64,
}

/// The listener of one provider object; dropping it stops its task and closes its connection.
#[derive(Debug)]
pub(crate) struct Listener {
    outbox: Arc<Outbox>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Connects, LISTENs on `channel` and starts the task; fails if the first connection fails.
    pub(crate) async fn start(
        target: Target,
        channel: String,
        wakeups: Arc<Wakeups>,
    ) -> Result<Listener, ConnectError> {
        let outbox = Arc::new(Outbox::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        let description = target.description.clone();
        let task = tokio::spawn(run(target, channel, wakeups, outbox.clone(), ready_tx));
        match ready_rx.await {
            Ok(Ok(())) => Ok(Listener { outbox, task }),
            Ok(Err(err)) => {
                task.abort();
                Err(err)
            }
            Err(_) => Err(ConnectError::Refused {
                target: description,
                reason: "the listener task ended before it was ready".into(),
                retryable: true,
            }),
        }
    }

    /// Tells every other provider object on the schema that `queue` has new work. Returns at once.
    pub(crate) fn announce(&self, queue: Queue, wake: Wake) {
        let pending = match queue {
            Queue::Orchestrator => &self.outbox.orchestrator,
            Queue::Worker => &self.outbox.worker,
        };
        let _ = pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |count| {
            Some(match wake {
                Wake::Some(n) => count.saturating_add(n).min(ALL - 1).max(count),
                Wake::All => ALL,
            })
        });
        self.outbox.ready.notify_one();
    }

    /// How many NOTIFY statements this listener has sent.
    pub(crate) fn notifications_sent(&self) -> u64 {
        self.outbox.sent.load(Ordering::Relaxed)
    }
}

/// Marks the wake-ups as not listening when dropped.
struct DeafOnExit<'a>(&'a Wakeups);

impl Drop for DeafOnExit<'_> {
    fn drop(&mut self) {
        self.0.set_listening(false);
    }
}

/// Connects and serves until the provider is dropped, reconnecting with backoff.
async fn run(
    target: Target,
    channel: String,
    wakeups: Arc<Wakeups>,
    outbox: Arc<Outbox>,
    ready: oneshot::Sender<Result<(), ConnectError>>,
) {
    let mut ready = Some(ready);
    let mut retry = FIRST_RETRY;
    let own_pid = AtomicI32::new(0);
    // However the task ends (the provider dropped, its runtime shut down), fetches must stop
    // trusting that other processes' writes are heard.
    let _deaf_on_exit = DeafOnExit(&wakeups);
    loop {
        match target.config.connect(NoTls).await {
            Ok((client, connection)) => {
                let served = serve(
                    &client, connection, &channel, &wakeups, &outbox, &own_pid, &mut ready, &mut retry,
                );
                if let Err(reason) = served.await {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(ConnectError::Refused {
                            target: target.description.clone(),
                            reason: format!("cannot listen for notifications: {reason}"),
                            retryable: true,
                        }));
                        return;
                    }
                    tracing::warn!(target: "duroxide::postgres", %reason, "the listener connection failed; reconnecting");
                }
                wakeups.set_listening(false);
            }
            Err(err) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(ConnectError::from_connect(
                        &target.description,
                        &target.user,
                        &err,
                    )));
                    return;
                }
                tracing::warn!(target: "duroxide::postgres", error = %describe(&err), "cannot reconnect the listener; retrying in {} ms", retry.as_millis());
            }
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Serves one connection until it ends: drives it (receiving notifications) while LISTEN and the
/// outbox use the client. Returns why it ended.
#[allow(clippy::too_many_arguments)]
async fn serve(
    client: &Client,
    mut connection: Connection<Socket, tokio_postgres::tls::NoTlsStream>,
    channel: &str,
    wakeups: &Wakeups,
    outbox: &Outbox,
    own_pid: &AtomicI32,
    ready: &mut Option<oneshot::Sender<Result<(), ConnectError>>>,
    retry: &mut Duration,
) -> Result<(), String> {
    let drive = async {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(note))) => {
                    // Our own announcements: this object's fetches were woken directly.
                    if note.process_id() == own_pid.load(Ordering::SeqCst) {
                        continue;
                    }
                    match parse(note.payload()) {
                        Some((queue, wake)) => wakeups.work_arrived(queue, wake),
                        None => {
                            wakeups.work_arrived(Queue::Orchestrator, Wake::All);
                            wakeups.work_arrived(Queue::Worker, Wake::All);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(describe(&err)),
                None => return Err("the server closed the connection".to_owned()),
            }
        }
    };
    let listen_and_send = async {
        // The channel comes from a validated schema name: nothing in it needs escaping.
        client
            .batch_execute(&format!("LISTEN \"{channel}\""))
            .await
            .map_err(|e| describe(&e))?;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| describe(&e))?;
        own_pid.store(pid, Ordering::SeqCst);
        let send = client
            .prepare("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .await
            .map_err(|e| describe(&e))?;
        wakeups.set_listening(true);
        *retry = FIRST_RETRY;
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        loop {
            let mut payloads = Vec::with_capacity(2);
            for (prefix, pending) in [
                (ORCHESTRATOR_PREFIX, &outbox.orchestrator),
                (WORKER_PREFIX, &outbox.worker),
            ] {
                match pending.swap(0, Ordering::SeqCst) {
                    0 => {}
                    ALL => payloads.push(format!("{prefix}*")),
                    n => payloads.push(format!("{prefix}{n}")),
                }
            }
            if payloads.is_empty() {
                outbox.ready.notified().await;
                continue;
            }
            client
                .execute(&send, &[&channel, &payloads])
                .await
                .map_err(|e| describe(&e))?;
            outbox.sent.fetch_add(1, Ordering::Relaxed);
        }
    };
    tokio::select! {
        ended = drive => ended,
        ended = listen_and_send => ended,
    }
}

/// The queue and wake-up a notification payload announces; `None` for a payload this version does not
/// know (which then wakes everything).
fn parse(payload: &str) -> Option<(Queue, Wake)> {
    let mut chars = payload.chars();
    let queue = match chars.next()? {
        ORCHESTRATOR_PREFIX => Queue::Orchestrator,
        WORKER_PREFIX => Queue::Worker,
        _ => return None,
    };
    let wake = match chars.as_str() {
        "*" => Wake::All,
        count => Wake::Some(count.parse().ok()?),
    };
    Some((queue, wake))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_queue_and_the_count() {
        assert_eq!(parse("o3"), Some((Queue::Orchestrator, Wake::Some(3))));
        assert_eq!(parse("w1"), Some((Queue::Worker, Wake::Some(1))));
        assert_eq!(parse("w*"), Some((Queue::Worker, Wake::All)));
        for unknown in ["", "o", "x1", "o-1", "wx"] {
            assert_eq!(parse(unknown), None, "{unknown:?}");
        }
    }
}
