//! Long-poll wake-ups without polling: a fetch that found nothing waits until something can have
//! changed, and an idle provider issues (almost) no queries.
//!
//! Every way work becomes fetchable is either a write or the passing of a stored time. Writes are
//! announced: at once to this provider object's waiting fetches, and through LISTEN/NOTIFY to every
//! other object on the schema (see `listener`). Stored times (a timer coming due, a lease or backoff
//! running out) are reported by the fetches themselves as `due`. So after a look that left nothing
//! fetchable, the queue is *known empty* until an announcement, the due time, or [`RECHECK`];
//! fetches in that window wait without asking the database, and a fetch whose poll timeout ends in it
//! returns `None` without a query. While the listener connection is down, notifications from other
//! processes can be missed, so every wait ends with a fresh look.
//!
//! Announcements are counted, and every announced item is one *ticket* per request key: one look.
//! An announcement of n items ([`Wake::Some`]) adds n tickets and wakes n waiting fetches; a fetch
//! looks when it gets a ticket (a woken one, or one that starts waiting while tickets are left), and
//! otherwise trusts what the last look learned. A look that leaves the queue empty (it found nothing,
//! or it took the last item: fetches say whether more is fetchable) voids the tickets of
//! announcements made before it, and one that sees more than there are tickets for adds one (and
//! wakes a fetch), so a burst that the counts missed is still taken one look at a time. Before this,
//! every announcement woke every waiting fetch, and every fetch coming back from work looked once
//! more since the queue had changed meanwhile: with eight idle workers and a chain of activities,
//! seven of eight worker looks found nothing, and they were most of the database's work.
//! Announcements whose effect a count cannot describe ([`Wake::All`]: an abandon's new due time, a
//! released session, a reconnected listener) make every fetch decide again: the first to look does so
//! for all.
//!
//! An ack announces its items as soon as its statement is sent, before it commits, and the looks it
//! owes are routed to its connection to run after the commit ([`Wakeups::work_sent`]). A look that
//! began before the ack returned may have missed those items, so routed looks are voided only by a
//! look that began after their ack returned and left nothing fetchable.
//!
//! A write that stores work for later (a turn's timer) is no look's business until it comes due: it
//! gives a *due hint* ([`Wakeups::due_at`]) instead of tickets, which brings the known-empty queue's
//! expiry forward without a query. A hint outlives the looks that began before it was given (they
//! could not see its write), so a look already under way cannot bury it under a later due time.
//! Before this, every turn that scheduled a timer woke a fetch whose look found nothing.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide_core::provider::ProviderError;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::mux::Conn;

/// How long "known empty" is trusted without a look: a safety net against a notification lost in a
/// way the listener cannot see. It bounds an idle provider to one query per queue per interval.
pub(crate) const RECHECK: Duration = Duration::from_secs(2);

/// At most this many distinct worker fetch requests are remembered (a runtime uses one or two).
const MAX_KNOWN: usize = 64;

/// Targeted wake-ups beyond this many per key wake every waiter of the key instead (there are rarely
/// more waiting fetches than this).
const MAX_TARGETED: u32 = 64;

/// An announcement of a write not yet committed routes at most this many looks to its connection;
/// the rest are plain tickets.
const MAX_VIA: u32 = 16;

/// Past this many routed looks owed to one key, those whose write has returned become plain tickets
/// (see [`KeyState::settle`]).
const MAX_ROUTED: usize = 256;

/// What one look at a queue found.
#[derive(Debug)]
pub(crate) enum Polled<T> {
    Found {
        item: T,
        /// The rest of the queue right after the item was taken.
        rest: Rest,
    },
    /// Nothing fetchable now; something stored becomes fetchable after `due` (from now) without any
    /// new write, or never (`None`).
    Empty { due: Option<Duration> },
}

/// What a look that found an item saw of the rest of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rest {
    /// Another item is fetchable now.
    More,
    /// Nothing else is fetchable now: as after an empty look, with that due time.
    Empty { due: Option<Duration> },
    /// Not looked at: the item was handed over without a query.
    Unknown,
}

/// Which queue a fetch waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    Orchestrator,
    Worker,
}

/// What an announcement tells waiting fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// This many items became fetchable: that many looks per request key (each item can go to one
    /// fetch; fetches with different keys may see different items).
    Some(u32),
    /// Everything known may be stale: every fetch decides again.
    All,
}

impl Wake {
    /// One look per item.
    pub(crate) fn items(count: usize) -> Wake {
        Wake::Some(u32::try_from(count).unwrap_or(u32::MAX))
    }
}

/// A write sent on a connection whose items were announced before it returned (see
/// [`Wakeups::work_sent`]). Once it returns (committed or failed), [`Wakeups::write_returned`]
/// numbers it, so that a look can tell whether it began after.
#[derive(Debug, Clone, Default)]
pub(crate) struct Write(Arc<AtomicU64>);

impl Write {
    /// Whether the write had returned when [`Wakeups::writes_returned`] read `returned`.
    fn returned_by(&self, returned: u64) -> bool {
        let number = self.0.load(Ordering::SeqCst);
        number != 0 && number <= returned
    }

    /// Whether the write has returned by now.
    fn has_returned(&self) -> bool {
        self.returned_by(u64::MAX)
    }
}

/// A look owed to an announced item of `write`, to be sent to `conn`, the write's connection, where
/// it runs after the write's commit.
#[derive(Debug, Clone)]
pub(crate) struct Routed {
    pub(crate) conn: Arc<Conn>,
    write: Write,
}

/// What the last look that left nothing fetchable learned, trusted until a [`Wake::All`], `due`, or
/// [`RECHECK`] (announced items come as tickets).
#[derive(Debug, Clone, Copy)]
struct KnownEmpty {
    /// [`Signal::epoch`] before the look.
    epoch: u64,
    due: Option<Instant>,
    looked_at: Instant,
    /// A fetch is looking again because this ran out by itself; the others wait for its answer.
    refreshing: bool,
}

impl KnownEmpty {
    /// When this knowledge runs out by itself.
    fn expires(&self) -> Instant {
        let recheck = self.looked_at + RECHECK;
        self.due.map_or(recheck, |due| due.min(recheck))
    }

    /// Why it runs out.
    fn expiry(&self) -> Expiry {
        match self.due {
            Some(due) if due < self.looked_at + RECHECK => Expiry::Due,
            _ => Expiry::Recheck,
        }
    }
}

/// Why knowledge that the queue is empty ran out by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Stored work came due (a timer, a delay, a lease), as the last look reported. It may be a
    /// millisecond away: an item stamped by a writer whose transaction began after the look's did,
    /// but committed before the look read the queue, is seen as not yet visible.
    Due,
    /// [`RECHECK`] passed without an announcement.
    Recheck,
}

/// What a fetch should do next about one request key.
#[derive(Debug, Clone)]
enum Next {
    /// The queue is known empty until then: wait without a query.
    Trust(Instant),
    /// Look. `refresh`: this fetch took the job of renewing knowledge that ran out by itself, and
    /// why it did. `via`: the announced write this look is owed to (see [`Wakeups::work_sent`]).
    Look {
        refresh: Option<Expiry>,
        via: Option<Routed>,
    },
    /// Another fetch is renewing the knowledge; wait for its answer.
    AwaitRefresh,
}

#[derive(Debug, Default)]
struct KeyState {
    /// Wakes fetches waiting with this key: one per ticket, or all when everything changed.
    wake: Arc<Notify>,
    known: Option<KnownEmpty>,
    /// Looks owed to announced items.
    tickets: u64,
    /// Looks owed to items of writes sent but not known to be committed when they were announced,
    /// each to be sent to the connection its write went to (see [`Wakeups::work_sent`]). A look
    /// that began before the write returned may have missed its item, so such a look is voided only
    /// by one that began after its write returned and left nothing fetchable (see
    /// [`Signal::drained`]).
    via: VecDeque<Routed>,
    /// Looks in progress.
    looking: u32,
    /// The earliest due time hinted since the last look that could have seen every hinted write, and
    /// the latest hint's number (see [`Wakeups::due_at`]).
    hint: Option<(u64, Instant)>,
}

impl KeyState {
    /// Keeps the routed looks few while the queue never drains (only a look that leaves it empty
    /// voids them, and a fetch query that stocks extra items takes them without their looks, so under
    /// steady load they would pile up without end). Once past [`MAX_ROUTED`], the looks whose write
    /// has returned become plain tickets: a look that begins now sees that write's items wherever it
    /// runs, so only the looks of writes still in flight must go to their connection. Returns how
    /// many became tickets.
    fn settle(&mut self) -> u64 {
        if self.via.len() <= MAX_ROUTED {
            return 0;
        }
        let before = self.via.len();
        self.via.retain(|routed| !routed.write.has_returned());
        let settled = (before - self.via.len()) as u64;
        self.tickets = self.tickets.saturating_add(settled);
        settled
    }
}

/// When known-empty knowledge runs out by itself (a due hint may bring it forward), and why.
fn expires(hint: Option<(u64, Instant)>, known: &KnownEmpty) -> (Instant, Expiry) {
    match hint {
        Some((_, hinted)) if hinted < known.expires() => (hinted, Expiry::Due),
        _ => (known.expires(), known.expiry()),
    }
}

#[derive(Debug, Default)]
struct Signal {
    /// Bumped by [`Wake::All`].
    epoch: AtomicU64,
    /// Items announced so far ([`Wake::Some`] counts).
    announced: AtomicU64,
    /// Due hints given so far (their numbers).
    hinted: AtomicU64,
    /// Keyed by fetch request (worker fetches with different filters see different queues).
    keys: Mutex<HashMap<String, KeyState>>,
}

impl Signal {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyState>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wake-up of fetches waiting with `key`.
    fn wake(&self, key: &str) -> Arc<Notify> {
        let mut keys = self.keys();
        if let Some(state) = keys.get(key) {
            return state.wake.clone();
        }
        if keys.len() >= MAX_KNOWN {
            // Forget keys nobody waits with (only the map holds their wake-up).
            keys.retain(|_, state| Arc::strong_count(&state.wake) > 1);
        }
        keys.entry(key.to_owned()).or_default().wake.clone()
    }

    fn announce(&self, wake: Wake, via: Option<&Routed>) {
        let mut keys = self.keys();
        match wake {
            Wake::Some(n) => {
                let routed = via.map_or(0, |_| n.min(MAX_VIA));
                let mut settled = 0;
                for state in keys.values_mut() {
                    for _ in 0..routed {
                        state
                            .via
                            .push_back(via.expect("routed only with a write").clone());
                    }
                    settled = settled.max(state.settle());
                    state.tickets = state.tickets.saturating_add(u64::from(n - routed));
                    if n > MAX_TARGETED {
                        state.wake.notify_waiters();
                    } else {
                        for _ in 0..n {
                            state.wake.notify_one();
                        }
                    }
                }
                // Settled looks count as announced now: a look under way may have missed their
                // writes, so its `drained` must leave them, while a later one voids them.
                self.announced
                    .fetch_add(u64::from(n - routed) + settled, Ordering::SeqCst);
            }
            Wake::All => {
                self.epoch.fetch_add(1, Ordering::SeqCst);
                for state in keys.values() {
                    state.wake.notify_waiters();
                }
            }
        }
    }

    /// Every waiting fetch decides again.
    fn wake_everyone(&self) {
        for state in self.keys().values() {
            state.wake.notify_waiters();
        }
    }

    /// A ticket makes a fetch look; so does a [`Wake::All`] since the last look. When knowledge merely
    /// ran out (the recheck interval, a due time), one fetch looks for all: an idle provider then
    /// makes one query per interval however many fetches wait.
    fn next(&self, key: &str, epoch: u64, now: Instant) -> Next {
        let mut keys = self.keys();
        let state = keys.entry(key.to_owned()).or_default();
        let next = if let Some(routed) = state.via.pop_front() {
            Next::Look {
                refresh: None,
                via: Some(routed),
            }
        } else if state.tickets > 0 {
            state.tickets -= 1;
            Next::Look {
                refresh: None,
                via: None,
            }
        } else {
            let hint = state.hint;
            match state.known.as_mut() {
                None => Next::Look {
                    refresh: None,
                    via: None,
                },
                Some(entry) if entry.epoch != epoch => Next::Look {
                    refresh: None,
                    via: None,
                },
                Some(entry) => {
                    let (expires, expiry) = expires(hint, entry);
                    if now < expires {
                        Next::Trust(expires)
                    } else if entry.refreshing {
                        Next::AwaitRefresh
                    } else {
                        entry.refreshing = true;
                        Next::Look {
                            refresh: Some(expiry),
                            via: None,
                        }
                    }
                }
            }
        };
        if let Next::Look { .. } = next {
            state.looking += 1;
        }
        next
    }

    /// A look without asking [`next`](Self::next) (a zero timeout, no listener).
    fn look_anyway(&self, key: &str) -> Next {
        self.keys().entry(key.to_owned()).or_default().looking += 1;
        Next::Look {
            refresh: None,
            via: None,
        }
    }

    /// A look (counted by [`next`](Self::next) or [`look_anyway`](Self::look_anyway)) ended.
    fn looked(&self, key: &str) {
        if let Some(state) = self.keys().get_mut(key) {
            state.looking = state.looking.saturating_sub(1);
        }
    }

    /// A look left nothing fetchable. `announced` and `hinted`: [`Signal::announced`] and
    /// [`Signal::hinted`] before it; the tickets of announcements made before the look are void
    /// (their items are gone), those of announcements made since stay, and so does a due hint given
    /// since (the look's due time may not include it). `returned`: [`Wakeups::writes_returned`]
    /// before it; the routed looks of writes that had returned by then are void too, for the same
    /// reason (a query that stocks items beyond its own looks takes announced items without their
    /// looks: before these were voided, each such item cost a look that found nothing, and after a
    /// burst of work hundreds of them kept an idle runtime's fetches querying for seconds).
    /// Returns until when a fetch waits without a query (a due hint may be sooner than `entry`'s).
    fn drained(&self, key: &str, announced: u64, hinted: u64, returned: u64, entry: KnownEmpty) -> Instant {
        let since = self.announced.load(Ordering::SeqCst).saturating_sub(announced);
        let mut keys = self.keys();
        let state = keys.entry(key.to_owned()).or_default();
        state.known = Some(entry);
        state.tickets = state.tickets.min(since);
        state.via.retain(|routed| !routed.write.returned_by(returned));
        if state.hint.is_some_and(|(number, _)| number <= hinted) {
            state.hint = None;
        }
        expires(state.hint, &entry).0
    }

    /// Work becomes fetchable at `due` (a write that committed): every key's known-empty expiry comes
    /// forward to it, and waiting fetches decide again (to sleep until then, not to look).
    fn hint(&self, due: Instant) {
        let number = self.hinted.fetch_add(1, Ordering::SeqCst) + 1;
        for state in self.keys().values_mut() {
            let earliest = state.hint.map_or(due, |(_, hinted)| hinted.min(due));
            state.hint = Some((number, earliest));
            state.wake.notify_waiters();
        }
    }

    /// A look found an item and saw more: the queue is not empty, so every waiting fetch, and every
    /// fetch that comes, looks until a look drains it. Their looks share queries (see `coalesce`),
    /// so a backlog is fetched a batch per query instead of one look at a time.
    fn more(&self, key: &str) {
        if let Some(state) = self.keys().get_mut(key) {
            state.known = None;
            state.wake.notify_waiters();
        }
    }

    /// The refreshing fetch is done (found work, failed, or was dropped): let the others decide again.
    fn end_refresh(&self, key: &str) {
        if let Some(state) = self.keys().get_mut(key) {
            if let Some(known) = state.known.as_mut() {
                known.refreshing = false;
            }
            state.wake.notify_waiters();
        }
    }
}

/// Ends a look however it ends, including when its future is dropped mid-look (a runtime shutting
/// down): it is no longer under way, and if it was a refresh, the other fetches must not wait for an
/// answer that will not come.
struct LookGuard<'a> {
    signal: &'a Signal,
    key: &'a str,
    refresh: Option<Expiry>,
}

impl Drop for LookGuard<'_> {
    fn drop(&mut self) {
        self.signal.looked(self.key);
        if self.refresh.is_some() {
            self.signal.end_refresh(self.key);
        }
    }
}

/// The wake-up state of one provider object (shared by its clones and its listener).
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    orchestrator: Signal,
    worker: Signal,
    /// Bumped by `wake_all`: a waiting fetch that sees it change gives up instead of waiting on.
    wake_all_generation: AtomicU64,
    /// Whether the listener connection is up, i.e. whether other processes' writes are heard.
    listening: AtomicBool,
    /// Items found by a look made only because [`RECHECK`] passed (see
    /// [`Wakeups::found_by_recheck`]).
    found_by_recheck: AtomicU64,
    /// Writes that returned after announcing their items (see [`Wakeups::write_returned`]).
    writes_returned: AtomicU64,
}

impl Wakeups {
    fn signal(&self, queue: Queue) -> &Signal {
        match queue {
            Queue::Orchestrator => &self.orchestrator,
            Queue::Worker => &self.worker,
        }
    }

    /// Work may have become fetchable on `queue`; `wake` says how much.
    pub(crate) fn work_arrived(&self, queue: Queue, wake: Wake) {
        self.signal(queue).announce(wake, None);
    }

    /// A write that will make `wake` items fetchable on `queue` was just sent on `conn` and has not
    /// committed yet. Announced now, the woken fetches send their looks to `conn`, where they run
    /// right after that commit: the item is taken without waiting for the writer to hear of its
    /// commit, then for the fetch to hear of the writer. (Sent anywhere else, a look could run
    /// before the commit and find nothing.) If the write fails, those looks find nothing, as after
    /// any stale announcement.
    ///
    /// `write` stands for the write: the writer calls [`write_returned`](Self::write_returned) with
    /// it once the write returned, whatever its outcome.
    pub(crate) fn work_sent(&self, queue: Queue, wake: Wake, conn: &Arc<Conn>, write: &Write) {
        let routed = Routed {
            conn: conn.clone(),
            write: write.clone(),
        };
        self.signal(queue).announce(wake, Some(&routed));
    }

    /// Passes on a routed look a fetch was woken for but did not make (it got an item otherwise).
    pub(crate) fn pass_on(&self, queue: Queue, routed: &Routed) {
        self.signal(queue).announce(Wake::Some(1), Some(routed));
    }

    /// `write` (announced through [`work_sent`](Self::work_sent)) returned: a look that begins from
    /// now on sees what it committed, so one that leaves nothing fetchable voids its routed looks.
    /// (A write whose future was dropped is never marked: it may still commit.)
    pub(crate) fn write_returned(&self, write: &Write) {
        let number = self.writes_returned.fetch_add(1, Ordering::SeqCst) + 1;
        write.0.store(number, Ordering::SeqCst);
    }

    /// A committed write stored work on `queue` that becomes fetchable at `due` and no sooner (a
    /// timer): fetches wait for it without a look now (see the module documentation).
    pub(crate) fn due_at(&self, queue: Queue, due: Instant) {
        self.signal(queue).hint(due);
    }

    /// Ends every wait: fetches that then find nothing return `None` at once.
    pub(crate) fn wake_all(&self) {
        self.wake_all_generation.fetch_add(1, Ordering::SeqCst);
        self.orchestrator.wake_everyone();
        self.worker.wake_everyone();
    }

    /// The listener went up or down. Either way everything known is stale: notifications may have been
    /// missed while it was down.
    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
        self.orchestrator.announce(Wake::All, None);
        self.worker.announce(Wake::All, None);
    }

    /// Items found by a look made only because [`RECHECK`] passed since the last look that left
    /// nothing fetchable, with no announcement and no due time before: work whose announcement was
    /// lost. (Work that came due is found at its due time and not counted.)
    pub(crate) fn found_by_recheck(&self) -> u64 {
        self.found_by_recheck.load(Ordering::Relaxed)
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Calls `look` until it finds something, `poll_timeout` passes, or `wake_all` is called, looking
    /// only when something can have changed since the last look for `key` that left nothing
    /// fetchable. A zero `poll_timeout` always looks once: the caller asked for the current state, not
    /// for a wait.
    pub(crate) async fn long_poll<T, F, Fut>(
        &self,
        queue: Queue,
        key: &str,
        poll_timeout: Duration,
        mut look: F,
    ) -> Result<Option<T>, ProviderError>
    where
        F: FnMut(Option<Routed>) -> Fut,
        Fut: Future<Output = Result<Polled<T>, ProviderError>>,
    {
        let signal = self.signal(queue);
        let wake = signal.wake(key);
        let deadline = Instant::now() + poll_timeout;
        let wake_all_generation = self.wake_all_generation.load(Ordering::SeqCst);
        let mut first = true;
        loop {
            // Registered before deciding and looking, so an announcement made in between is not
            // lost. (A wake-up stored while nobody waited is taken here and only makes this fetch
            // decide once more; the ticket that came with it is what makes it look.)
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();

            let epoch = signal.epoch.load(Ordering::SeqCst);
            let announced = signal.announced.load(Ordering::SeqCst);
            let hinted = signal.hinted.load(Ordering::SeqCst);
            let returned = self.writes_returned.load(Ordering::SeqCst);
            let next = if self.is_listening() && !(first && poll_timeout.is_zero()) {
                signal.next(key, epoch, Instant::now())
            } else {
                signal.look_anyway(key)
            };
            first = false;
            let wake_at = match next {
                Next::Trust(until) => until,
                // Woken when the refreshing fetch is done.
                Next::AwaitRefresh => deadline,
                Next::Look { refresh, via } => {
                    let _guard = LookGuard { signal, key, refresh };
                    let known_empty = |due: Option<Duration>| {
                        let looked_at = Instant::now();
                        let known = KnownEmpty {
                            epoch,
                            // Visibility is compared at millisecond precision, so waking a
                            // millisecond late guarantees the next look sees the item.
                            due: due.map(|d| looked_at + d + Duration::from_millis(1)),
                            looked_at,
                            refreshing: false,
                        };
                        let trusted = signal.drained(key, announced, hinted, returned, known);
                        (known, trusted)
                    };
                    match look(via).await? {
                        Polled::Found { item, rest } => {
                            if refresh == Some(Expiry::Recheck) {
                                self.found_by_recheck.fetch_add(1, Ordering::Relaxed);
                            }
                            match rest {
                                Rest::More => signal.more(key),
                                Rest::Unknown => {}
                                Rest::Empty { due } => {
                                    known_empty(due);
                                }
                            }
                            return Ok(Some(item));
                        }
                        Polled::Empty { due } => {
                            let (known, trusted) = known_empty(due);
                            if self.is_listening() {
                                trusted
                            } else {
                                known.due.unwrap_or(deadline)
                            }
                        }
                    }
                }
            };
            if self.wake_all_generation.load(Ordering::SeqCst) != wake_all_generation {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(wake_at.min(deadline)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A long poll that never finds anything, counting its looks.
    fn idle_poll(
        wakeups: &Arc<Wakeups>,
        queue: Queue,
        poll: Duration,
        due: Option<Duration>,
    ) -> (
        Arc<AtomicUsize>,
        tokio::task::JoinHandle<Result<Option<()>, ProviderError>>,
    ) {
        let looks = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (wakeups, looks) = (wakeups.clone(), looks.clone());
            async move {
                wakeups
                    .long_poll(queue, "k", poll, |_| {
                        looks.fetch_add(1, Ordering::SeqCst);
                        async move { Ok(Polled::<()>::Empty { due }) }
                    })
                    .await
            }
        });
        (looks, task)
    }

    /// Sleeps (which lets paused time advance) until `looks` reaches `times`.
    async fn until_looked(looks: &AtomicUsize, times: usize) {
        while looks.load(Ordering::SeqCst) < times {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn listening() -> Arc<Wakeups> {
        let wakeups = Arc::new(Wakeups::default());
        wakeups.set_listening(true);
        wakeups
    }

    /// A poll whose first look finds nothing, due after `due`, and whose second look finds an item.
    async fn found_on_second_look(wakeups: &Wakeups, due: Option<Duration>) {
        let looks = AtomicUsize::new(0);
        let found = wakeups
            .long_poll(Queue::Orchestrator, "k", Duration::from_secs(10), |_| {
                let first = looks.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    Ok(if first {
                        Polled::Empty { due }
                    } else {
                        Polled::Found {
                            item: (),
                            rest: Rest::Empty { due: None },
                        }
                    })
                }
            })
            .await
            .expect("ok");
        assert_eq!(found, Some(()));
    }

    /// Only the recheck counts: work found at its due time came when it was due to (even a
    /// millisecond after a look that saw it stamped by a writer whose transaction began later).
    #[tokio::test(start_paused = true)]
    async fn only_work_found_at_the_recheck_counts_as_found_by_it() {
        let wakeups = listening();
        found_on_second_look(&wakeups, Some(Duration::ZERO)).await;
        found_on_second_look(&wakeups, Some(Duration::from_millis(500))).await;
        assert_eq!(wakeups.found_by_recheck(), 0, "found at their due times");
        found_on_second_look(&wakeups, None).await;
        assert_eq!(wakeups.found_by_recheck(), 1, "found at the recheck");
        found_on_second_look(&wakeups, Some(RECHECK * 2)).await;
        assert_eq!(
            wakeups.found_by_recheck(),
            2,
            "the recheck came before the due time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_polls_reuse_an_empty_look() {
        let wakeups = listening();
        let looks = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let looks = looks.clone();
            let found = wakeups
                .long_poll(Queue::Orchestrator, "k", Duration::from_millis(100), |_| {
                    looks.fetch_add(1, Ordering::SeqCst);
                    async { Ok(Polled::<()>::Empty { due: None }) }
                })
                .await
                .expect("ok");
            assert_eq!(found, None);
        }
        assert_eq!(
            looks.load(Ordering::SeqCst),
            1,
            "five idle polls within the recheck interval"
        );
    }

    /// Twelve fetch loops (as a runtime's dispatchers run them) share one look per interval.
    #[tokio::test(start_paused = true)]
    async fn an_idle_provider_looks_once_per_recheck_interval() {
        let wakeups = listening();
        let looks = Arc::new(AtomicUsize::new(0));
        let loops: Vec<_> = (0..12)
            .map(|_| {
                let (wakeups, looks) = (wakeups.clone(), looks.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    while started.elapsed() < RECHECK * 5 {
                        let looks = looks.clone();
                        wakeups
                            .long_poll(Queue::Worker, "k", Duration::from_millis(100), |_| {
                                looks.fetch_add(1, Ordering::SeqCst);
                                async { Ok(Polled::<()>::Empty { due: None }) }
                            })
                            .await
                            .expect("ok");
                    }
                })
            })
            .collect();
        for task in loops {
            task.await.expect("join");
        }
        let looks = looks.load(Ordering::SeqCst);
        // At most one each at the start (they begin together), then one per interval for all.
        assert!(looks <= 12 + 6, "{looks} looks in 5 recheck intervals");
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_hint_brings_the_next_look_to_its_time_without_a_look_now() {
        let wakeups = listening();
        let (looks, task) = idle_poll(&wakeups, Queue::Orchestrator, Duration::from_secs(60), None);
        until_looked(&looks, 1).await;
        let hinted = Instant::now() + Duration::from_millis(100);
        wakeups.due_at(Queue::Orchestrator, hinted);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(looks.load(Ordering::SeqCst), 1, "no look before the hinted time");
        until_looked(&looks, 2).await;
        let waited = Instant::now() - hinted;
        assert!(
            waited < Duration::from_millis(5),
            "looked {waited:?} after the hinted time"
        );
        // That look answered the hint; the next is the recheck's.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(looks.load(Ordering::SeqCst), 2);
        assert_eq!(wakeups.found_by_recheck(), 0);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_hint_outlives_a_look_that_began_before_it() {
        let wakeups = listening();
        let looks = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let task = tokio::spawn({
            let (wakeups, looks, release) = (wakeups.clone(), looks.clone(), release.clone());
            async move {
                wakeups
                    .long_poll(Queue::Orchestrator, "k", Duration::from_secs(60), |_| {
                        let first = looks.fetch_add(1, Ordering::SeqCst) == 0;
                        let release = release.clone();
                        async move {
                            if first {
                                // The first look's query ran before the hinted write committed.
                                release.notified().await;
                            }
                            Ok(Polled::<()>::Empty { due: None })
                        }
                    })
                    .await
            }
        });
        until_looked(&looks, 1).await;
        let hinted = Instant::now() + Duration::from_millis(100);
        wakeups.due_at(Queue::Orchestrator, hinted);
        release.notify_one();
        until_looked(&looks, 2).await;
        let waited = Instant::now() - hinted;
        assert!(
            waited < Duration::from_millis(5),
            "the hint was lost to the earlier look: looked {waited:?} after its time"
        );
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_dropped_mid_look_lets_another_fetch_look() {
        let wakeups = listening();
        // Knowledge that has run out, so the next fetch takes the refresh.
        let stale = Instant::now();
        wakeups.orchestrator.drained(
            "k",
            wakeups.orchestrator.announced.load(Ordering::SeqCst),
            0,
            0,
            KnownEmpty {
                epoch: wakeups.orchestrator.epoch.load(Ordering::SeqCst),
                due: Some(stale),
                looked_at: stale,
                refreshing: false,
            },
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let stuck = tokio::spawn({
            let wakeups = wakeups.clone();
            async move {
                wakeups
                    .long_poll(Queue::Orchestrator, "k", Duration::from_secs(60), |_| {
                        std::future::pending::<Result<Polled<()>, ProviderError>>()
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (looks, other) = idle_poll(&wakeups, Queue::Orchestrator, Duration::from_secs(60), None);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(looks.load(Ordering::SeqCst), 0, "waits for the refreshing fetch");
        stuck.abort();
        until_looked(&looks, 1).await;
        other.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_announcement_triggers_another_look() {
        let wakeups = listening();
        let (looks, task) = idle_poll(&wakeups, Queue::Orchestrator, Duration::from_secs(60), None);
        until_looked(&looks, 1).await;
        wakeups.work_arrived(Queue::Worker, Wake::Some(1)); // the other queue: no look
        tokio::task::yield_now().await;
        assert_eq!(looks.load(Ordering::SeqCst), 1);
        wakeups.work_arrived(Queue::Orchestrator, Wake::Some(1));
        until_looked(&looks, 2).await;
        task.abort();
    }

    /// Five fetch loops (as a runtime's worker slots) over a queue that gains items: each announced
    /// item costs one look, wherever it goes, and nobody looks for an item another took.
    #[tokio::test(start_paused = true)]
    async fn each_announced_item_costs_one_look() {
        let wakeups = listening();
        let items = Arc::new(AtomicUsize::new(0));
        let looks = Arc::new(AtomicUsize::new(0));
        let found = Arc::new(AtomicUsize::new(0));
        let loops: Vec<_> = (0..5)
            .map(|_| {
                let (wakeups, items, looks, found) =
                    (wakeups.clone(), items.clone(), looks.clone(), found.clone());
                tokio::spawn(async move {
                    loop {
                        let got = wakeups
                            .long_poll(Queue::Worker, "k", Duration::from_millis(100), |_| {
                                looks.fetch_add(1, Ordering::SeqCst);
                                let taken = items
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                                    .ok();
                                async move {
                                    Ok(match taken {
                                        Some(1) => Polled::Found {
                                            item: (),
                                            rest: Rest::Empty { due: None },
                                        },
                                        Some(_) => Polled::Found {
                                            item: (),
                                            rest: Rest::More,
                                        },
                                        None => Polled::Empty { due: None },
                                    })
                                }
                            })
                            .await
                            .expect("ok");
                        if got.is_some() {
                            found.fetch_add(1, Ordering::SeqCst);
                            // Work on it a while, as an activity does.
                            tokio::time::sleep(Duration::from_millis(3)).await;
                        }
                    }
                })
            })
            .collect();
        // The first looks (nothing known yet) find the queue empty.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let start = looks.load(Ordering::SeqCst);
        assert!(start <= 5, "{start} first looks");
        for round in 1..=3 {
            items.fetch_add(round, Ordering::SeqCst);
            wakeups.work_arrived(Queue::Worker, Wake::items(round));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(found.load(Ordering::SeqCst), 6, "every item was taken");
        assert_eq!(looks.load(Ordering::SeqCst) - start, 6, "one look per item");
        // Everyone decides again; the first to look does so for all.
        wakeups.work_arrived(Queue::Worker, Wake::All);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(looks.load(Ordering::SeqCst) - start, 7, "one look for everyone");
        for task in loops {
            task.abort();
        }
    }

    /// Under steady load no look leaves the queue empty, so none voids the routed looks, and fetch
    /// queries that stock extra items take most items without their looks. The looks stay owed, but
    /// those whose write has returned no longer pile up as routed looks; the ones of a write still in
    /// flight stay routed to its connection.
    #[tokio::test]
    async fn routed_looks_do_not_pile_up_while_the_queue_never_drains() {
        let mux = crate::mux::Mux::new(crate::connection::test_target(), 1);
        let lease = mux.lease("test").await.expect(crate::connection::NO_TEST_SERVER);
        let conn = lease.conn().clone();
        let wakeups = listening();
        let _waiting_with_key = wakeups.worker.wake("k");
        for _ in 0..1_000 {
            let write = Write::default();
            wakeups.work_sent(Queue::Worker, Wake::Some(17), &conn, &write);
            wakeups.write_returned(&write);
        }
        let in_flight = Write::default();
        wakeups.work_sent(Queue::Worker, Wake::Some(3), &conn, &in_flight);

        let keys = wakeups.worker.keys();
        let state = &keys["k"];
        assert!(
            state.via.len() <= MAX_ROUTED + MAX_VIA as usize,
            "{} routed looks",
            state.via.len()
        );
        assert_eq!(
            state.via.len() as u64 + state.tickets,
            1_000 * 17 + 3,
            "every look owed is still owed"
        );
        let still_routed = state
            .via
            .iter()
            .filter(|routed| !routed.write.has_returned())
            .count();
        assert_eq!(still_routed, 3, "the write in flight keeps its routed looks");
    }

    /// A fetch woken while it was looking (and that then found something) hands its wake-up on, so
    /// the announced item still gets a look.
    #[tokio::test(start_paused = true)]
    async fn a_wake_up_taken_by_a_busy_fetch_is_handed_on() {
        let wakeups = listening();
        let (looks, waiting) = idle_poll(&wakeups, Queue::Orchestrator, Duration::from_secs(60), None);
        until_looked(&looks, 1).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        // A fetch that registers (it is newer, so a FIFO wake-up goes to the idle one first) and then
        // finds an item after the announcement: the idle fetch must still look.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let busy = tokio::spawn({
            let wakeups = wakeups.clone();
            async move {
                let mut started = Some(started_tx);
                let mut release = Some(release_rx);
                wakeups
                    .long_poll(Queue::Orchestrator, "k", Duration::from_secs(60), |_| {
                        let started = started.take();
                        let release = release.take();
                        async move {
                            if let Some(started) = started {
                                let _ = started.send(());
                            }
                            if let Some(release) = release {
                                let _ = release.await;
                            }
                            Ok(Polled::Found {
                                item: (),
                                rest: Rest::More,
                            })
                        }
                    })
                    .await
            }
        });
        // Make the busy fetch look (the generation moved), and wake one fetch while it is busy.
        wakeups.work_arrived(Queue::Orchestrator, Wake::Some(1));
        started_rx.await.expect("the busy fetch looks");
        wakeups.work_arrived(Queue::Orchestrator, Wake::Some(1));
        release_tx.send(()).expect("release");
        assert_eq!(busy.await.expect("join").expect("ok"), Some(()));
        until_looked(&looks, 3).await;
        waiting.abort();
    }

    /// A fetch that starts waiting after another took the last item looks no more (it would only
    /// find the queue empty), but an item announced after that look makes it look.
    #[tokio::test(start_paused = true)]
    async fn a_look_that_took_the_last_item_spares_the_next_fetch_a_look() {
        let wakeups = listening();
        let empty = |looks: Arc<AtomicUsize>| {
            move |_| {
                looks.fetch_add(1, Ordering::SeqCst);
                async { Ok(Polled::<()>::Empty { due: None }) }
            }
        };
        let looks = Arc::new(AtomicUsize::new(0));
        wakeups
            .long_poll(Queue::Worker, "k", Duration::ZERO, empty(looks.clone()))
            .await
            .expect("ok");
        wakeups.work_arrived(Queue::Worker, Wake::Some(1));
        let found = wakeups
            .long_poll(Queue::Worker, "k", Duration::from_secs(60), |_| async {
                Ok(Polled::Found {
                    item: (),
                    rest: Rest::Empty { due: None },
                })
            })
            .await
            .expect("ok");
        assert_eq!(found, Some(()));
        let none = wakeups
            .long_poll(
                Queue::Worker,
                "k",
                Duration::from_millis(100),
                empty(looks.clone()),
            )
            .await
            .expect("ok");
        assert_eq!(
            (none, looks.load(Ordering::SeqCst)),
            (None, 1),
            "no look after the last item was taken"
        );
        wakeups.work_arrived(Queue::Worker, Wake::Some(1));
        wakeups
            .long_poll(
                Queue::Worker,
                "k",
                Duration::from_millis(100),
                empty(looks.clone()),
            )
            .await
            .expect("ok");
        assert_eq!(looks.load(Ordering::SeqCst), 2, "an item announced since");
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_time_triggers_another_look() {
        let wakeups = listening();
        let (looks, task) = idle_poll(
            &wakeups,
            Queue::Orchestrator,
            Duration::from_secs(60),
            Some(Duration::from_millis(20)),
        );
        until_looked(&looks, 3).await;
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn wake_all_ends_a_wait_without_a_look() {
        let wakeups = listening();
        let (looks, task) = idle_poll(&wakeups, Queue::Worker, Duration::from_secs(60), None);
        until_looked(&looks, 1).await;
        wakeups.wake_all();
        assert_eq!(task.await.expect("join").expect("ok"), None);
        assert_eq!(looks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_listener_every_wait_ends_with_a_look() {
        let wakeups = Arc::new(Wakeups::default());
        let (looks, task) = idle_poll(&wakeups, Queue::Orchestrator, Duration::from_millis(100), None);
        assert_eq!(task.await.expect("join").expect("ok"), None);
        assert_eq!(
            looks.load(Ordering::SeqCst),
            2,
            "a look at the start and one at the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_timeout_always_looks() {
        let wakeups = listening();
        for n in 1..=3 {
            let (looks, task) = idle_poll(&wakeups, Queue::Orchestrator, Duration::ZERO, None);
            assert_eq!(task.await.expect("join").expect("ok"), None);
            assert_eq!(looks.load(Ordering::SeqCst), 1, "poll {n}");
        }
    }

    /// A look that found an item and saw more makes every waiting fetch decide again: those whose
    /// decision comes before a look drained the queue look (their looks share a query).
    #[tokio::test(start_paused = true)]
    async fn a_look_that_sees_more_makes_every_waiting_fetch_look() {
        let wakeups = listening();
        // Idle fetches whose looks take a millisecond, as a query does.
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let looks = Arc::new(AtomicUsize::new(0));
                let task = tokio::spawn({
                    let (wakeups, looks) = (wakeups.clone(), looks.clone());
                    async move {
                        wakeups
                            .long_poll(Queue::Worker, "k", Duration::from_secs(60), |_| {
                                looks.fetch_add(1, Ordering::SeqCst);
                                async {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                    Ok(Polled::<()>::Empty { due: None })
                                }
                            })
                            .await
                    }
                });
                (looks, task)
            })
            .collect();
        // (Paused time: this lets every fetch look once and reach its wait.)
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before: Vec<usize> = waiting
            .iter()
            .map(|(looks, _)| looks.load(Ordering::SeqCst))
            .collect();
        assert_eq!(before, [1, 1, 1], "each looked while nothing was known");
        // A fetch that asks for the current state finds an item and sees more.
        let found = wakeups
            .long_poll(Queue::Worker, "k", Duration::ZERO, |_| async {
                Ok(Polled::Found {
                    item: (),
                    rest: Rest::More,
                })
            })
            .await
            .expect("ok");
        assert_eq!(found, Some(()));
        for ((looks, _), before) in waiting.iter().zip(&before) {
            until_looked(looks, before + 1).await;
        }
        // Their looks found nothing: known empty again, nobody looks on (until the recheck).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let total: usize = waiting
            .iter()
            .map(|(looks, _)| looks.load(Ordering::SeqCst))
            .sum();
        assert_eq!(total, 6, "one look each after the one that saw more");
        for (_, task) in waiting {
            task.abort();
        }
    }
}
