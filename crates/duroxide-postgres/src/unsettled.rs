//! Leases taken by acks whose outcome is unknown, handed back once the ack is repeated.
//!
//! An ack may lease what it makes for this object's idle fetches (see `handoff`): a turn's ack its new
//! work items, an activity's ack the instance its completion goes to. When the connection fails before
//! the reply, the ack may or may not have committed, and whatever it leased was handed to nobody (the
//! waiting fetches went back to waiting). Left alone, such a lease would run out before anyone could
//! take the item: a worker lock timeout (30 s by default) for a work item.
//!
//! So the provider remembers the secret of every leasing ack that failed that way, under the ack's
//! token, and when an ack with the same token runs again and gets an answer (or the runtime gives up
//! and abandons the item with that token), hands back whatever is still leased under those secrets.
//! By then the first attempt has settled: the repeat either waited for its row locks (the instance
//! for a turn, the work item for an activity) or ran first, in which case the first attempt leases
//! nothing when it runs. The secrets are random and were handed to no
//! fetch, so what holds one is always safe to hand back; when nothing does, the hand-back changes
//! nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

/// At most this many acks are remembered; beyond, a failed ack's leases run out as before (only after
/// that many connection failures with no repeat).
const MAX_ACKS: usize = 1024;

/// What a failed ack may hold under its lease secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Held {
    /// Work items of this instance (a turn's ack).
    WorkItems { instance_id: String },
    /// This instance's lock (an activity's ack).
    Turn { instance_id: String },
}

/// The secrets of failed leasing acks, by the token of the ack.
#[derive(Debug, Default)]
pub(crate) struct Unsettled {
    acks: Mutex<HashMap<String, Vec<(Uuid, Held)>>>,
}

impl Unsettled {
    /// Remembers that the ack with `token` may have leased `held` under `secret`.
    pub(crate) fn remember(&self, token: &str, secret: Uuid, held: Held) {
        let mut acks = self.lock();
        if acks.len() >= MAX_ACKS && !acks.contains_key(token) {
            return;
        }
        acks.entry(token.to_owned()).or_default().push((secret, held));
    }

    /// Everything remembered for the ack with `token` (forgotten here: the caller puts it back if the
    /// repeat fails the same way).
    pub(crate) fn take(&self, token: &str) -> Vec<(Uuid, Held)> {
        self.lock().remove(token).unwrap_or_default()
    }

    /// Puts back what [`take`](Self::take) returned.
    pub(crate) fn restore(&self, token: &str, earlier: Vec<(Uuid, Held)>) {
        for (secret, held) in earlier {
            self.remember(token, secret, held);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(Uuid, Held)>>> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_kept_per_ack_until_taken() {
        let unsettled = Unsettled::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let held = Held::WorkItems {
            instance_id: "i".into(),
        };
        unsettled.remember("t1", a, held.clone());
        unsettled.remember("t1", b, held.clone());
        assert!(unsettled.take("t2").is_empty());
        let earlier = unsettled.take("t1");
        assert_eq!(earlier, vec![(a, held.clone()), (b, held.clone())]);
        assert!(unsettled.take("t1").is_empty(), "taken once");
        unsettled.restore("t1", earlier);
        assert_eq!(unsettled.take("t1").len(), 2);
    }

    #[test]
    fn only_so_many_acks_are_remembered() {
        let unsettled = Unsettled::default();
        let held = Held::Turn {
            instance_id: "i".into(),
        };
        for n in 0..MAX_ACKS + 5 {
            unsettled.remember(&format!("t{n}"), Uuid::new_v4(), held.clone());
        }
        assert_eq!(unsettled.lock().len(), MAX_ACKS);
        // An ack already remembered still gets its next secret.
        unsettled.remember("t0", Uuid::new_v4(), held);
        assert_eq!(unsettled.take("t0").len(), 2);
    }
}
