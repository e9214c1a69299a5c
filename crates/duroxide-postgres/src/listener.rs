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
//! The same channel carries changes for waiting clients: after an ack that changed an instance's
//! status or custom status committed, the instance id goes out (coalesced, many ids per payload, see
//! [`instance_payloads`]), and every other provider object calls the hooks clients registered with
//! `Provider::watch_instance_changes`, so a client in another process learns of a completion at once
//! instead of at its next poll.
//!
//! Notifications sent by this connection come back to it; they are ignored (by backend pid), since
//! this object's fetches and its process's waiting clients were already woken directly. An object
//! that is alone on the channel sends none at all (see `presence`: listeners say hello and ping).
//! When the connection drops, the listener reconnects with backoff; meanwhile fetches fall back to
//! looking at every wake-up and clients to their safety-net polls. A payload this version does not
//! know wakes every fetch (it may announce work in a format from a newer version); a malformed list
//! of instance ids is ignored.

use std::collections::HashSet;
use std::future::poll_fn;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide_core::provider::InstanceChangeHook;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls, Socket};

use crate::connection::Target;
use crate::error::{describe, ConnectError};
use crate::presence::{self, Presence};
use crate::wakeups::{Queue, Wake, Wakeups};

const ORCHESTRATOR_PREFIX: char = 'o';
const WORKER_PREFIX: char = 'w';
/// Instance changes: `i` followed by `<byte length>:<id>` per instance, e.g. `i3:abc1:x`. Lengths
/// rather than separators, since an instance id may contain any character.
const INSTANCES_PREFIX: char = 'i';
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const MAX_PAYLOAD_BYTES: usize = 7999;
/// Most instance ids waiting to be announced. They pile up only while the connection is down; the
/// surplus is dropped, and clients waiting for those instances find out at their safety-net polls.
const MAX_PENDING_INSTANCES: usize = 10_000;
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
    /// Instances whose status or custom status changed (deduplicated until sent).
    instances: Mutex<HashSet<String>>,
    ready: Notify,
    /// NOTIFY statements sent so far.
    sent: AtomicU64,
    /// Announcements (of work or of an instance change) not sent because nobody listened.
    unsent: AtomicU64,
    /// Who else listens (see `presence`).
    presence: Presence,
}

impl Outbox {
    /// What the next NOTIFY carries: `ping` (a presence payload) if given, then the pending
    /// announcements, which are dropped (and counted) instead when nobody else listens.
    fn payloads(&self, ping: Option<&str>, now: std::time::Instant) -> Vec<String> {
        let mut payloads: Vec<String> = ping.map(str::to_owned).into_iter().collect();
        if let Some(announcements) = self.take_announcements() {
            if self.presence.notifying(now) {
                payloads.extend(announcements);
            } else {
                self.unsent
                    .fetch_add(announcements.len() as u64, Ordering::Relaxed);
            }
        }
        payloads
    }

    /// Takes the pending announcements as payloads; `None` when there were none.
    fn take_announcements(&self) -> Option<Vec<String>> {
        let mut payloads = Vec::new();
        for (prefix, pending) in [
            (ORCHESTRATOR_PREFIX, &self.orchestrator),
            (WORKER_PREFIX, &self.worker),
        ] {
            match pending.swap(0, Ordering::SeqCst) {
                0 => {}
                ALL => payloads.push(format!("{prefix}*")),
                n => payloads.push(format!("{prefix}{n}")),
            }
        }
        let instances = std::mem::take(&mut *self.instances.lock().unwrap_or_else(|p| p.into_inner()));
        payloads.extend(instance_payloads(instances.iter().map(String::as_str)));
        (!payloads.is_empty()).then_some(payloads)
    }

    /// Every fetch of every peer must look (after a time this object announced nothing).
    fn wake_every_peer_fetch(&self) {
        self.orchestrator.store(ALL, Ordering::SeqCst);
        self.worker.store(ALL, Ordering::SeqCst);
    }
}

/// The hooks registered with `Provider::watch_instance_changes`, called for other objects' changes.
#[derive(Default)]
struct Watchers {
    hooks: Mutex<Vec<InstanceChangeHook>>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner()).len();
        f.debug_struct("Watchers").field("hooks", &hooks).finish()
    }
}

impl Watchers {
    /// Adds `hook` unless it is registered already (clients register one shared hook each time
    /// one is created; it must still run once per change).
    fn add(&self, hook: InstanceChangeHook) {
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        if !hooks.iter().any(|h| Arc::ptr_eq(h, &hook)) {
            hooks.push(hook);
        }
    }

    /// Calls every hook with every id; outside the lock, so a hook may register another.
    fn changed(&self, ids: &[&str]) {
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for hook in &hooks {
            for id in ids {
                hook(id);
            }
        }
    }
}

/// The listener of one provider object; dropping it stops its task and closes its connection.
#[derive(Debug)]
pub(crate) struct Listener {
    outbox: Arc<Outbox>,
    watchers: Arc<Watchers>,
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
        let watchers = Arc::new(Watchers::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        let description = target.description.clone();
        let heard = Heard {
            wakeups,
            watchers: watchers.clone(),
        };
        let task = tokio::spawn(run(target, channel, heard, outbox.clone(), ready_tx));
        match ready_rx.await {
            Ok(Ok(())) => Ok(Listener {
                outbox,
                watchers,
                task,
            }),
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

    /// Tells every other provider object on the schema that `instance_id`'s status or custom status
    /// changed (call after the commit). Returns at once.
    pub(crate) fn announce_instance(&self, instance_id: &str) {
        {
            let mut pending = self.outbox.instances.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= MAX_PENDING_INSTANCES {
                return;
            }
            pending.insert(instance_id.to_owned());
        }
        self.outbox.ready.notify_one();
    }

    /// Calls `hook` for every instance change other provider objects announce from now on.
    pub(crate) fn watch_instances(&self, hook: InstanceChangeHook) {
        self.watchers.add(hook);
    }

    /// How many NOTIFY statements this listener has sent.
    pub(crate) fn notifications_sent(&self) -> u64 {
        self.outbox.sent.load(Ordering::Relaxed)
    }

    /// How many announcements went unsent because no other object listened.
    pub(crate) fn announcements_unsent(&self) -> u64 {
        self.outbox.unsent.load(Ordering::Relaxed)
    }

    /// Whether this object's announcements go out now (another object listens, or this one only
    /// just started listening).
    pub(crate) fn notifying(&self) -> bool {
        self.outbox.presence.notifying(std::time::Instant::now())
    }
}

/// Marks the wake-ups as not listening when dropped.
struct DeafOnExit<'a>(&'a Wakeups);

impl Drop for DeafOnExit<'_> {
    fn drop(&mut self) {
        self.0.set_listening(false);
    }
}

/// Where heard notifications go.
struct Heard {
    wakeups: Arc<Wakeups>,
    watchers: Arc<Watchers>,
}

impl Heard {
    /// Routes one notification from another provider object.
    fn notification(&self, payload: &str) {
        match parse(payload) {
            Some(Announcement::Work(queue, wake)) => self.wakeups.work_arrived(queue, wake),
            Some(Announcement::Instances(ids)) => self.watchers.changed(&ids),
            // Recorded by the listener (see `presence`).
            Some(Announcement::Presence) => {}
            // A malformed list of ids: nothing to wake, and no work was announced.
            None if payload.starts_with(INSTANCES_PREFIX) => {
                tracing::debug!(target: "duroxide::postgres", payload, "ignoring a malformed instance-change notification");
            }
            // Perhaps work announced by a newer version: looking costs a query, missing it a delay.
            None => {
                self.wakeups.work_arrived(Queue::Orchestrator, Wake::All);
                self.wakeups.work_arrived(Queue::Worker, Wake::All);
            }
        }
    }
}

/// Connects and serves until the provider is dropped, reconnecting with backoff.
async fn run(
    target: Target,
    channel: String,
    heard: Heard,
    outbox: Arc<Outbox>,
    ready: oneshot::Sender<Result<(), ConnectError>>,
) {
    let mut ready = Some(ready);
    let mut retry = FIRST_RETRY;
    let own_pid = AtomicI32::new(0);
    // However the task ends (the provider dropped, its runtime shut down), fetches must stop
    // trusting that other processes' writes are heard.
    let _deaf_on_exit = DeafOnExit(&heard.wakeups);
    loop {
        match target.config.connect(NoTls).await {
            Ok((client, connection)) => {
                let served = serve(
                    &client, connection, &channel, &heard, &outbox, &own_pid, &mut ready, &mut retry,
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
                heard.wakeups.set_listening(false);
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
    heard: &Heard,
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
                    let hello = note.payload() == presence::HELLO;
                    let seen = outbox
                        .presence
                        .heard(note.process_id(), hello, std::time::Instant::now());
                    if seen.catch_up {
                        outbox.wake_every_peer_fetch();
                    }
                    if seen.catch_up || hello {
                        outbox.ready.notify_one();
                    }
                    heard.notification(note.payload());
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
        outbox.presence.started(std::time::Instant::now());
        heard.wakeups.set_listening(true);
        *retry = FIRST_RETRY;
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        // The hello goes first, and stands for the first ping.
        let mut hello = Some(presence::HELLO);
        let mut next_ping = tokio::time::Instant::now() + presence::PING_EVERY;
        loop {
            // Registered before the outbox is read, so an announcement made meanwhile is not lost.
            let announced = outbox.ready.notified();
            tokio::pin!(announced);
            announced.as_mut().enable();

            let now = tokio::time::Instant::now();
            let ping = hello
                .take()
                .or_else(|| (outbox.presence.take_answer() || now >= next_ping).then_some(presence::PING));
            let payloads = outbox.payloads(ping, now.into_std());
            if payloads.is_empty() {
                tokio::select! {
                    () = &mut announced => {}
                    () = tokio::time::sleep_until(next_ping) => {}
                }
                continue;
            }
            if ping.is_some() {
                next_ping = now + presence::PING_EVERY;
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

/// What one notification payload says.
#[derive(Debug, PartialEq, Eq)]
enum Announcement<'a> {
    /// Work became fetchable on a queue.
    Work(Queue, Wake),
    /// These instances' status or custom status changed.
    Instances(Vec<&'a str>),
    /// Another listener says it listens (see `presence`).
    Presence,
}

/// What a notification payload announces; `None` for a payload this version does not know or a
/// malformed one.
fn parse(payload: &str) -> Option<Announcement<'_>> {
    if payload == presence::PING || payload == presence::HELLO {
        return Some(Announcement::Presence);
    }
    let mut chars = payload.chars();
    let queue = match chars.next()? {
        ORCHESTRATOR_PREFIX => Queue::Orchestrator,
        WORKER_PREFIX => Queue::Worker,
        INSTANCES_PREFIX => return parse_instances(chars.as_str()).map(Announcement::Instances),
        _ => return None,
    };
    let wake = match chars.as_str() {
        "*" => Wake::All,
        count => Wake::Some(count.parse().ok()?),
    };
    Some(Announcement::Work(queue, wake))
}

/// `<byte length>:<id>` repeated; `None` unless the whole text is well formed.
fn parse_instances(mut rest: &str) -> Option<Vec<&str>> {
    let mut ids = Vec::new();
    while !rest.is_empty() {
        let (length, after) = rest.split_once(':')?;
        if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let length: usize = length.parse().ok()?;
        // `get` refuses a length that ends inside a character.
        ids.push(after.get(..length)?);
        rest = &after[length..];
    }
    Some(ids)
}

/// The payloads announcing `ids`: as many ids per payload as fit in PostgreSQL's limit. An id too
/// long for any payload (longer than instance ids may be) is left out; its waiters poll.
fn instance_payloads<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for id in ids {
        let entry = format!("{}:{id}", id.len());
        if 1 + entry.len() > MAX_PAYLOAD_BYTES {
            tracing::debug!(target: "duroxide::postgres", bytes = id.len(), "an instance id too long to announce");
            continue;
        }
        if !current.is_empty() && current.len() + entry.len() > MAX_PAYLOAD_BYTES {
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push(INSTANCES_PREFIX);
        }
        current.push_str(&entry);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_queue_and_the_count() {
        assert_eq!(
            parse("o3"),
            Some(Announcement::Work(Queue::Orchestrator, Wake::Some(3)))
        );
        assert_eq!(
            parse("w1"),
            Some(Announcement::Work(Queue::Worker, Wake::Some(1)))
        );
        assert_eq!(parse("w*"), Some(Announcement::Work(Queue::Worker, Wake::All)));
        assert_eq!(parse(presence::HELLO), Some(Announcement::Presence));
        assert_eq!(parse(presence::PING), Some(Announcement::Presence));
        assert_eq!(parse("p1"), None);
        for unknown in ["", "o", "x1", "o-1", "wx"] {
            assert_eq!(parse(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn instance_payloads_round_trip_any_id() {
        let ids = ["a", "with:colon", "3:looks-like-a-length", "ünïcode", "o3"];
        let payloads = instance_payloads(ids);
        assert_eq!(payloads.len(), 1);
        assert_eq!(parse(&payloads[0]), Some(Announcement::Instances(ids.to_vec())));
    }

    #[test]
    fn malformed_instance_payloads_are_refused_whole() {
        for bad in ["i3", "i3:ab", "ix:abc", "i:a", "i-1:a", "i1:a2:b"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // A length that ends inside a multi-byte character.
        assert_eq!(parse("i1:é"), None);
        assert_eq!(parse("i"), Some(Announcement::Instances(vec![])));
    }

    #[test]
    fn many_ids_are_chunked_below_the_payload_limit() {
        let ids: Vec<String> = (0..200).map(|n| format!("{n:0>250}")).collect();
        let payloads = instance_payloads(ids.iter().map(String::as_str));
        assert!(payloads.len() > 1);
        assert!(
            payloads.iter().all(|p| p.len() <= MAX_PAYLOAD_BYTES),
            "a payload is too long"
        );
        let heard: Vec<&str> = payloads
            .iter()
            .flat_map(|p| match parse(p) {
                Some(Announcement::Instances(ids)) => ids,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(heard, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(instance_payloads([&*"x".repeat(MAX_PAYLOAD_BYTES)]).is_empty());
    }
}
