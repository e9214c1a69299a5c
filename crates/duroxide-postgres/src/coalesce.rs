//! Fetches that arrive together share one query: while a fetch query of a group is running, the
//! looks that arrive wait for it to end and then go as one query that leases up to that many items.
//!
//! Under load a fetch costs mostly its statement (a round trip, an executor start-up, a
//! transaction), hardly the rows it leases, and the runtime's dispatcher slots free up in bursts (a
//! group-committed ack finishes several turns at once). So each group runs at most one query at a
//! time, and every look that came meanwhile is answered by the next one: the first look of a quiet
//! queue goes at once, alone, and a busy queue is fetched a batch per round trip, the way group
//! commit batches acks.
//!
//! A group is the set of looks that one query can answer: the same queue and request (worker tag
//! filter and session routing, lock timeout) and the same connection. Looks routed after an ack
//! (`wakeups::Next::Look::via`) must run on the ack's connection to see its commit, so they are
//! grouped by it and never run on another one.
//!
//! Queries run in a task of their own, so a look dropped mid-query (its poll ended, its runtime is
//! shutting down) cannot strand the other looks' items; an item leased for a look that is gone is
//! handed back at once (`release`) rather than left locked until its lease runs out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide_core::provider::ProviderError;
use tokio::sync::oneshot;

use crate::mux::Conn;
use crate::wakeups::{Polled, Rest};

/// At most this many looks are answered by one query.
pub(crate) const MAX_BATCH: usize = 32;

/// What one query leased, and what it saw of the rest of the queue.
#[derive(Debug)]
pub(crate) struct Batch<T> {
    /// In claim order.
    pub(crate) items: Vec<T>,
    /// Another item is fetchable now.
    pub(crate) more: bool,
    /// When nothing else is fetchable: when stored work comes due (from now), if ever.
    pub(crate) due: Option<Duration>,
}

/// A query of a group: the connection to run on, how many items to lease at most.
pub(crate) type Fetch<T> = Arc<
    dyn Fn(Option<Arc<Conn>>, usize) -> Pin<Box<dyn Future<Output = Result<Batch<T>, ProviderError>> + Send>>
        + Send
        + Sync,
>;

/// Hands back an item whose look is gone.
pub(crate) type Release<T> = Arc<dyn Fn(T) + Send + Sync>;

type Reply<T> = oneshot::Sender<Result<Polled<T>, ProviderError>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    request: String,
    /// The address of the connection the looks must run on; 0 for any.
    conn: usize,
}

struct Group<T> {
    /// Tells this group from a later one of the same key.
    id: u64,
    waiting: Vec<Reply<T>>,
}

/// The fetch groups of one queue of one provider object.
pub(crate) struct Coalescer<T> {
    groups: Mutex<HashMap<GroupKey, Group<T>>>,
    next_id: AtomicU64,
}

impl<T> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer {
            groups: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }
}

impl<T> Coalescer<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GroupKey, Group<T>>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> std::fmt::Debug for Coalescer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Coalescer<T> {
    /// One look for `request` (on `via` when given): joins the group's next query, starting the
    /// group's task when none runs. `fetch` and `release` serve the whole group while this look's
    /// task runs; looks of one group pass equivalent ones.
    pub(crate) async fn look(
        self: &Arc<Self>,
        request: String,
        via: Option<Arc<Conn>>,
        fetch: Fetch<T>,
        release: Release<T>,
    ) -> Result<Polled<T>, ProviderError> {
        let key = GroupKey {
            request,
            conn: via.as_ref().map_or(0, |conn| Arc::as_ptr(conn) as usize),
        };
        let (reply, answer) = oneshot::channel();
        let started = {
            let mut groups = self.lock();
            match groups.get_mut(&key) {
                Some(group) => {
                    group.waiting.push(reply);
                    None
                }
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let waiting = vec![reply];
                    groups.insert(key.clone(), Group { id, waiting });
                    Some(id)
                }
            }
        };
        if let Some(id) = started {
            tokio::spawn(self.clone().drive(key, id, via, fetch, release));
        }
        answer.await.unwrap_or_else(|_| {
            Err(ProviderError::retryable(
                "fetch",
                "the fetch task ended without an answer",
            ))
        })
    }

    /// Runs the group's queries until no look waits.
    async fn drive(
        self: Arc<Self>,
        key: GroupKey,
        id: u64,
        via: Option<Arc<Conn>>,
        fetch: Fetch<T>,
        release: Release<T>,
    ) {
        // However this task ends (a panic, its runtime shutting down), its group goes, so that the
        // next look starts a new task instead of waiting for this one; looks still waiting then get
        // an error.
        let _ended = GroupEnd {
            coalescer: &self,
            key: &key,
            id,
        };
        loop {
            let replies: Vec<Reply<T>> = {
                let mut groups = self.lock();
                let group = match groups.get_mut(&key) {
                    Some(group) if group.id == id => group,
                    _ => return,
                };
                group.waiting.retain(|reply| !reply.is_closed());
                if group.waiting.is_empty() {
                    groups.remove(&key);
                    return;
                }
                let n = group.waiting.len().min(MAX_BATCH);
                group.waiting.drain(..n).collect()
            };
            let result = fetch(via.clone(), replies.len()).await;
            answer(replies, result, &release);
        }
    }
}

/// Removes a group when its task ends, unless a later group of the same key took its place.
struct GroupEnd<'a, T> {
    coalescer: &'a Coalescer<T>,
    key: &'a GroupKey,
    id: u64,
}

impl<T> Drop for GroupEnd<'_, T> {
    fn drop(&mut self) {
        let mut groups = self.coalescer.lock();
        if groups.get(self.key).is_some_and(|group| group.id == self.id) {
            groups.remove(self.key);
        }
    }
}

/// Gives each look of a query its answer: the first looks an item each (with what the query saw of
/// the rest), the others what the query saw. A look that gets nothing while more is fetchable (the
/// query's window was filled by one instance's messages, or SKIP LOCKED passed rows over) looks
/// again at once.
fn answer<T>(replies: Vec<Reply<T>>, result: Result<Batch<T>, ProviderError>, release: &Release<T>) {
    let batch = match result {
        Ok(batch) => batch,
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
    };
    let rest = if batch.more {
        Rest::More
    } else {
        Rest::Empty { due: batch.due }
    };
    let nothing_due = if batch.more {
        Some(Duration::ZERO)
    } else {
        batch.due
    };
    let mut items = batch.items.into_iter();
    for reply in replies {
        let polled = match items.next() {
            Some(item) => Polled::Found { item, rest },
            None => Polled::Empty { due: nothing_due },
        };
        if let Err(Ok(Polled::Found { item, .. })) = reply.send(Ok(polled)) {
            release(item);
        }
    }
    // A query never leases more than it was asked for; should one, nothing may stay locked.
    for item in items {
        release(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    /// A fetch that leases up to `available` numbered items in total, waiting for `gate` before each
    /// query, and records the sizes it was asked for.
    struct Fake {
        next: AtomicUsize,
        available: usize,
        asked: Mutex<Vec<usize>>,
        gate: Notify,
    }

    fn fetch_of(fake: &Arc<Fake>) -> Fetch<usize> {
        let fake = fake.clone();
        Arc::new(move |_, max| {
            let fake = fake.clone();
            Box::pin(async move {
                fake.gate.notified().await;
                fake.asked.lock().unwrap().push(max);
                let start = fake.next.load(Ordering::SeqCst);
                let end = (start + max).min(fake.available);
                fake.next.store(end, Ordering::SeqCst);
                Ok(Batch {
                    items: (start..end).collect(),
                    more: end < fake.available,
                    due: None,
                })
            })
        })
    }

    fn fake(available: usize) -> Arc<Fake> {
        Arc::new(Fake {
            next: AtomicUsize::new(0),
            available,
            asked: Mutex::new(Vec::new()),
            gate: Notify::new(),
        })
    }

    fn released() -> (Arc<Mutex<Vec<usize>>>, Release<usize>) {
        let list = Arc::new(Mutex::new(Vec::new()));
        let release: Release<usize> = {
            let list = list.clone();
            Arc::new(move |item| list.lock().unwrap().push(item))
        };
        (list, release)
    }

    /// One look of `request` in a task of its own.
    fn spawn_look(
        coalescer: &Arc<Coalescer<usize>>,
        request: &str,
        fetch: Fetch<usize>,
        release: &Release<usize>,
    ) -> tokio::task::JoinHandle<Result<Polled<usize>, ProviderError>> {
        let (coalescer, request, release) = (coalescer.clone(), request.to_owned(), release.clone());
        tokio::spawn(async move { coalescer.look(request, None, fetch, release).await })
    }

    async fn until(condition: impl Fn() -> bool) {
        while !condition() {
            tokio::task::yield_now().await;
        }
    }

    /// The group's query took every waiting look of `request`.
    fn query_under_way(coalescer: &Coalescer<usize>, request: &str) -> bool {
        let key = GroupKey {
            request: request.into(),
            conn: 0,
        };
        coalescer.lock().get(&key).is_some_and(|g| g.waiting.is_empty())
    }

    fn waiting(coalescer: &Coalescer<usize>) -> usize {
        coalescer.lock().values().map(|g| g.waiting.len()).sum()
    }

    #[tokio::test]
    async fn looks_that_arrive_during_a_query_share_the_next_one() {
        let coalescer = Arc::new(Coalescer::default());
        let fake = fake(10);
        let (released, release) = released();
        let first = spawn_look(&coalescer, "k", fetch_of(&fake), &release);
        // The first look's query is under way (it took the look off the waiting list).
        until(|| query_under_way(&coalescer, "k")).await;
        let later: Vec<_> = (0..3)
            .map(|_| spawn_look(&coalescer, "k", fetch_of(&fake), &release))
            .collect();
        until(|| waiting(&coalescer) == 3).await;
        fake.gate.notify_one();
        let first = first.await.unwrap().unwrap();
        assert!(matches!(
            first,
            Polled::Found {
                item: 0,
                rest: Rest::More
            }
        ));
        fake.gate.notify_one();
        let mut items = Vec::new();
        for look in later {
            match look.await.unwrap().unwrap() {
                Polled::Found { item, .. } => items.push(item),
                Polled::Empty { .. } => panic!("every look had an item to take"),
            }
        }
        items.sort_unstable();
        assert_eq!(items, vec![1, 2, 3]);
        assert_eq!(
            *fake.asked.lock().unwrap(),
            vec![1, 3],
            "one query for the three later looks"
        );
        assert!(released.lock().unwrap().is_empty());
        until(|| coalescer.lock().is_empty()).await;
    }

    #[tokio::test]
    async fn looks_beyond_the_items_found_hear_what_the_query_saw() {
        let coalescer = Arc::new(Coalescer::default());
        let fake = fake(1);
        let (_, release) = released();
        let looks: Vec<_> = (0..3)
            .map(|_| spawn_look(&coalescer, "k", fetch_of(&fake), &release))
            .collect();
        until(|| fake.asked.lock().unwrap().is_empty() && coalescer.lock().len() == 1).await;
        // Release queries until every look is answered.
        let mut results = Vec::new();
        for look in looks {
            while !look.is_finished() {
                fake.gate.notify_one();
                tokio::task::yield_now().await;
            }
            results.push(look.await.unwrap().unwrap());
        }
        let found = results
            .iter()
            .filter(|p| matches!(p, Polled::Found { .. }))
            .count();
        assert_eq!(found, 1);
        for polled in &results {
            match polled {
                Polled::Found { rest, .. } => assert_eq!(*rest, Rest::Empty { due: None }),
                Polled::Empty { due } => assert_eq!(*due, None, "nothing more: trust the queue empty"),
            }
        }
    }

    #[tokio::test]
    async fn an_item_leased_for_a_look_that_is_gone_is_released() {
        let coalescer = Arc::new(Coalescer::default());
        let fake = fake(5);
        let (released, release) = released();
        let look = spawn_look(&coalescer, "k", fetch_of(&fake), &release);
        until(|| query_under_way(&coalescer, "k")).await;
        look.abort();
        let _ = look.await;
        fake.gate.notify_one();
        until(|| !released.lock().unwrap().is_empty()).await;
        assert_eq!(*released.lock().unwrap(), vec![0]);
        until(|| coalescer.lock().is_empty()).await;
    }

    #[tokio::test]
    async fn different_requests_do_not_share_a_query() {
        let coalescer = Arc::new(Coalescer::default());
        let fake = fake(10);
        let (_, release) = released();
        let a = spawn_look(&coalescer, "a", fetch_of(&fake), &release);
        let b = spawn_look(&coalescer, "b", fetch_of(&fake), &release);
        until(|| coalescer.lock().len() == 2).await;
        while !(a.is_finished() && b.is_finished()) {
            fake.gate.notify_one();
            tokio::task::yield_now().await;
        }
        assert!(matches!(a.await.unwrap().unwrap(), Polled::Found { .. }));
        assert!(matches!(b.await.unwrap().unwrap(), Polled::Found { .. }));
        assert_eq!(*fake.asked.lock().unwrap(), vec![1, 1]);
    }

    #[tokio::test]
    async fn an_error_reaches_every_look_of_the_query() {
        let coalescer = Arc::new(Coalescer::<usize>::default());
        let failing: Fetch<usize> =
            Arc::new(|_, _| Box::pin(async { Err(ProviderError::retryable("fetch", "connection reset")) }));
        let (_, release) = released();
        let looks: Vec<_> = (0..3)
            .map(|_| spawn_look(&coalescer, "k", failing.clone(), &release))
            .collect();
        for look in looks {
            let err = look.await.unwrap().unwrap_err();
            assert!(err.to_string().contains("connection reset"), "{err}");
        }
    }
}
