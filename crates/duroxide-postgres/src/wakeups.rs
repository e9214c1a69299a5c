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
}

impl KnownEmpty {
    /// When this knowledge runs out by itself.
    fn expires(&self) -> Instant {
        let recheck = self.looked_at + RECHECK;
        self.due.map_or(recheck, |due| due.min(recheck))
    }
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

    fn known_until(&self, key: &str, generation: u64, now: Instant) -> Option<Instant> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let entry = known.get(key)?;
        let expires = entry.expires();
        (entry.generation == generation && now < expires).then_some(expires)
    }

    fn remember(&self, key: &str, entry: KnownEmpty) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_KNOWN && !known.contains_key(key) {
            known.clear();
        }
        known.insert(key.to_owned(), entry);
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
            let now = Instant::now();
            let trusted = (self.is_listening() && !(first && poll_timeout.is_zero()))
                .then(|| signal.known_until(key, generation, now))
                .flatten();
            first = false;
            let wake_at = match trusted {
                Some(until) => until,
                None => match look().await? {
                    Polled::Found(found) => return Ok(Some(found)),
                    Polled::Empty { due } => {
                        let looked_at = Instant::now();
                        let known = KnownEmpty {
                            generation,
                            // Visibility is compared at millisecond precision, so waking a
                            // millisecond late guarantees the next look sees the item.
                            due: due.map(|d| looked_at + d + Duration::from_millis(1)),
                            looked_at,
                        };
                        signal.remember(key, known);
                        if self.is_listening() {
                            known.expires()
                        } else {
                            known.due.unwrap_or(deadline)
                        }
                    }
                },
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

    #[tokio::test(start_paused = true)]
    async fn an_idle_provider_looks_once_per_recheck_interval() {
        let wakeups = listening();
        let looks = Arc::new(AtomicUsize::new(0));
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
        let looks = looks.load(Ordering::SeqCst);
        assert!((5..=7).contains(&looks), "{looks} looks in 5 recheck intervals");
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
