//! Named canned histories; each doc comment lists its event sequence.

use super::HistoryBuilder;
use crate::history::Event;

/// `Hello("World")` that scheduled `Greet` and got its result, not yet completed:
/// 1 OrchestrationStarted, 2 ActivityScheduled(Greet), 3 ActivityCompleted(2).
pub fn greet_completed() -> Vec<Event> {
    HistoryBuilder::started("Hello", "World")
        .activity_scheduled("Greet", "World")
        .activity_completed(2, "Hello, World!")
        .build()
}

/// Two sequential activities, both done:
/// 1 Started, 2 ActivityScheduled(A), 3 ActivityCompleted(2), 4 ActivityScheduled(B), 5 ActivityCompleted(4).
pub fn two_sequential() -> Vec<Event> {
    HistoryBuilder::started("Seq", "x")
        .activity_scheduled("A", "x")
        .activity_completed(2, "a")
        .activity_scheduled("B", "a")
        .activity_completed(4, "b")
        .build()
}

/// A timer that fired, followed by an activity that is still running:
/// 1 Started, 2 TimerCreated, 3 TimerFired(2), 4 ActivityScheduled(After).
pub fn timer_then_activity() -> Vec<Event> {
    let mut b = HistoryBuilder::started("Delay", "");
    let fire_at = b.now_ms() + 1000;
    b.timer_created(fire_at)
        .timer_fired(2, fire_at)
        .activity_scheduled("After", "")
        .build()
}

/// An external event that arrived before the orchestration waited for it; the wait took it from the
/// buffer at once and the code went on to use it in the same turn:
/// 1 Started, 2 ActivityScheduled(Prepare), 3 ExternalEventReceived(approval), 4 ActivityCompleted(2),
/// 5 ExternalSubscribed(approval), 6 ActivityScheduled(Use, "yes").
pub fn early_external_event() -> Vec<Event> {
    HistoryBuilder::started("Approval", "")
        .activity_scheduled("Prepare", "")
        .external_event("approval", "yes")
        .activity_completed(2, "ready")
        .external_subscribed("approval")
        .activity_scheduled("Use", "yes")
        .build()
}

/// A join of `n` activities `Work(i)`, all completed in reverse order:
/// 1 Started, 2..=n+1 ActivityScheduled(Work), then n ActivityCompleted from the last to the first.
pub fn join_completed_in_reverse(n: usize) -> Vec<Event> {
    let mut b = HistoryBuilder::started("Join", "");
    for i in 0..n {
        b.activity_scheduled("Work", &i.to_string());
    }
    for i in (0..n).rev() {
        b.activity_completed(i as u64 + 2, &i.to_string());
    }
    b.build()
}

/// `n` sequential activities `Step`, all completed (2n + 1 events).
pub fn sequential(n: usize) -> Vec<Event> {
    let mut b = HistoryBuilder::started("Chain", "0");
    for i in 0..n {
        let id = b.next_id();
        b.activity_scheduled("Step", &i.to_string())
            .activity_completed(id, &(i + 1).to_string());
    }
    b.build()
}
