//! Long-poll wake-ups: enqueues made through this provider wake waiting fetches at once, timers wake
//! them when due, and `wake_all` ends every wait.
//!
//! One waiter per new piece of work, not all of them: waking every waiting dispatcher for each enqueue
//! made all but one of them look in vain, and those looks (with the thread wake-ups they cost) were a
//! large share of a runtime's latency. So new work wakes one waiter, and a fetch that finds work while
//! more is fetchable wakes the next one (a chain that ends at the first look finding nothing). That is
//! sound only when waiters are interchangeable: every orchestration fetch is, while worker fetches
//! differ by tag filter and session routing. When waiting worker fetches have more than one such
//! *shape*, worker work wakes them all, as before.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use duroxide_core::provider::{ProviderError, TagFilter, WorkerFetch};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::now_ms;

/// What one look at a queue found.
#[derive(Debug)]
pub(crate) enum Polled<T> {
    /// `more`: something else is fetchable right now too, so another waiter should look.
    Found { item: T, more: bool },
    /// Nothing fetchable now; `next_due_ms` is the earliest time (epoch ms) at which something already
    /// stored becomes fetchable without any new write (a timer, a lease running out, a backoff ending).
    Empty { next_due_ms: Option<i64> },
}

/// The parts of a worker fetch that decide which items it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WorkerShape {
    tag_filter: TagFilter,
    /// Session owner and whether it may claim new sessions.
    session: Option<(String, bool)>,
}

impl WorkerShape {
    fn of(request: &WorkerFetch) -> WorkerShape {
        WorkerShape {
            tag_filter: request.tag_filter.clone(),
            session: request
                .session
                .as_ref()
                .map(|routing| (routing.owner_id.clone(), routing.may_claim_new)),
        }
    }
}

/// The wake-up signals of one provider object (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    orchestrator: Notify,
    worker: Notify,
    /// Long polls in progress on the orchestrator queue.
    orchestrator_polls: AtomicUsize,
    /// Shapes of the worker long polls in progress, with how many polls have each.
    worker_shapes: Mutex<Vec<(WorkerShape, usize)>>,
    /// Bumped by `wake_all`: a waiting fetch that sees it change gives up instead of waiting on.
    wake_all_generation: AtomicU64,
}

/// Which queue a fetch waits on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Queue<'a> {
    Orchestrator,
    Worker(&'a WorkerFetch),
}

/// Counts a long poll as in progress until dropped (also when the poll is cancelled).
struct Registration<'a> {
    wakeups: &'a Wakeups,
    worker_shape: Option<WorkerShape>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        match self.worker_shape.take() {
            None => {
                self.wakeups.orchestrator_polls.fetch_sub(1, Ordering::SeqCst);
            }
            Some(shape) => {
                let mut shapes = self.wakeups.shapes();
                if let Some(index) = shapes.iter().position(|(s, _)| *s == shape) {
                    shapes[index].1 -= 1;
                    if shapes[index].1 == 0 {
                        shapes.swap_remove(index);
                    }
                }
            }
        }
    }
}

impl Wakeups {
    /// New work may be fetchable from the orchestrator queue.
    pub(crate) fn orchestrator_work(&self) {
        self.orchestrator.notify_one();
    }

    /// New work may be fetchable from the worker queue.
    pub(crate) fn worker_work(&self) {
        if self.interchangeable_workers() {
            self.worker.notify_one();
        } else {
            self.worker.notify_waiters();
        }
    }

    /// Anything may have changed (another process committed): every waiter looks again.
    pub(crate) fn anything_changed(&self) {
        self.orchestrator.notify_waiters();
        self.worker.notify_waiters();
    }

    /// Ends every wait: fetches that then find nothing return `None` at once.
    pub(crate) fn wake_all(&self) {
        self.wake_all_generation.fetch_add(1, Ordering::SeqCst);
        self.anything_changed();
    }

    fn shapes(&self) -> std::sync::MutexGuard<'_, Vec<(WorkerShape, usize)>> {
        // The list is only pushed to and counted; a panic elsewhere cannot leave it inconsistent.
        self.worker_shapes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether any waiting worker fetch could take whatever another one could.
    fn interchangeable_workers(&self) -> bool {
        self.shapes().len() <= 1
    }

    fn register(&self, queue: Queue<'_>) -> Registration<'_> {
        let worker_shape = match queue {
            Queue::Orchestrator => {
                self.orchestrator_polls.fetch_add(1, Ordering::SeqCst);
                None
            }
            Queue::Worker(request) => {
                let shape = WorkerShape::of(request);
                let mut shapes = self.shapes();
                match shapes.iter_mut().find(|(s, _)| *s == shape) {
                    Some((_, count)) => *count += 1,
                    None => shapes.push((shape.clone(), 1)),
                }
                Some(shape)
            }
        };
        Registration {
            wakeups: self,
            worker_shape,
        }
    }

    /// Whether a long poll other than the caller's is in progress on `queue`, so that finding more work
    /// is worth announcing.
    fn others_polling(&self, queue: Queue<'_>) -> bool {
        match queue {
            Queue::Orchestrator => self.orchestrator_polls.load(Ordering::SeqCst) > 1,
            Queue::Worker(_) => {
                let shapes = self.shapes();
                shapes.len() == 1 && shapes[0].1 > 1
            }
        }
    }

    fn notify(&self, queue: Queue<'_>) -> &Notify {
        match queue {
            Queue::Orchestrator => &self.orchestrator,
            Queue::Worker(_) => &self.worker,
        }
    }

    /// Calls `look` until it finds something, `poll_timeout` passes, or `wake_all` is called. Between
    /// looks it sleeps until a wake-up for `queue` or the next due time, whichever comes first. `look`
    /// is told whether other fetches are waiting (only then is `more` worth finding out).
    pub(crate) async fn long_poll<T, F, Fut>(
        &self,
        queue: Queue<'_>,
        poll_timeout: Duration,
        mut look: F,
    ) -> Result<Option<T>, ProviderError>
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = Result<Polled<T>, ProviderError>>,
    {
        let deadline = Instant::now() + poll_timeout;
        let generation = self.wake_all_generation.load(Ordering::SeqCst);
        // Registered before the first look: a signal sent after that look's transaction is then sent
        // knowing about this poll (see `worker_work`).
        let _registration = self.register(queue);
        loop {
            // Registered before looking, so a wake-up between the look and the wait is not lost.
            let notified = self.notify(queue).notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let next_due_ms = match look(self.others_polling(queue)).await? {
                Polled::Found { item, more } => {
                    if more {
                        self.pass_on(queue);
                    }
                    return Ok(Some(item));
                }
                Polled::Empty { next_due_ms } => next_due_ms,
            };
            if self.wake_all_generation.load(Ordering::SeqCst) != generation {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wait_until = match next_due_ms {
                Some(due) => {
                    // Visibility is compared at millisecond precision (`visible_at_ms <= now`), so
                    // waking a millisecond late guarantees the next look sees the item.
                    let delay = u64::try_from(due.saturating_sub(now_ms()).saturating_add(1)).unwrap_or(0);
                    deadline.min(now + Duration::from_millis(delay))
                }
                None => deadline,
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wait_until) => {}
            }
        }
    }

    /// A fetch found work while more was fetchable: one more waiter should look. (Several timers
    /// coming due at once are announced by nobody else.) With differently shaped worker fetches, every
    /// waiter already heard of every enqueue and knows every due time.
    fn pass_on(&self, queue: Queue<'_>) {
        match queue {
            Queue::Orchestrator => self.orchestrator.notify_one(),
            Queue::Worker(_) => {
                if self.interchangeable_workers() {
                    self.worker.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Starts a long poll that never finds anything and counts its looks.
    fn idle_poll(
        wakeups: &Arc<Wakeups>,
        worker: Option<WorkerFetch>,
        next_due_ms: Option<i64>,
    ) -> (
        Arc<AtomicUsize>,
        tokio::task::JoinHandle<Result<Option<()>, ProviderError>>,
    ) {
        let looks = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (wakeups, looks) = (wakeups.clone(), looks.clone());
            async move {
                let queue = match &worker {
                    Some(request) => Queue::Worker(request),
                    None => Queue::Orchestrator,
                };
                wakeups
                    .long_poll(queue, Duration::from_secs(60), |_| {
                        looks.fetch_add(1, Ordering::SeqCst);
                        async move { Ok(Polled::<()>::Empty { next_due_ms }) }
                    })
                    .await
            }
        });
        (looks, task)
    }

    fn worker_fetch(tag_filter: TagFilter) -> WorkerFetch {
        WorkerFetch {
            lock_timeout: Duration::from_secs(1),
            tag_filter,
            session: None,
        }
    }

    async fn until_looked(looks: &AtomicUsize, times: usize) {
        while looks.load(Ordering::SeqCst) < times {
            tokio::task::yield_now().await;
        }
    }

    /// Gives woken polls time to look (a wait that must *not* end in a look cannot be observed
    /// otherwise).
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn one_wake_all_ends_a_registered_wait() {
        let wakeups = Arc::new(Wakeups::default());
        let (looks, task) = idle_poll(&wakeups, Some(worker_fetch(TagFilter::Any)), None);
        until_looked(&looks, 1).await;
        wakeups.wake_all();
        let result = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ended")
            .expect("join");
        assert_eq!(result.expect("ok"), None);
        assert_eq!(looks.load(Ordering::SeqCst), 2, "looks once more, then gives up");
    }

    #[tokio::test]
    async fn work_on_the_queue_triggers_another_look() {
        let wakeups = Arc::new(Wakeups::default());
        let (looks, task) = idle_poll(&wakeups, None, None);
        until_looked(&looks, 1).await;
        wakeups.worker_work(); // the other queue: no look
        wakeups.orchestrator_work();
        until_looked(&looks, 2).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_due_time_triggers_another_look() {
        let wakeups = Arc::new(Wakeups::default());
        let (looks, task) = idle_poll(&wakeups, None, Some(now_ms() + 20));
        tokio::time::timeout(Duration::from_secs(5), until_looked(&looks, 3))
            .await
            .expect("looked again when due");
        task.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn new_work_wakes_one_of_several_interchangeable_waiters() {
        let wakeups = Arc::new(Wakeups::default());
        let polls: Vec<_> = (0..3).map(|_| idle_poll(&wakeups, None, None)).collect();
        for (looks, _) in &polls {
            until_looked(looks, 1).await;
        }
        wakeups.orchestrator_work();
        settle().await;
        let total: usize = polls.iter().map(|(looks, _)| looks.load(Ordering::SeqCst)).sum();
        assert_eq!(total, 4, "one poll looked again");
        polls.iter().for_each(|(_, task)| task.abort());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn worker_work_wakes_every_waiter_when_their_filters_differ() {
        let wakeups = Arc::new(Wakeups::default());
        let polls = [
            idle_poll(&wakeups, Some(worker_fetch(TagFilter::DefaultOnly)), None),
            idle_poll(
                &wakeups,
                Some(worker_fetch(TagFilter::Tags(vec!["gpu".into()]))),
                None,
            ),
        ];
        for (looks, _) in &polls {
            until_looked(looks, 1).await;
        }
        wakeups.worker_work();
        for (looks, _) in &polls {
            tokio::time::timeout(Duration::from_secs(5), until_looked(looks, 2))
                .await
                .expect("every differently filtered poll looked again");
        }
        polls.iter().for_each(|(_, task)| task.abort());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_find_with_more_work_wakes_the_next_waiter() {
        let wakeups = Arc::new(Wakeups::default());
        let (looks, idle) = idle_poll(&wakeups, None, None);
        until_looked(&looks, 1).await;
        let found = wakeups
            .long_poll(Queue::Orchestrator, Duration::from_secs(5), |others| async move {
                assert!(others, "the idle poll is waiting");
                Ok(Polled::Found { item: 7, more: true })
            })
            .await
            .expect("ok");
        assert_eq!(found, Some(7));
        tokio::time::timeout(Duration::from_secs(5), until_looked(&looks, 2))
            .await
            .expect("the waiter was told");
        idle.abort();
    }
}
