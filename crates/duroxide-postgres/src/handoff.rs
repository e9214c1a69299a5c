//! Items handed straight to waiting fetches: an ack that makes work for this process stores it
//! already leased to one of its idle fetches, which then needs no query. A turn's ack leases the work
//! items it schedules to idle worker fetches; an activity's ack leases the instance its completion
//! goes to (when no turn of it runs) to an idle orchestration fetch.
//!
//! A chain of activities otherwise costs, per step, a fetch query right after the ack that made the
//! work (a round trip and the database function's work, most of it looking for what the provider just
//! wrote). Only work any fetch of the kind may take qualifies (for work items: no tag, no session).
//!
//! A fetch waits here only while it is idle, not while its own look runs. A handed item reaches its
//! fetch or, when the fetch went away meanwhile (its poll ended, it found an item of its own), is
//! handed back at once (`release`), so a lease is never left to run out unused.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

/// One waiting worker fetch.
#[derive(Debug)]
pub(crate) struct Waiter<T> {
    lock_timeout: Duration,
    /// Not looking right now (a look may find an item itself).
    idle: AtomicBool,
    /// Promised to an ack in flight.
    reserved: AtomicBool,
    /// Given its item.
    delivered: AtomicBool,
    /// Notified when a promise is kept or given back.
    settled: Notify,
    deliver: Mutex<Option<oneshot::Sender<T>>>,
}

impl<T> Waiter<T> {
    /// Whether this fetch is between looks.
    pub(crate) fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::SeqCst);
    }

    /// Gives the fetch its item; the item back when the fetch is gone.
    fn deliver(&self, lease: T) -> Option<T> {
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

/// The fetches of one queue of one provider object that can take handed items.
#[derive(Debug)]
pub(crate) struct Handoffs<T> {
    waiters: Mutex<Vec<Arc<Waiter<T>>>>,
    /// Items delivered so far.
    handed: AtomicU64,
}

impl<T> Default for Handoffs<T> {
    fn default() -> Self {
        Handoffs {
            waiters: Mutex::new(Vec::new()),
            handed: AtomicU64::new(0),
        }
    }
}

impl<T> Handoffs<T> {
    /// Registers a fetch whose items are leased for `lock_timeout`; the receiver gets its item.
    pub(crate) fn register(&self, lock_timeout: Duration) -> (Arc<Waiter<T>>, oneshot::Receiver<T>) {
        let (sender, receiver) = oneshot::channel();
        let waiter = Arc::new(Waiter {
            lock_timeout,
            idle: AtomicBool::new(true),
            reserved: AtomicBool::new(false),
            delivered: AtomicBool::new(false),
            settled: Notify::new(),
            deliver: Mutex::new(Some(sender)),
        });
        self.lock().push(waiter.clone());
        (waiter, receiver)
    }

    /// Gives `waiter` its item, counting it; the item back when the fetch is gone.
    pub(crate) fn deliver(&self, waiter: &Waiter<T>, lease: T) -> Option<T> {
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
    pub(crate) fn unregister(&self, waiter: &Arc<Waiter<T>>) {
        self.lock().retain(|w| !Arc::ptr_eq(w, waiter));
    }

    /// Promises up to `max` idle fetches (all with one lock timeout, returned) to an ack.
    pub(crate) fn reserve(&self, max: usize) -> (Vec<Arc<Waiter<T>>>, Duration) {
        let mut taken: Vec<Arc<Waiter<T>>> = Vec::new();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Waiter<T>>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn only_idle_unreserved_fetches_are_promised() {
        let handoffs = Handoffs::<u64>::default();
        let (busy, _busy_rx) = handoffs.register(ms(1000));
        let (idle, _idle_rx) = handoffs.register(ms(1000));
        busy.set_idle(false);
        let (taken, lease) = handoffs.reserve(5);
        assert_eq!(taken.len(), 1);
        assert!(Arc::ptr_eq(&taken[0], &idle));
        assert_eq!(lease, ms(1000));
        // Promised once only, until given back.
        assert!(handoffs.reserve(5).0.is_empty());
        idle.unreserve();
        assert_eq!(handoffs.reserve(5).0.len(), 1);
    }

    #[test]
    fn one_ack_leases_for_one_lock_timeout() {
        let handoffs = Handoffs::<u64>::default();
        let _a = handoffs.register(ms(1000));
        let _b = handoffs.register(ms(2000));
        let (taken, lease) = handoffs.reserve(2);
        assert_eq!((taken.len(), lease), (1, ms(1000)));
    }

    #[test]
    fn an_item_for_a_fetch_that_is_gone_comes_back() {
        let handoffs = Handoffs::<u64>::default();
        let (waiter, receiver) = handoffs.register(ms(1000));
        drop(receiver);
        assert_eq!(handoffs.deliver(&waiter, 2), Some(2));
        let (waiter, mut receiver) = handoffs.register(ms(1000));
        assert_eq!(handoffs.deliver(&waiter, 3), None);
        assert_eq!(receiver.try_recv(), Ok(3));
        // A second item for the same fetch comes back.
        assert_eq!(handoffs.deliver(&waiter, 4), Some(4));
        assert_eq!(handoffs.handed(), 1);
        handoffs.unregister(&waiter);
        assert_eq!(handoffs.lock().len(), 1);
    }

    #[tokio::test]
    async fn a_look_waits_for_a_promised_item() {
        let handoffs = Handoffs::<u64>::default();
        let (waiter, _receiver) = handoffs.register(ms(1000));
        assert!(!waiter.handed_before_look().await, "nothing promised: look");
        let (taken, _) = handoffs.reserve(1);
        let looking = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.handed_before_look().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(handoffs.deliver(&taken[0], 7), None);
        assert!(looking.await.expect("join"), "handed: no look");
        let (other, _rx) = handoffs.register(ms(1000));
        let (taken, _) = handoffs.reserve(1);
        assert!(Arc::ptr_eq(&taken[0], &other));
        let looking = tokio::spawn({
            let other = other.clone();
            async move { other.handed_before_look().await }
        });
        tokio::task::yield_now().await;
        other.unreserve();
        assert!(!looking.await.expect("join"), "promise given back: look");
    }
}
