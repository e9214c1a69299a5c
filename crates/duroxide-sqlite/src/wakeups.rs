//! Long-poll wake-ups: enqueues made through this provider wake waiting fetches at once, timers wake
//! them when due, and `wake_all` ends every wait.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duroxide_core::provider::ProviderError;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::now_ms;

/// What one look at a queue found.
#[derive(Debug)]
pub(crate) enum Polled<T> {
    Found(T),
    /// Nothing fetchable now; `next_due_ms` is the earliest time (epoch ms) at which something already
    /// stored becomes fetchable without any new write (a timer, a lease running out, a backoff ending).
    Empty {
        next_due_ms: Option<i64>,
    },
}

/// The wake-up signals of one provider object (shared by its clones).
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    orchestrator: Notify,
    worker: Notify,
    /// Bumped by `wake_all`: a waiting fetch that sees it change gives up instead of waiting on.
    wake_all_generation: AtomicU64,
}

/// Which queue a fetch waits on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Queue {
    Orchestrator,
    Worker,
}

impl Wakeups {
    /// New work may be fetchable from the orchestrator queue.
    pub(crate) fn orchestrator_work(&self) {
        self.orchestrator.notify_waiters();
    }

    /// New work may be fetchable from the worker queue.
    pub(crate) fn worker_work(&self) {
        self.worker.notify_waiters();
    }

    /// Ends every wait: fetches that then find nothing return `None` at once.
    pub(crate) fn wake_all(&self) {
        self.wake_all_generation.fetch_add(1, Ordering::SeqCst);
        self.orchestrator.notify_waiters();
        self.worker.notify_waiters();
    }

    fn notify(&self, queue: Queue) -> &Notify {
        match queue {
            Queue::Orchestrator => &self.orchestrator,
            Queue::Worker => &self.worker,
        }
    }

    /// Calls `look` until it finds something, `poll_timeout` passes, or `wake_all` is called. Between
    /// looks it sleeps until a wake-up for `queue` or the next due time, whichever comes first.
    pub(crate) async fn long_poll<T, F, Fut>(
        &self,
        queue: Queue,
        poll_timeout: Duration,
        mut look: F,
    ) -> Result<Option<T>, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Polled<T>, ProviderError>>,
    {
        let deadline = Instant::now() + poll_timeout;
        let generation = self.wake_all_generation.load(Ordering::SeqCst);
        loop {
            // Registered before looking, so a wake-up between the look and the wait is not lost.
            let notified = self.notify(queue).notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let next_due_ms = match look().await? {
                Polled::Found(found) => return Ok(Some(found)),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Starts a long poll that never finds anything and counts its looks.
    fn idle_poll(
        wakeups: &Arc<Wakeups>,
        queue: Queue,
        next_due_ms: Option<i64>,
    ) -> (
        Arc<AtomicUsize>,
        tokio::task::JoinHandle<Result<Option<()>, ProviderError>>,
    ) {
        let looks = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (wakeups, looks) = (wakeups.clone(), looks.clone());
            async move {
                wakeups
                    .long_poll(queue, Duration::from_secs(60), || {
                        looks.fetch_add(1, Ordering::SeqCst);
                        async move { Ok(Polled::<()>::Empty { next_due_ms }) }
                    })
                    .await
            }
        });
        (looks, task)
    }

    async fn until_looked(looks: &AtomicUsize, times: usize) {
        while looks.load(Ordering::SeqCst) < times {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn one_wake_all_ends_a_registered_wait() {
        let wakeups = Arc::new(Wakeups::default());
        let (looks, task) = idle_poll(&wakeups, Queue::Worker, None);
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
        let (looks, task) = idle_poll(&wakeups, Queue::Orchestrator, None);
        until_looked(&looks, 1).await;
        wakeups.worker_work(); // the other queue: no look
        wakeups.orchestrator_work();
        until_looked(&looks, 2).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_due_time_triggers_another_look() {
        let wakeups = Arc::new(Wakeups::default());
        let (looks, task) = idle_poll(&wakeups, Queue::Orchestrator, Some(now_ms() + 20));
        tokio::time::timeout(Duration::from_secs(5), until_looked(&looks, 3))
            .await
            .expect("looked again when due");
        task.abort();
    }
}
