//! In-process notification of instance changes, so a waiting client in the same process learns of a
//! completion or status change at once instead of at its next poll.
//!
//! Changes made by other processes reach the same waiters when the provider reports them
//! (`Provider::watch_instance_changes`): every `Client` registers [`hook`] with its provider.
//!
//! Keyed by instance id only: a runtime on another provider with the same instance id merely causes
//! a spurious wake-up, after which the client re-reads the real state.
//!
//! A turn that ends its instance also leaves the state it committed with the instance's waiters
//! ([`instance_finished`]): a waiting client on the same provider object then returns it without
//! reading it back, which saves a wait its last round trip (on PostgreSQL, about a tenth of a
//! one-activity orchestration's latency). Only waiters that were already waiting take it, and only
//! from the provider object they read from, so it is what their read would have returned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use duroxide_core::provider::{InstanceChangeHook, Provider};
use tokio::sync::Notify;

use crate::client::OrchestrationState;

/// What the waiters of one instance share.
#[derive(Debug, Default)]
struct Watched {
    notify: Notify,
    finished: Mutex<Option<Finished>>,
}

/// A terminal state committed by a turn of this process.
#[derive(Debug)]
struct Finished {
    /// Orders it against watches: a watch takes only states left after it began.
    seq: u64,
    /// The provider object the turn committed through (weak: waiters compare, never keep it).
    provider: Weak<dyn Provider>,
    state: OrchestrationState,
}

fn waiters() -> &'static Mutex<HashMap<String, Arc<Watched>>> {
    static WAITERS: OnceLock<Mutex<HashMap<String, Arc<Watched>>>> = OnceLock::new();
    WAITERS.get_or_init(Default::default)
}

/// The sequence of [`Finished`] states; a watch remembers where it stood when it began.
static FINISHED_SEQ: AtomicU64 = AtomicU64::new(0);

/// The same provider object: the data pointers of two live `Arc`s are equal.
fn same_provider(a: &Arc<dyn Provider>, b: &Arc<dyn Provider>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// A registration to be woken when `instance_id` changes; unregisters itself on drop.
#[derive(Debug)]
pub(crate) struct ChangeWatch {
    instance_id: String,
    watched: Arc<Watched>,
    since: u64,
}

impl ChangeWatch {
    pub fn new(instance_id: &str) -> Self {
        let mut map = waiters().lock().unwrap_or_else(|p| p.into_inner());
        let watched = map.entry(instance_id.to_string()).or_default().clone();
        ChangeWatch {
            instance_id: instance_id.to_string(),
            watched,
            since: FINISHED_SEQ.load(Ordering::SeqCst),
        }
    }

    pub fn notify(&self) -> &Notify {
        &self.watched.notify
    }

    /// The terminal state a turn committed through `provider` since this watch began, if any.
    pub fn finished(&self, provider: &Arc<dyn Provider>) -> Option<OrchestrationState> {
        let finished = self.watched.finished.lock().unwrap_or_else(|p| p.into_inner());
        let finished = finished.as_ref().filter(|f| f.seq > self.since)?;
        // Upgraded first: a live object's address is its own, so equal addresses mean this object.
        let committer = finished.provider.upgrade()?;
        same_provider(&committer, provider).then(|| finished.state.clone())
    }
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        let mut map = waiters().lock().unwrap_or_else(|p| p.into_inner());
        // Two references remain when this is the last watch: the map's and ours.
        if Arc::strong_count(&self.watched) <= 2 {
            map.remove(&self.instance_id);
        }
    }
}

/// Whether some watch of the instance is registered (for tests that must know a waiter began).
#[cfg(test)]
pub(crate) fn is_watched(instance_id: &str) -> bool {
    let map = waiters().lock().unwrap_or_else(|p| p.into_inner());
    map.contains_key(instance_id)
}

/// Wakes every watch of the instance (called after a turn that changed it was committed).
pub(crate) fn instance_changed(instance_id: &str) {
    let map = waiters().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(watched) = map.get(instance_id) {
        watched.notify.notify_waiters();
    }
}

/// Leaves `state`, just committed through `provider` by a turn that ended the instance, with the
/// instance's current waiters, and wakes them. Nothing is kept when nobody waits.
pub(crate) fn instance_finished(provider: &Arc<dyn Provider>, instance_id: &str, state: OrchestrationState) {
    let map = waiters().lock().unwrap_or_else(|p| p.into_inner());
    let Some(watched) = map.get(instance_id) else {
        return;
    };
    *watched.finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(Finished {
        seq: FINISHED_SEQ.fetch_add(1, Ordering::SeqCst) + 1,
        provider: Arc::downgrade(provider),
        state,
    });
    watched.notify.notify_waiters();
}

/// The hook clients register with their provider: routes a reported change to
/// [`instance_changed`]. One shared hook, so a provider that is handed it by many clients can tell
/// it is the same (`Arc::ptr_eq`) and call it once per change.
pub(crate) fn hook() -> InstanceChangeHook {
    static HOOK: OnceLock<InstanceChangeHook> = OnceLock::new();
    HOOK.get_or_init(|| Arc::new(instance_changed)).clone()
}
