//! The instance cache: live replay engines of recently run instances, least recently used evicted.
//!
//! Bounded by instance count and by the sum of the engines' history lengths (a proxy for the memory
//! their state holds). Anything taken out is owned by one turn; a turn that fails simply does not put
//! its engine back, so a doubtful engine is never reused.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use duroxide_core::provider::HistoryCache;
use duroxide_core::ReplayEngine;

#[derive(Debug)]
pub(crate) struct InstanceCache {
    inner: Mutex<Inner>,
    max_instances: usize,
    max_events: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, (ReplayEngine, u64)>,
    /// Use tick → instance id, oldest first.
    order: BTreeMap<u64, String>,
    tick: u64,
    events: u64,
}

impl InstanceCache {
    pub fn new(max_instances: usize, max_events: u64) -> Self {
        InstanceCache {
            inner: Mutex::new(Inner::default()),
            max_instances,
            max_events,
        }
    }

    /// Removes and returns the instance's engine, if cached.
    pub fn take(&self, instance_id: &str) -> Option<ReplayEngine> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (engine, tick) = inner.entries.remove(instance_id)?;
        inner.order.remove(&tick);
        inner.events -= engine.history_len();
        Some(engine)
    }

    /// Stores an engine, evicting the least recently used ones beyond the bounds.
    pub fn put(&self, instance_id: String, engine: ReplayEngine) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        if let Some((old, tick)) = inner.entries.remove(&instance_id) {
            inner.order.remove(&tick);
            inner.events -= old.history_len();
        }
        if engine.history_len() > self.max_events {
            return;
        }
        inner.tick += 1;
        inner.events += engine.history_len();
        inner.order.insert(inner.tick, instance_id.clone());
        inner.entries.insert(instance_id, (engine, inner.tick));
        while inner.entries.len() > self.max_instances || inner.events > self.max_events {
            let Some((_, victim)) = inner.order.pop_first() else {
                break;
            };
            if let Some((engine, _)) = inner.entries.remove(&victim) {
                inner.events -= engine.history_len();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).entries.len()
    }
}

/// Lets a provider's fetch leave out the history of an instance whose engine is cached here.
impl HistoryCache for InstanceCache {
    fn cached_history_len(&self, instance_id: &str, execution_id: u64) -> Option<u64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (engine, _) = inner.entries.get(instance_id)?;
        (engine.execution_id() == execution_id).then(|| engine.history_len())
    }
}
