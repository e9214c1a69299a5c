//! Instances this provider object holds locked for a turn, from the moment a statement locked them
//! until the turn's ack (or abandon, or hand-back) has returned: an activity result stored for one of
//! them wakes no fetch, which would only find the instance locked; the lock's end wakes them instead.
//!
//! In a fan-out most results arrive while their instance is locked: a turn runs, its ack is in
//! flight, or the stock holds it. Each result used to wake a fetch query that scanned the queue's
//! visible messages, found them all behind the lock and came back empty.
//!
//! Why no wake-up is lost: a result is deferred only after its ack returned, so it is committed, and
//! only while the instance is held here; the lock's end takes the deferral and announces after its
//! own statement returned, so after the lock was released. One mutex orders the two: either the
//! lock's end comes later and announces, or it came first and the result announces itself. A lock
//! that just lapses (its turn was dropped without an ack) is announced when its lease runs out
//! ([`HeldTurns::defer`] returns that time to watch).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Entries beyond this many are swept of expired leases when a new one is added.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug)]
struct Held {
    token: String,
    /// When the lease runs out (by this process's clock, no earlier than the database's).
    until: Instant,
    /// A result was stored for the instance while held, and nobody was woken for it.
    deferred: bool,
}

/// What became of a result for an instance (see [`HeldTurns::defer`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Deferral {
    /// Not held: the caller announces the result.
    NotHeld,
    /// The lock's end announces it.
    Deferred,
    /// The lock's end announces it, and this is the lock's first deferral: the caller ends the lock
    /// with [`HeldTurns::end`] at `until` and announces then, should it not have ended by then.
    Watch { token: String, until: Instant },
}

/// The instances held, by instance id.
#[derive(Debug, Default)]
pub(crate) struct HeldTurns {
    held: Mutex<HashMap<String, Held>>,
    deferred: AtomicU64,
}

impl HeldTurns {
    /// The instance is locked under `token` until `until`. A deferral for an earlier lock of it
    /// carries over (it may not have been announced).
    pub(crate) fn hold(&self, instance_id: &str, token: &str, until: Instant) {
        let mut held = self.lock();
        if held.len() > SWEEP_ABOVE {
            let now = Instant::now();
            held.retain(|_, h| h.until > now || h.deferred);
        }
        let deferred = held.get(instance_id).is_some_and(|h| h.deferred);
        held.insert(
            instance_id.to_owned(),
            Held {
                token: token.to_owned(),
                until,
                deferred,
            },
        );
    }

    /// Whether the instance is held under a lease that has not run out.
    pub(crate) fn holds(&self, instance_id: &str) -> bool {
        let now = Instant::now();
        self.lock().get(instance_id).is_some_and(|h| h.until > now)
    }

    /// A result for the instance was committed: when it is held under a live lease, the lock's end
    /// will announce it.
    pub(crate) fn defer(&self, instance_id: &str) -> Deferral {
        let now = Instant::now();
        let mut held = self.lock();
        match held.get_mut(instance_id) {
            Some(h) if h.until > now && h.deferred => {
                self.deferred.fetch_add(1, Ordering::Relaxed);
                Deferral::Deferred
            }
            Some(h) if h.until > now => {
                h.deferred = true;
                self.deferred.fetch_add(1, Ordering::Relaxed);
                Deferral::Watch {
                    token: h.token.clone(),
                    until: h.until,
                }
            }
            _ => Deferral::NotHeld,
        }
    }

    /// The lock under `token` ended with messages waiting for the instance, and a fetch was woken
    /// for them: results still defer until `until`, for the fetch is likely to lock the instance
    /// again (which carries them over). The caller ends the lock at `until` and announces then,
    /// should no other lock have replaced it.
    pub(crate) fn linger(&self, instance_id: &str, token: &str, until: Instant) {
        if let Some(h) = self.lock().get_mut(instance_id) {
            if h.token == token {
                h.until = until;
            }
        }
    }

    /// The lock under `token` ended (or lapsed): whether results were deferred to it, which the
    /// caller must now announce.
    pub(crate) fn end(&self, instance_id: &str, token: &str) -> bool {
        let mut held = self.lock();
        match held.get(instance_id) {
            Some(h) if h.token == token => held.remove(instance_id).is_some_and(|h| h.deferred),
            _ => false,
        }
    }

    /// Results deferred so far.
    pub(crate) fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[test]
    fn a_result_for_a_held_instance_waits_for_the_locks_end() {
        let held = HeldTurns::default();
        assert_eq!(held.defer("i"), Deferral::NotHeld, "announce at once");
        let until = later();
        held.hold("i", "t1", until);
        assert!(held.holds("i"));
        let token = "t1".to_owned();
        assert_eq!(held.defer("i"), Deferral::Watch { token, until });
        assert_eq!(held.defer("i"), Deferral::Deferred, "one watch per lock");
        assert!(!held.end("i", "other token"), "another lock's end");
        assert!(held.end("i", "t1"), "the end announces");
        assert_eq!(held.deferred(), 2);
        assert!(!held.holds("i"));
        assert_eq!(held.defer("i"), Deferral::NotHeld);
    }

    #[test]
    fn results_defer_while_an_ended_lock_lingers() {
        let held = HeldTurns::default();
        held.hold("i", "t1", later());
        held.linger("i", "t1", later());
        assert!(matches!(held.defer("i"), Deferral::Watch { .. }));
        // The woken fetch locks the instance again: the deferral goes with the new lock.
        held.hold("i", "t2", later());
        assert!(
            !held.end("i", "t1"),
            "the lingering lock's watch finds it replaced"
        );
        assert!(held.end("i", "t2"));
        held.hold("i", "t3", later());
        held.linger("i", "t3", Instant::now());
        assert_eq!(held.defer("i"), Deferral::NotHeld, "lingered long enough");
    }

    #[test]
    fn a_lock_without_results_ends_quietly() {
        let held = HeldTurns::default();
        held.hold("i", "t1", later());
        assert!(!held.end("i", "t1"));
        assert!(!held.end("i", "t1"), "ended once");
    }

    #[test]
    fn a_lapsed_lease_defers_nothing() {
        let held = HeldTurns::default();
        held.hold("i", "t1", Instant::now());
        assert!(!held.holds("i"));
        assert_eq!(held.defer("i"), Deferral::NotHeld);
    }

    #[test]
    fn a_deferral_carries_over_to_the_next_lock() {
        let held = HeldTurns::default();
        held.hold("i", "t1", later());
        assert_ne!(held.defer("i"), Deferral::NotHeld);
        held.hold("i", "t2", later());
        assert!(!held.end("i", "t1"), "superseded");
        assert!(held.end("i", "t2"));
    }

    #[test]
    fn expired_quiet_entries_are_swept() {
        let held = HeldTurns::default();
        for i in 0..=SWEEP_ABOVE {
            held.hold(&i.to_string(), "t", Instant::now());
        }
        held.hold("last", "t", later());
        assert_eq!(held.lock().len(), 1);
    }
}
