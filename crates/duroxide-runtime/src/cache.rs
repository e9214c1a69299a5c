//! The instance cache: live replay engines of recently run instances, least recently used evicted.
//!
//! Bounded by instance count and by the sum of the engines' history lengths (a proxy for the memory
//! their state holds). Anything taken out is owned by one turn; a turn that fails simply does not put
//! its engine back, so a doubtful engine is never reused.
//!
//! An engine is used only for the history it saw. The core checks the length; a fetch that brings
//! the whole history is also checked against the engine's [`HistoryPrint`]. Why: a store may lose its
//! most recent commits in a crash (PostgreSQL's progress commits, see `duroxide-postgres`), and
//! another runtime may then take the instance to the same length along another path before this one
//! fetches it again; an engine that saw the lost turn would replay into the wrong state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use duroxide_core::provider::{HistoryCache, HistoryRecord};
use duroxide_core::ReplayEngine;

/// A fingerprint of a history's records (FNV-1a over ids, kinds and payloads), extended record by
/// record as turns append to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryPrint(u64);

impl HistoryPrint {
    const EMPTY: HistoryPrint = HistoryPrint(0xcbf2_9ce4_8422_2325);

    pub fn of(records: &[HistoryRecord]) -> HistoryPrint {
        HistoryPrint::EMPTY.extend(records)
    }

    /// The print of this history with `records` appended.
    pub fn extend(self, records: &[HistoryRecord]) -> HistoryPrint {
        let mut hash = self.0;
        let mut feed = |bytes: &[u8]| {
            for &byte in bytes {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        for record in records {
            // Lengths first, so that no two different records feed the same bytes.
            feed(&record.event_id.to_le_bytes());
            feed(&(record.kind.len() as u64).to_le_bytes());
            feed(record.kind.as_bytes());
            feed(&(record.payload.len() as u64).to_le_bytes());
            feed(record.payload.as_bytes());
        }
        HistoryPrint(hash)
    }
}

/// An engine and the print of the history it has seen: `None` when a turn ran it on a fetch that
/// left the history out and it had no print before.
#[derive(Debug)]
pub(crate) struct Cached {
    pub engine: ReplayEngine,
    pub print: Option<HistoryPrint>,
}

impl Cached {
    /// Whether the engine may run a turn on a stored history with print `stored` (`None`: the fetch
    /// left the history out, which the provider does only when its length matches the engine's).
    pub fn saw(&self, stored: Option<HistoryPrint>) -> bool {
        match (self.print, stored) {
            (Some(own), Some(stored)) => own == stored,
            _ => true,
        }
    }
}

#[derive(Debug)]
pub(crate) struct InstanceCache {
    inner: Mutex<Inner>,
    max_instances: usize,
    max_events: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, (Cached, u64)>,
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
    pub fn take(&self, instance_id: &str) -> Option<Cached> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (cached, tick) = inner.entries.remove(instance_id)?;
        inner.order.remove(&tick);
        inner.events -= cached.engine.history_len();
        Some(cached)
    }

    /// Stores an engine, evicting the least recently used ones beyond the bounds.
    pub fn put(&self, instance_id: String, cached: Cached) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        if let Some((old, tick)) = inner.entries.remove(&instance_id) {
            inner.order.remove(&tick);
            inner.events -= old.engine.history_len();
        }
        let len = cached.engine.history_len();
        if len > self.max_events {
            return;
        }
        inner.tick += 1;
        inner.events += len;
        inner.order.insert(inner.tick, instance_id.clone());
        inner.entries.insert(instance_id, (cached, inner.tick));
        while inner.entries.len() > self.max_instances || inner.events > self.max_events {
            let Some((_, victim)) = inner.order.pop_first() else {
                break;
            };
            if let Some((cached, _)) = inner.entries.remove(&victim) {
                inner.events -= cached.engine.history_len();
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
        let (cached, _) = inner.entries.get(instance_id)?;
        (cached.engine.execution_id() == execution_id).then(|| cached.engine.history_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event_id: u64, kind: &str, payload: &str) -> HistoryRecord {
        HistoryRecord {
            event_id,
            kind: kind.into(),
            payload: payload.into(),
        }
    }

    #[test]
    fn a_print_tells_histories_of_the_same_length_apart() {
        let start = [record(1, "OrchestrationStarted", "{}")];
        let lost = [
            record(2, "ActivityCompleted", "\"a\""),
            record(3, "ActivityScheduled", "B"),
        ];
        let redone = [
            record(2, "EventRaised", "\"e\""),
            record(3, "ActivityScheduled", "B"),
        ];
        let seen = HistoryPrint::of(&start).extend(&lost);
        assert_eq!(seen, HistoryPrint::of(&[start.as_slice(), &lost].concat()));
        assert_ne!(seen, HistoryPrint::of(&start).extend(&redone));
        // Field boundaries count: moving bytes from the kind to the payload changes the print.
        assert_ne!(
            HistoryPrint::of(&[record(1, "ab", "c")]),
            HistoryPrint::of(&[record(1, "a", "bc")])
        );
    }
}
