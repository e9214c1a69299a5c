//! In-process notification of instance changes, so a waiting client in the same process learns of a
//! completion or status change at once instead of at its next poll.
//!
//! Changes made by other processes reach the same waiters when the provider reports them
//! (`Provider::watch_instance_changes`): every `Client` registers [`hook`] with its provider.
//!
//! Keyed by instance id only: a runtime on another provider with the same instance id merely causes
//! a spurious wake-up, after which the client re-reads the real state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use duroxide_core::provider::InstanceChangeHook;
use tokio::sync::Notify;

fn waiters() -> &'static Mutex<HashMap<String, Arc<Notify>>> {
    static WAITERS: OnceLock<Mutex<HashMap<String, Arc<Notify>>>> = OnceLock::new();
    WAITERS.get_or_init(Default::default)
}

/// A registration to be woken when `instance_id` changes; unregisters itself on drop.
#[derive(Debug)]
pub(crate) struct ChangeWatch {
    instance_id: String,
    notify: Arc<Notify>,
}

impl ChangeWatch {
    pub fn new(instance_id: &str) -> Self {
        let mut map = waiters().lock().unwrap_or_else(|p| p.into_inner());
        let notify = map.entry(instance_id.to_string()).or_default().clone();
        ChangeWatch {
            instance_id: instance_id.to_string(),
            notify,
        }
    }

    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        let mut map = waiters().lock().unwrap_or_else(|p| p.into_inner());
        // Two references remain when this is the last watch: the map's and ours.
        if Arc::strong_count(&self.notify) <= 2 {
            map.remove(&self.instance_id);
        }
    }
}

/// Wakes every watch of the instance (called after a turn that changed it was committed).
pub(crate) fn instance_changed(instance_id: &str) {
    let map = waiters().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(notify) = map.get(instance_id) {
        notify.notify_waiters();
    }
}

/// The hook clients register with their provider: routes a reported change to
/// [`instance_changed`]. One shared hook, so a provider that is handed it by many clients can tell
/// it is the same (`Arc::ptr_eq`) and call it once per change.
pub(crate) fn hook() -> InstanceChangeHook {
    static HOOK: OnceLock<InstanceChangeHook> = OnceLock::new();
    HOOK.get_or_init(|| Arc::new(instance_changed)).clone()
}
