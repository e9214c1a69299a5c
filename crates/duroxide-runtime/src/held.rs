//! Short durable timers waited out in memory: the instance stays locked until the timer fires, and
//! the turn that set it commits together with the turn that takes it.
//!
//! A turn whose only effect is one timer due within `RuntimeOptions::timer_hold` (100 ms) of the
//! instance's fetch (and a quarter of its lock, [`Decided::time_left`]), of an orchestration that
//! waits for nothing but timers, changes nothing anyone else reads. Storing that timer costs a commit, a fetch
//! when it is due and the lock hand-over; held, the instance costs one commit for both turns (and
//! for whatever runs inline after them). The slot goes on with other items meanwhile; each slot
//! holds at most a few hundred instances (`pending_acks`).
//!
//! - **Crashes.** Nothing of the held turns is stored. The instance replays from its stored history
//!   and sets the timer again from then: a timer fires no earlier than asked, only later.
//! - **Stopping.** A held instance commits at once with its timer stored, which then fires as any
//!   stored timer does.
//! - `RuntimeOptions::timer_hold` zero holds none.

use std::sync::Arc;
use std::time::Duration;

use duroxide_core::codec;
use duroxide_core::provider::OrchestrationItem;
use duroxide_core::turn::{continue_turn, TurnOptions};
use duroxide_core::OrchestratorMessage;

use crate::cache::HistoryPrint;
use crate::dispatch_orchestrations::{entropy, now_ms, settle};
use crate::inline::{self, Decided};
use crate::metrics::Metrics;
use crate::runtime::Shared;

/// The one timer decided turns set, when the instance may be held until it fires.
pub(crate) struct Timer {
    fire_at_ms: u64,
    fired: OrchestratorMessage,
}

/// The timer to hold the instance for, when its decided turns qualify (see the module doc).
pub(crate) fn holdable(shared: &Shared, instance_id: &str, decided: &Decided) -> Option<Timer> {
    let ack = &decided.ack;
    let only_a_timer = ack.messages.len() == 1
        && ack.worker_items.is_empty()
        && !ack.changes_status()
        && ack.output.is_none()
        && ack.kv_changes.is_empty()
        && ack.cancel_activities.is_empty();
    if !only_a_timer || shared.stopping() || !decided.engine.as_ref()?.waits_only_for_timers() {
        return None;
    }
    let message = &ack.messages[0];
    let fire_at_ms = message.visible_at_ms?;
    if message.instance_id != instance_id || message.creates.is_some() {
        return None;
    }
    let fired = codec::decode_message(&message.payload).ok()?;
    if !matches!(fired, OrchestratorMessage::TimerFired { .. }) {
        return None;
    }
    let limit = decided.time_left(shared, shared.options.timer_hold);
    let due_in = Duration::from_millis(fire_at_ms.saturating_sub(now_ms()));
    (due_in <= limit).then_some(Timer { fire_at_ms, fired })
}

/// Holds the instance until `timer` fires, runs the turn that takes it (and what follows inline,
/// holding again for another short timer), then commits every turn as one.
pub(crate) async fn hold(
    shared: Arc<Shared>,
    item: OrchestrationItem,
    mut decided: Decided,
    mut timer: Timer,
    print: Option<HistoryPrint>,
) {
    loop {
        let due_in = Duration::from_millis(timer.fire_at_ms.saturating_sub(now_ms()));
        tokio::select! {
            () = tokio::time::sleep(due_in) => {}
            // Commit now with the timer stored.
            () = shared.stop.cancelled() => break,
        }
        let Some(engine) = decided.engine.take() else {
            break;
        };
        let options = TurnOptions {
            now_ms: now_ms().max(timer.fire_at_ms),
            entropy: entropy(),
            max_attempts: shared.options.max_attempts,
        };
        let continued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            continue_turn(&item.instance_id, engine, vec![timer.fired], &options)
        }));
        let Ok(Some((next, engine, report))) = continued else {
            // The code panicked: commit with the timer stored; the turn that takes it runs the
            // usual way and fails the instance if the code panics again.
            break;
        };
        Metrics::inc(&shared.metrics.timers_held);
        decided.ack.messages.clear();
        decided.ack = std::mem::take(&mut decided.ack).then(next);
        decided.engine = engine;
        decided.reports.push(report);
        decided = inline::run_chain(&shared, &item.instance_id, decided).await;
        match holdable(&shared, &item.instance_id, &decided) {
            Some(next) => timer = next,
            None => break,
        }
    }
    settle(&shared, item, decided, print).await;
}
