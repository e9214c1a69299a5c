//! Whether any other provider object listens on the schema's channel: a provider object that is
//! alone there sends no NOTIFY for its writes, since nobody would hear it.
//!
//! Why: a NOTIFY is a round trip and a transaction of its own (see `listener`), and it comes back to
//! the sender's own listener connection, which reads and drops it. In a single process on
//! PostgreSQL, the common deployment, announcements were about a quarter of all round trips (1.2
//! per orchestration of three chained activities), and skipping them raised that workload's
//! throughput by about a tenth.
//!
//! How objects learn of each other: every listener says hello (`p+`) when it starts listening,
//! and pings (`p`) every [`PING_EVERY`]; an object that hears a hello answers with a ping at once.
//! Any notification from another backend counts as a sign of life, and a peer silent for
//! [`FORGET_AFTER`] is forgotten. An object notifies while it knows a live peer, and for
//! [`WARMUP`] after it starts listening (before the peers' answers can have arrived).
//!
//! What a newcomer can miss: work its peers commit between its first look (a listener that comes
//! up makes every fetch look, see `wakeups`) and the moment they hear its hello. A peer that was
//! alone, and so silent, sends a wake-up of every fetch (`o*`, `w*`) once it hears of a newcomer,
//! which closes that gap; a waiting client there that missed a change finds it at its next
//! safety-net poll. A process of an earlier version never pings: it counts as a peer only while
//! it writes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The payload of a listener that just started listening: peers answer with [`PING`].
pub(crate) const HELLO: &str = "p+";
/// The payload that says "I listen".
pub(crate) const PING: &str = "p";
/// How often a listener pings.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(10);
/// A peer not heard from for this long is gone (three pings missed).
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(30);
/// How long after it starts listening an object notifies whether or not it heard a peer. Peers
/// answer a hello within a few milliseconds (two NOTIFY round trips); an answer that comes later
/// only makes this object wake its peers' fetches once more when it arrives (see the module
/// documentation).
pub(crate) const WARMUP: Duration = Duration::from_millis(200);

/// What this object knows of the other listeners on its channel.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the current listener connection began listening.
    listening_since: Option<Instant>,
    /// Other listeners' backend pids, and when each was last heard.
    peers: HashMap<i32, Instant>,
    /// A newcomer said hello and has not been answered yet.
    answer_owed: bool,
}

impl State {
    fn notifying(&self, now: Instant) -> bool {
        let warming_up = self
            .listening_since
            .is_some_and(|since| now.saturating_duration_since(since) < WARMUP);
        warming_up
            || self
                .peers
                .values()
                .any(|&heard| now.saturating_duration_since(heard) < FORGET_AFTER)
    }
}

/// What hearing a peer means for the listener (see [`Presence::heard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heard {
    /// This object had been silent: its peers' fetches must look once (they may have missed work).
    pub(crate) catch_up: bool,
}

impl Presence {
    /// The listener connection began listening at `now`.
    pub(crate) fn started(&self, now: Instant) {
        self.lock().listening_since = Some(now);
    }

    /// A notification from the backend `pid` (not this object's); `hello` when it was a hello.
    pub(crate) fn heard(&self, pid: i32, hello: bool, now: Instant) -> Heard {
        let mut state = self.lock();
        let catch_up = !state.notifying(now);
        state
            .peers
            .retain(|_, heard| now.saturating_duration_since(*heard) < FORGET_AFTER);
        state.peers.insert(pid, now);
        state.answer_owed |= hello;
        Heard { catch_up }
    }

    /// Whether this object's announcements can reach anybody now.
    pub(crate) fn notifying(&self, now: Instant) -> bool {
        self.lock().notifying(now)
    }

    /// Whether a newcomer's hello is still to be answered; taking it clears it.
    pub(crate) fn take_answer(&self) -> bool {
        std::mem::take(&mut self.lock().answer_owed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_alone_falls_silent_after_the_warmup() {
        let presence = Presence::default();
        let start = Instant::now();
        presence.started(start);
        assert!(presence.notifying(start));
        assert!(presence.notifying(start + WARMUP / 2));
        assert!(!presence.notifying(start + WARMUP));
    }

    #[test]
    fn a_peer_keeps_it_notifying_until_it_is_forgotten() {
        let presence = Presence::default();
        let start = Instant::now();
        presence.started(start);
        let heard_at = start + WARMUP * 2;
        assert_eq!(
            presence.heard(7, false, heard_at),
            Heard { catch_up: true },
            "silent until then: the peer's fetches must look once"
        );
        assert!(presence.notifying(heard_at + FORGET_AFTER / 2));
        assert_eq!(
            presence.heard(7, false, heard_at + FORGET_AFTER / 2),
            Heard { catch_up: false }
        );
        assert!(presence.notifying(heard_at + FORGET_AFTER));
        assert!(!presence.notifying(heard_at + FORGET_AFTER / 2 + FORGET_AFTER));
    }

    #[test]
    fn a_hello_is_answered_once() {
        let presence = Presence::default();
        let start = Instant::now();
        presence.started(start);
        assert!(!presence.take_answer());
        presence.heard(7, true, start);
        presence.heard(8, false, start);
        assert!(presence.take_answer());
        assert!(!presence.take_answer());
    }

    #[test]
    fn forgotten_peers_are_dropped() {
        let presence = Presence::default();
        let start = Instant::now();
        presence.started(start);
        presence.heard(7, false, start);
        presence.heard(8, false, start + FORGET_AFTER);
        assert_eq!(presence.lock().peers.len(), 1, "7 went silent");
    }
}
