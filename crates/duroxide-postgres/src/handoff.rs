//! Items handed straight to waiting fetches: an ack that makes work for this process stores it
//! already leased to one of its idle fetches, which then needs no query. A turn's ack leases the work
//! items it schedules to idle worker fetches; an activity's ack leases the instance its completion
//! goes to (when no turn of it runs) to an idle orchestration fetch, and a create its new instance.
//!
//! A chain of activities otherwise costs, per step, a fetch query right after the ack that made the
//! work (a round trip and the database function's work, most of it looking for what the provider just
//! wrote). Only work any fetch of the kind may take qualifies (for work items: no tag, no session).
//!
//! A fetch waits here only while it is idle, not while its own look runs. A handed item reaches its
//! fetch or, when the fetch went away meanwhile (its poll ended, it found an item of its own), is
//! handed back at once (`release`), so a lease is never left to run out unused.
//!
//! Under load no fetch is idle: each finds queued work at once. An ack (or a create) then leases its
//! item anyway, into a small stock that the next fetch takes from before it looks (`take_stocked`),
//! and a fetch query leases a few more queued items for the stock. A fetch whose look found nothing
//! takes from the stock too: a query that ran alongside may have leased the last queued items.
//! The stock holds a few items per fetch this object has had at once (about the runtime's slots;
//! see [`Handoffs::new`]), is filled only while fetches run, and an item nobody takes within
//! [`stock_ttl`] goes back (the caller times it), so stocked work waits about one turn, never a
//! lease. A stocked item is leased for that much longer ([`stock_lease`]): whoever takes it still
//! holds it a whole lock timeout from its fetch on, as the provider contract promises.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

/// A waiting fetch is between looks and may be promised an item.
const IDLE: u8 = 0;
/// Its own look runs: no ack may promise it an item (the look may find one itself).
const LOOKING: u8 = 1;
/// Promised an item by an ack in flight: it does not look until the promise is kept or given back.
const RESERVED: u8 = 2;
/// Given its item.
const DELIVERED: u8 = 3;

/// One waiting fetch.
#[derive(Debug)]
pub(crate) struct Waiter<T> {
    lock_timeout: Duration,
    /// [`IDLE`], [`LOOKING`], [`RESERVED`] or [`DELIVERED`]: one state, changed by compare-and-swap,
    /// so that a fetch never starts a look while an ack promises it an item (the look would be
    /// dropped when the item came, and the wake-up it answered lost with it).
    state: AtomicU8,
    /// Notified when a promise is kept or given back.
    settled: Notify,
    deliver: Mutex<Option<oneshot::Sender<T>>>,
}

impl<T> Waiter<T> {
    fn swap(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Gives the fetch its item; the item back when the fetch is gone.
    fn deliver(&self, lease: T) -> Option<T> {
        let sender = self.deliver.lock().unwrap_or_else(|p| p.into_inner()).take();
        let sent = match sender {
            Some(sender) => sender.send(lease),
            None => Err(lease),
        };
        self.state
            .store(if sent.is_ok() { DELIVERED } else { IDLE }, Ordering::SeqCst);
        self.settled.notify_waiters();
        sent.err()
    }

    /// Not needed after all (the ack failed or leased fewer items).
    pub(crate) fn unreserve(&self) {
        self.swap(RESERVED, IDLE);
        self.settled.notify_waiters();
    }

    /// Before a look: marks the fetch as looking and says so, or, when an ack promised it an item,
    /// waits for the promise to be kept or given back. `false` when the item came (no look needed).
    pub(crate) async fn begin_look(&self) -> bool {
        loop {
            if self.swap(IDLE, LOOKING) {
                return true;
            }
            if !self.settle().await {
                continue;
            }
            return false;
        }
    }

    /// After a look (whatever it found).
    pub(crate) fn end_look(&self) {
        self.swap(LOOKING, IDLE);
    }

    /// Waits while an ack's promise to this fetch is open; whether the item came.
    pub(crate) async fn settle(&self) -> bool {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match self.state.load(Ordering::SeqCst) {
                DELIVERED => return true,
                RESERVED => settled.await,
                _ => return false,
            }
        }
    }
}

/// Longest a stocked item waits for a fetch (see [`stock_ttl`]).
const STOCK_TTL: Duration = Duration::from_millis(500);

/// How long an item stocked for fetches with `lock_timeout` may wait: [`STOCK_TTL`], at most half
/// the lock timeout.
pub(crate) fn stock_ttl(lock_timeout: Duration) -> Duration {
    STOCK_TTL.min(lock_timeout / 2)
}

/// What an item for the stock is leased for: the fetch's lock timeout plus the longest it may wait.
pub(crate) fn stock_lease(lock_timeout: Duration) -> Duration {
    lock_timeout + stock_ttl(lock_timeout)
}

/// Fetches stop being counted as running this long after the last one ended: the stock fills only
/// while a consumer of this object fetches (not after its runtime stopped).
const FETCHING_GRACE: Duration = Duration::from_secs(1);

/// An item leased for no fetch in particular.
#[derive(Debug)]
struct Stocked<T> {
    id: u64,
    lock_timeout: Duration,
    /// No later than the lease began (taken before the statement that leased it was sent).
    leased_from: Instant,
    item: T,
}

/// The stock and what bounds it.
#[derive(Debug)]
struct Stock<T> {
    items: VecDeque<Stocked<T>>,
    /// Places promised to acks in flight.
    promised: usize,
    /// Fetches registered now, and the most there have been at once (the stock's size, times
    /// `per_fetch`).
    fetching: usize,
    peak_fetching: usize,
    per_fetch: usize,
    last_fetch_ended: Option<Instant>,
    /// Lock timeout of the latest fetch: what a stocked item is leased for.
    lock_timeout: Duration,
    next_id: u64,
}

/// The fetches of one queue of one provider object that can take handed items.
#[derive(Debug)]
pub(crate) struct Handoffs<T> {
    waiters: Mutex<Vec<Arc<Waiter<T>>>>,
    stock: Mutex<Stock<T>>,
    /// Items delivered so far (to waiting fetches or from the stock).
    handed: AtomicU64,
}

impl<T> Default for Handoffs<T> {
    /// A stock of one item per fetch.
    fn default() -> Self {
        Handoffs::new(1)
    }
}

impl<T> Handoffs<T> {
    /// Handoffs whose stock holds up to `per_fetch` items (at least 1) for each fetch there has been
    /// at once. One is enough where acks hand most items straight to fetches; more lets a fetch query
    /// lease queued items for the stock while acks keep it busy with items of their own.
    pub(crate) fn new(per_fetch: usize) -> Self {
        Handoffs {
            waiters: Mutex::new(Vec::new()),
            stock: Mutex::new(Stock {
                items: VecDeque::new(),
                promised: 0,
                fetching: 0,
                peak_fetching: 0,
                per_fetch: per_fetch.max(1),
                last_fetch_ended: None,
                lock_timeout: Duration::ZERO,
                next_id: 0,
            }),
            handed: AtomicU64::new(0),
        }
    }

    /// Registers a fetch whose items are leased for `lock_timeout`; the receiver gets its item.
    pub(crate) fn register(&self, lock_timeout: Duration) -> (Arc<Waiter<T>>, oneshot::Receiver<T>) {
        let (sender, receiver) = oneshot::channel();
        let waiter = Arc::new(Waiter {
            lock_timeout,
            state: AtomicU8::new(IDLE),
            settled: Notify::new(),
            deliver: Mutex::new(Some(sender)),
        });
        self.lock().push(waiter.clone());
        let mut stock = self.stock();
        stock.fetching += 1;
        stock.peak_fetching = stock.peak_fetching.max(stock.fetching);
        stock.lock_timeout = lock_timeout;
        drop(stock);
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

    /// Registered fetches between looks, not promised an item.
    pub(crate) fn idle(&self) -> usize {
        self.lock()
            .iter()
            .filter(|w| w.state.load(Ordering::SeqCst) == IDLE)
            .count()
    }

    /// Items delivered so far.
    pub(crate) fn handed(&self) -> u64 {
        self.handed.load(Ordering::Relaxed)
    }

    /// Forgets a fetch that stopped waiting.
    pub(crate) fn unregister(&self, waiter: &Arc<Waiter<T>>) {
        self.lock().retain(|w| !Arc::ptr_eq(w, waiter));
        let mut stock = self.stock();
        stock.fetching = stock.fetching.saturating_sub(1);
        stock.last_fetch_ended = Some(Instant::now());
    }

    /// Promises an ack a place in the stock, when there is one and fetches are running: the lock
    /// timeout to lease its item for.
    pub(crate) fn reserve_stock(&self) -> Option<Duration> {
        let mut stock = self.stock();
        let running = stock.fetching > 0
            || stock
                .last_fetch_ended
                .is_some_and(|ended| ended.elapsed() < FETCHING_GRACE);
        let free = stock.peak_fetching * stock.per_fetch > stock.items.len() + stock.promised;
        if !(running && free) {
            return None;
        }
        stock.promised += 1;
        Some(stock.lock_timeout)
    }

    /// Promises a fetch query up to `max` places in the stock, for items it leases beyond what its
    /// looks need (when fetches run): how many.
    pub(crate) fn reserve_stock_places(&self, max: usize) -> usize {
        let mut places = 0;
        while places < max && self.reserve_stock().is_some() {
            places += 1;
        }
        places
    }

    /// Gives back a place the ack did not fill.
    pub(crate) fn unreserve_stock(&self) {
        let mut stock = self.stock();
        stock.promised = stock.promised.saturating_sub(1);
    }

    /// Fills a promised place with an item leased for [`stock_lease`]`(lock_timeout)` from no earlier
    /// than `leased_from`; the id names the item for [`take_unwanted`](Self::take_unwanted).
    pub(crate) fn stock_item(&self, item: T, lock_timeout: Duration, leased_from: Instant) -> u64 {
        let mut stock = self.stock();
        stock.promised = stock.promised.saturating_sub(1);
        let id = stock.next_id;
        stock.next_id += 1;
        stock.items.push_back(Stocked {
            id,
            lock_timeout,
            leased_from,
            item,
        });
        id
    }

    /// The oldest stocked item for fetches with `lock_timeout` that has not waited too long (it still
    /// has a whole lock timeout of its lease left), for a fetch.
    pub(crate) fn take_stocked(&self, lock_timeout: Duration) -> Option<T> {
        let mut stock = self.stock();
        let at = stock.items.iter().position(|s| {
            s.lock_timeout == lock_timeout && s.leased_from.elapsed() < stock_ttl(lock_timeout)
        })?;
        let taken = stock.items.remove(at).map(|s| s.item);
        drop(stock);
        self.handed.fetch_add(1, Ordering::Relaxed);
        taken
    }

    /// Item `id`, when no fetch took it: to be handed back.
    pub(crate) fn take_unwanted(&self, id: u64) -> Option<T> {
        let mut stock = self.stock();
        let at = stock.items.iter().position(|s| s.id == id)?;
        stock.items.remove(at).map(|s| s.item)
    }

    /// Every stocked item: to be handed back (the consumer stops fetching).
    pub(crate) fn take_all_stocked(&self) -> Vec<T> {
        self.stock().items.drain(..).map(|s| s.item).collect()
    }

    fn stock(&self) -> std::sync::MutexGuard<'_, Stock<T>> {
        self.stock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Promises up to `max` idle fetches to an ack, all with one lock timeout (returned): `lock_timeout`
    /// when given, else the first idle fetch's.
    pub(crate) fn reserve(
        &self,
        max: usize,
        lock_timeout: Option<Duration>,
    ) -> (Vec<Arc<Waiter<T>>>, Duration) {
        let mut taken: Vec<Arc<Waiter<T>>> = Vec::new();
        if max == 0 {
            return (taken, Duration::ZERO);
        }
        let waiters = self.lock();
        for waiter in waiters.iter() {
            if taken.len() == max {
                break;
            }
            let wanted = lock_timeout.or(taken.first().map(|first| first.lock_timeout));
            let same_lease = wanted.is_none_or(|lock| lock == waiter.lock_timeout);
            if same_lease && waiter.swap(IDLE, RESERVED) {
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

/// What an operation promised before its statement ran: items to waiting fetches, places in the
/// stock. Dropped before the operation settled them itself (its future was dropped mid-way: a
/// cancelled call), it gives them back; otherwise a promised fetch would not look again until its
/// poll ended, and a promised place would stay taken for good.
#[must_use]
pub(crate) struct Promised<'a, T> {
    handoffs: &'a Handoffs<T>,
    waiters: Vec<Arc<Waiter<T>>>,
    places: usize,
}

impl<'a, T> Promised<'a, T> {
    pub(crate) fn new(handoffs: &'a Handoffs<T>, waiters: &[Arc<Waiter<T>>], places: usize) -> Self {
        Promised {
            handoffs,
            waiters: waiters.to_vec(),
            places,
        }
    }

    /// The operation got its answer and keeps or gives back each promise itself.
    pub(crate) fn settled(mut self) {
        self.waiters.clear();
        self.places = 0;
    }
}

impl<T> Drop for Promised<'_, T> {
    fn drop(&mut self) {
        for waiter in &self.waiters {
            waiter.unreserve();
        }
        for _ in 0..self.places {
            self.handoffs.unreserve_stock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test]
    async fn only_idle_unreserved_fetches_are_promised() {
        let handoffs = Handoffs::<u64>::default();
        let (busy, _busy_rx) = handoffs.register(ms(1000));
        let (idle, _idle_rx) = handoffs.register(ms(1000));
        assert!(busy.begin_look().await);
        let (taken, lease) = handoffs.reserve(5, None);
        assert_eq!(taken.len(), 1);
        assert!(Arc::ptr_eq(&taken[0], &idle));
        assert_eq!(lease, ms(1000));
        // Promised once only, until given back.
        assert!(handoffs.reserve(5, None).0.is_empty());
        idle.unreserve();
        assert_eq!(handoffs.reserve(5, None).0.len(), 1);
    }

    #[test]
    fn one_ack_leases_for_one_lock_timeout() {
        let handoffs = Handoffs::<u64>::default();
        let _a = handoffs.register(ms(1000));
        let _b = handoffs.register(ms(2000));
        let (taken, lease) = handoffs.reserve(2, None);
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

    #[test]
    fn the_stock_holds_as_many_items_as_there_were_fetches_at_once() {
        let handoffs = Handoffs::<u64>::default();
        assert_eq!(handoffs.reserve_stock(), None, "no fetch ever ran");
        let (a, _a_rx) = handoffs.register(ms(1000));
        let (b, _b_rx) = handoffs.register(ms(1000));
        handoffs.unregister(&a);
        // Two fetches ran at once: two places, promised or filled.
        assert_eq!(handoffs.reserve_stock(), Some(ms(1000)));
        assert_eq!(handoffs.reserve_stock(), Some(ms(1000)));
        assert_eq!(handoffs.reserve_stock(), None, "full");
        let first = handoffs.stock_item(10, ms(1000), Instant::now());
        assert_eq!(handoffs.reserve_stock(), None, "one stocked, one promised");
        handoffs.unreserve_stock();
        assert!(handoffs.reserve_stock().is_some(), "a place given back");
        let second = handoffs.stock_item(11, ms(2000), Instant::now());
        // A fetch takes the oldest item leased for its lock timeout.
        assert_eq!(handoffs.take_stocked(ms(2000)), Some(11));
        assert_eq!(handoffs.take_stocked(ms(2000)), None);
        assert_eq!(handoffs.take_unwanted(second), None, "already taken");
        assert_eq!(handoffs.handed(), 1);
        assert_eq!(handoffs.take_unwanted(first), Some(10), "nobody took it");
        assert!(handoffs.take_all_stocked().is_empty());
        handoffs.unregister(&b);
        assert!(handoffs.reserve_stock().is_some(), "fetches ran a moment ago");
    }

    #[test]
    fn promises_of_a_dropped_operation_are_given_back() {
        let handoffs = Handoffs::<u64>::default();
        let (waiter, _rx) = handoffs.register(ms(1000));
        let (promised, _) = handoffs.reserve(1, None);
        assert_eq!(handoffs.idle(), 0, "promised an item");
        let place = handoffs.reserve_stock();
        assert!(place.is_some());
        assert_eq!(handoffs.reserve_stock(), None, "the only place is promised");
        drop(Promised::new(&handoffs, &promised, 1));
        assert_eq!(handoffs.idle(), 1, "the fetch may look again");
        assert!(handoffs.reserve_stock().is_some(), "the place is free again");
        handoffs.unreserve_stock();
        // Settled by the operation: nothing is given back twice.
        let (promised, _) = handoffs.reserve(1, None);
        Promised::new(&handoffs, &promised, 0).settled();
        assert_eq!(handoffs.idle(), 0);
        handoffs.unregister(&waiter);
    }

    #[test]
    fn the_stock_holds_per_fetch_items_for_each_fetch() {
        let handoffs = Handoffs::<u64>::new(2);
        let (a, _a_rx) = handoffs.register(ms(1000));
        assert_eq!(handoffs.reserve_stock_places(5), 2, "one fetch, two places");
        let (b, _b_rx) = handoffs.register(ms(1000));
        assert_eq!(handoffs.reserve_stock_places(5), 2, "two fetches, four places");
        assert_eq!(handoffs.reserve_stock(), None, "full");
        handoffs.unregister(&a);
        handoffs.unregister(&b);
    }

    #[test]
    fn the_stock_fills_only_while_fetches_run() {
        let handoffs = Handoffs::<u64>::default();
        let (a, _a_rx) = handoffs.register(ms(1000));
        handoffs.unregister(&a);
        handoffs.stock().last_fetch_ended = Some(Instant::now() - FETCHING_GRACE);
        assert_eq!(handoffs.reserve_stock(), None, "the consumer stopped fetching");
        let (_b, _b_rx) = handoffs.register(ms(1000));
        assert!(handoffs.reserve_stock().is_some());
        handoffs.unreserve_stock();
        let _ = handoffs.stock_item(1, ms(1000), Instant::now());
        // An item that waited too long is not handed out (it goes back).
        let late = Instant::now() - stock_ttl(ms(1000));
        let old = handoffs.stock_item(2, ms(1000), late);
        assert_eq!(handoffs.take_stocked(ms(1000)), Some(1));
        assert_eq!(handoffs.take_stocked(ms(1000)), None, "too old");
        assert_eq!(handoffs.take_unwanted(old), Some(2));
        let _ = handoffs.stock_item(3, ms(1000), Instant::now());
        assert_eq!(handoffs.take_all_stocked(), vec![3]);
    }

    #[tokio::test]
    async fn a_look_waits_for_a_promised_item() {
        let handoffs = Handoffs::<u64>::default();
        let (waiter, _receiver) = handoffs.register(ms(1000));
        assert!(waiter.begin_look().await, "nothing promised: look");
        assert!(
            handoffs.reserve(1, None).0.is_empty(),
            "a fetch whose look runs is promised nothing"
        );
        waiter.end_look();
        let (taken, _) = handoffs.reserve(1, None);
        let looking = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.begin_look().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(handoffs.deliver(&taken[0], 7), None);
        assert!(!looking.await.expect("join"), "handed: no look");
        let (other, _rx) = handoffs.register(ms(1000));
        let (taken, _) = handoffs.reserve(1, None);
        assert!(Arc::ptr_eq(&taken[0], &other));
        let looking = tokio::spawn({
            let other = other.clone();
            async move { other.begin_look().await }
        });
        tokio::task::yield_now().await;
        other.unreserve();
        assert!(looking.await.expect("join"), "promise given back: look");
    }

    #[tokio::test]
    async fn a_fetch_whose_poll_ended_still_gets_its_promised_item() {
        let handoffs = Handoffs::<u64>::default();
        let (waiter, mut receiver) = handoffs.register(ms(1000));
        assert!(!waiter.settle().await, "nothing promised");
        let (taken, _) = handoffs.reserve(1, None);
        let settling = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.settle().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(handoffs.deliver(&taken[0], 9), None);
        assert!(settling.await.expect("join"), "kept");
        assert_eq!(receiver.try_recv(), Ok(9));
    }
}
