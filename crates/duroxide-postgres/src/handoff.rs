//! Work items handed straight to waiting worker fetches: an ack whose turn schedules activities
//! stores them already leased to this process's idle worker fetches, which then need no query.
//!
//! A chain of activities otherwise costs, per activity, a fetch query right after the ack that made
//! the item (a round trip and the database function's work, most of it looking for the item the
//! provider just wrote). Only items any worker fetch may take qualify (no tag, no session); tagged
//! and session items go through the queue as before.
//!
//! A fetch waits here only while it is idle, not while its own look runs. A handed item reaches its
//! fetch or, when the fetch went away meanwhile (its poll ended, it found an item of its own), is
//! handed back at once (`release`), so a lease is never left to run out unused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide_core::provider::{TagFilter, WorkItemLease, WorkerFetch};
use tokio::sync::{oneshot, Notify};

/// One waiting worker fetch.
#[derive(Debug)]
pub(crate) struct Waiter {
    lock_timeout: Duration,
    /// Not looking right now (a look may find an item itself).
    idle: AtomicBool,
    /// Promised to an ack in flight.
    reserved: AtomicBool,
    /// Given its item.
    delivered: AtomicBool,
    /// Notified when a promise is kept or given back.
    settled: Notify,
    deliver: Mutex<Option<oneshot::Sender<WorkItemLease>>>,
}

impl Waiter {
    /// Whether this fetch is between looks.
    pub(crate) fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::SeqCst);
    }

    /// Gives the fetch its item; the item back when the fetch is gone.
    fn deliver(&self, lease: WorkItemLease) -> Option<WorkItemLease> {
        let sender = self.deliver.lock().unwrap_or_else(|p| p.into_inner()).take();
        let sent = match sender {
            Some(sender) => sender.send(lease),
            None => Err(lease),
        };
        self.delivered.store(sent.is_ok(), Ordering::SeqCst);
        self.settled.notify_waiters();
        sent.err()
    }

    /// Not needed after all (the ack failed or leased fewer items).
    pub(crate) fn unreserve(&self) {
        self.reserved.store(false, Ordering::SeqCst);
        self.settled.notify_waiters();
    }

    /// Before a look: when an ack promised this fetch an item, waits for it, and says whether it
    /// came (then the look is not needed).
    pub(crate) async fn handed_before_look(&self) -> bool {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.delivered.load(Ordering::SeqCst) {
                return true;
            }
            if !self.reserved.load(Ordering::SeqCst) {
                return false;
            }
            settled.await;
        }
    }
}

/// The worker fetches of one provider object that can take handed items.
#[derive(Debug, Default)]
pub(crate) struct Handoffs {
    waiters: Mutex<Vec<Arc<Waiter>>>,
    /// Items delivered so far.
    handed: AtomicU64,
}

/// Whether items without a tag (the only ones handed) match the request.
fn takes_untagged(request: &WorkerFetch) -> bool {
    matches!(
        request.tag_filter,
        TagFilter::Any | TagFilter::DefaultOnly | TagFilter::DefaultAnd(_)
    )
}

impl Handoffs {
    /// Registers a fetch for `request`, when it can take handed items; the receiver gets its item.
    pub(crate) fn register(
        &self,
        request: &WorkerFetch,
    ) -> Option<(Arc<Waiter>, oneshot::Receiver<WorkItemLease>)> {
        if !takes_untagged(request) {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        let waiter = Arc::new(Waiter {
            lock_timeout: request.lock_timeout,
            idle: AtomicBool::new(true),
            reserved: AtomicBool::new(false),
            delivered: AtomicBool::new(false),
            settled: Notify::new(),
            deliver: Mutex::new(Some(sender)),
        });
        self.lock().push(waiter.clone());
        Some((waiter, receiver))
    }

    /// Gives `waiter` its item, counting it; the item back when the fetch is gone.
    pub(crate) fn deliver(&self, waiter: &Waiter, lease: WorkItemLease) -> Option<WorkItemLease> {
        let undelivered = waiter.deliver(lease);
        if undelivered.is_none() {
            self.handed.fetch_add(1, Ordering::Relaxed);
        }
        undelivered
    }

    /// Items delivered so far.
    pub(crate) fn handed(&self) -> u64 {
        self.handed.load(Ordering::Relaxed)
    }

    /// Forgets a fetch that stopped waiting.
    pub(crate) fn unregister(&self, waiter: &Arc<Waiter>) {
        self.lock().retain(|w| !Arc::ptr_eq(w, waiter));
    }

    /// Promises up to `max` idle fetches (all with one lock timeout, returned) to an ack.
    pub(crate) fn reserve(&self, max: usize) -> (Vec<Arc<Waiter>>, Duration) {
        let mut taken: Vec<Arc<Waiter>> = Vec::new();
        if max == 0 {
            return (taken, Duration::ZERO);
        }
        let waiters = self.lock();
        for waiter in waiters.iter() {
            if taken.len() == max {
                break;
            }
            let same_lease = taken
                .first()
                .is_none_or(|first| first.lock_timeout == waiter.lock_timeout);
            if same_lease
                && waiter.idle.load(Ordering::SeqCst)
                && waiter
                    .reserved
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                taken.push(waiter.clone());
            }
        }
        let lease = taken.first().map_or(Duration::ZERO, |w| w.lock_timeout);
        (taken, lease)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Waiter>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duroxide_core::provider::ActivityRef;

    fn request(tag_filter: TagFilter, lock_ms: u64) -> WorkerFetch {
        WorkerFetch {
            lock_timeout: Duration::from_millis(lock_ms),
            tag_filter,
            session: None,
        }
    }

    fn lease(event_id: u64) -> WorkItemLease {
        WorkItemLease {
            lock_token: format!("t{event_id}"),
            activity: ActivityRef {
                instance_id: "i".into(),
                execution_id: 1,
                event_id,
            },
            payload: "{}".into(),
            attempt: 1,
            session_id: None,
            tag: None,
        }
    }

    #[test]
    fn only_idle_unreserved_fetches_that_take_untagged_items_are_promised() {
        let handoffs = Handoffs::default();
        assert!(handoffs
            .register(&request(TagFilter::Tags(vec!["gpu".into()]), 1000))
            .is_none());
        let (busy, _busy_rx) = handoffs
            .register(&request(TagFilter::DefaultOnly, 1000))
            .expect("registered");
        let (idle, _idle_rx) = handoffs
            .register(&request(TagFilter::Any, 1000))
            .expect("registered");
        busy.set_idle(false);
        let (taken, lease) = handoffs.reserve(5);
        assert_eq!(taken.len(), 1);
        assert!(Arc::ptr_eq(&taken[0], &idle));
        assert_eq!(lease, Duration::from_millis(1000));
        // Promised once only, until given back.
        assert!(handoffs.reserve(5).0.is_empty());
        idle.unreserve();
        assert_eq!(handoffs.reserve(5).0.len(), 1);
    }

    #[test]
    fn one_ack_leases_for_one_lock_timeout() {
        let handoffs = Handoffs::default();
        let _a = handoffs
            .register(&request(TagFilter::DefaultOnly, 1000))
            .expect("registered");
        let _b = handoffs
            .register(&request(TagFilter::DefaultOnly, 2000))
            .expect("registered");
        let (taken, lease) = handoffs.reserve(2);
        assert_eq!((taken.len(), lease), (1, Duration::from_millis(1000)));
    }

    #[test]
    fn an_item_for_a_fetch_that_is_gone_comes_back() {
        let handoffs = Handoffs::default();
        let (waiter, receiver) = handoffs
            .register(&request(TagFilter::DefaultOnly, 1000))
            .expect("registered");
        drop(receiver);
        assert_eq!(
            handoffs.deliver(&waiter, lease(2)).map(|l| l.activity.event_id),
            Some(2)
        );
        let (waiter, mut receiver) = handoffs
            .register(&request(TagFilter::DefaultOnly, 1000))
            .expect("registered");
        assert!(handoffs.deliver(&waiter, lease(3)).is_none());
        assert_eq!(receiver.try_recv().map(|l| l.activity.event_id), Ok(3));
        // A second item for the same fetch comes back.
        assert!(handoffs.deliver(&waiter, lease(4)).is_some());
        assert_eq!(handoffs.handed(), 1);
        handoffs.unregister(&waiter);
        assert_eq!(handoffs.lock().len(), 1);
    }
}
