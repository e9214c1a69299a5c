//! Long-poll wake-ups without polling: a fetch that found nothing waits until something can have
//! changed, and an idle provider issues (almost) no queries.
//!
//! Every way work becomes fetchable is either a write or the passing of a stored time. Writes are
//! announced: at once to this provider object's waiting fetches, and through LISTEN/NOTIFY to every
//! other object on the schema (see `listener`). Each announcement bumps the queue's *generation*.
//! Stored times (a timer coming due, a lease or backoff running out) are reported by the fetch itself as
//! `next_due`. So after an empty look, the queue is *known empty* until the generation moves, the due
//! time passes, or [`RECHECK`] elapses; fetches in that window wait without asking the database, and a
//! fetch whose poll timeout ends in it returns `None` without a query. While the listener connection is
//! down, notifications from other processes can be missed, so every wait ends with a fresh look.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use duroxide_core::provider::ProviderError;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long "known empty" is trusted without a look: a safety net against a notification lost in a
/// way the listener cannot see. It bounds an idle provider to one query per queue per interval.
pub(crate) const RECHECK: Duration = Duration::from_secs(2);

/// At most this many distinct worker fetch requests are remembered (a runtime uses one or two).
const MAX_KNOWN: usize = 64;

/// What one look at a queue found.
#[derive(Debug)]
pub(crate) enum Polled<T> {
    Found(T),
    /// Nothing fetchable now; something stored becomes fetchable after `due` (from now) without any
    /// new write, or never (`None`).
    Empty {
        due: Option<Duration>,
    },
}

/// Which queue a fetch waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    Orchestrator,
    Worker,
}

/// The result of an empty look, trusted until the generation moves, `due` passes or it gets old.
#[derive(Debug, Clone, Copy)]
struct KnownEmpty {
    generation: u64,
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
}

/// What a fetch should do next about one request key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The queue is known empty until then: wait without a query.
    Trust(Instant),
    /// Look. `refresh`: this fetch took the job of renewing knowledge that ran out by itself.
    Look { refresh: bool },
    /// Another fetch is renewing the knowledge; wait for its answer.
    AwaitRefresh,
}

#[derive(Debug, Default)]
struct Signal {
    notify: Notify,
    generation: AtomicU64,
    /// Keyed by fetch request (worker fetches with different filters see different queues).
    known: Mutex<HashMap<String, KnownEmpty>>,
}

impl Signal {
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, KnownEmpty>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After an announcement every waiting fetch looks (work arrived: several may find some). When
    /// knowledge merely ran out (the recheck interval, a due time), one fetch looks for all: an idle
    /// provider then makes one query per interval however many fetches wait.
    fn next(&self, key: &str, generation: u64, now: Instant) -> Next {
        let mut known = self.known();
        let Some(entry) = known.get_mut(key) else {
            return Next::Look { refresh: false };
        };
        if entry.generation != generation {
            return Next::Look { refresh: false };
        }
        if now < entry.expires() {
            return Next::Trust(entry.expires());
        }
        if entry.refreshing {
            return Next::AwaitRefresh;
        }
        entry.refreshing = true;
        Next::Look { refresh: true }
    }

    fn remember(&self, key: &str, entry: KnownEmpty) {
        let mut known = self.known();
        if known.len() >= MAX_KNOWN && !known.contains_key(key) {
            known.clear();
        }
        known.insert(key.to_owned(), entry);
    }

    /// The refreshing fetch is done (found work, failed, or was dropped): let the others decide again.
    fn end_refresh(&self, key: &str) {
        if let Some(entry) = self.known().get_mut(key) {
            entry.refreshing = false;
        }
        self.notify.notify_waiters();
    }
}

/// Ends a refresh however the refreshing fetch ends, including when its future is dropped mid-look
/// (a runtime shutting down), so the other fetches never wait for an answer that will not come.
struct RefreshGuard<'a> {
    signal: &'a Signal,
    key: &'a str,
}

impl Drop for RefreshGuard<'_> {
    fn drop(&mut self) {
        self.signal.end_refresh(self.key);
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
}

impl Wakeups {
    fn signal(&self, queue: Queue) -> &Signal {
        match queue {
            Queue::Orchestrator => &self.orchestrator,
            Queue::Worker => &self.worker,
        }
    }

    /// Work may have become fetchable on `queue`: waiting fetches look again.
    pub(crate) fn work_arrived(&self, queue: Queue) {
        self.signal(queue).bump();
    }

    /// Ends every wait: fetches that then find nothing return `None` at once.
    pub(crate) fn wake_all(&self) {
        self.wake_all_generation.fetch_add(1, Ordering::SeqCst);
        self.orchestrator.notify.notify_waiters();
        self.worker.notify.notify_waiters();
    }

    /// The listener went up or down. Either way everything known is stale: notifications may have been
    /// missed while it was down.
    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
        self.orchestrator.bump();
        self.worker.bump();
    }

    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Calls `look` until it finds something, `poll_timeout` passes, or `wake_all` is called, looking
    /// only when something can have changed since the last empty look for `key`. A zero
    /// `poll_timeout` always looks once: the caller asked for the current state, not for a wait.
    pub(crate) async fn long_poll<T, F, Fut>(
        &self,
        queue: Queue,
        key: &str,
        poll_timeout: Duration,
        mut look: F,
    ) -> Result<Option<T>, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Polled<T>, ProviderError>>,
    {
        let signal = self.signal(queue);
        let deadline = Instant::now() + poll_timeout;
        let wake_all_generation = self.wake_all_generation.load(Ordering::SeqCst);
        let mut first = true;
        loop {
            // Registered before reading the generation and looking, so an announcement made in
            // between is not lost.
            let notified = signal.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let generation = signal.generation.load(Ordering::SeqCst);
            let next = if self.is_listening() && !(first && poll_timeout.is_zero()) {
                signal.next(key, generation, Instant::now())
            } else {
                Next::Look { refresh: false }
            };
            first = false;
            let wake_at = match next {
                Next::Trust(until) => until,
                // Woken when the refreshing fetch is done.
                Next::AwaitRefresh => deadline,
                Next::Look { refresh } => {
                    // Lazily: building a guard and dropping it would end a refresh at once.
                    let _guard = refresh.then(|| RefreshGuard { signal, key });
                    match look().await? {
                        Polled::Found(found) => return Ok(Some(found)),
                        Polled::Empty { due } => {
                            let looked_at = Instant::now();
                            let known = KnownEmpty {
                                generation,
                                // Visibility is compared at millisecond precision, so waking a
                                // millisecond late guarantees the next look sees the item.
                                due: due.map(|d| looked_at + d + Duration::from_millis(1)),
                                looked_at,
                                refreshing: false,
                            };
                            signal.remember(key, known);
                            if self.is_listening() {
                                known.expires()
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
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake_at.min(deadline)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

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
                    .long_poll(queue, "k", poll, || {
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

    #[tokio::test(start_paused = true)]
    async fn idle_polls_reuse_an_empty_look() {
        let wakeups = listening();
        let looks = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let looks = looks.clone();
            let found = wakeups
                .long_poll(Queue::Orchestrator, "k", Duration::from_millis(100), || {
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
                            .long_poll(Queue::Worker, "k", Duration::from_millis(100), || {
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
    async fn a_refresh_dropped_mid_look_lets_another_fetch_look() {
        let wakeups = listening();
        // Knowledge that has run out, so the next fetch takes the refresh.
        let stale = Instant::now();
        wakeups.orchestrator.remember(
            "k",
            KnownEmpty {
                generation: wakeups.orchestrator.generation.load(Ordering::SeqCst),
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
                    .long_poll(Queue::Orchestrator, "k", Duration::from_secs(60), || {
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
        wakeups.work_arrived(Queue::Worker); // the other queue: no look
        tokio::task::yield_now().await;
        assert_eq!(looks.load(Ordering::SeqCst), 1);
        wakeups.work_arrived(Queue::Orchestrator);
        until_looked(&looks, 2).await;
        task.abort();
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
}
