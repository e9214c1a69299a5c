//! Test support (feature `testing`): a history builder, named canned histories, and a simulated host
//! that runs any orchestration to completion without a database.

mod builder;
pub mod canned;
mod sim;

pub use builder::HistoryBuilder;
pub use sim::{SimActivity, SimHost, SimInstance, SimResult};

use std::sync::Arc;

use crate::codec;
use crate::engine::{ReplayEngine, TurnOutput};
use crate::history::Event;
use crate::message::OrchestratorMessage;
use crate::registry::OrchestrationHandler;

/// Replays `history` with `handler` in a fresh engine (KV snapshot empty) and returns the output.
pub fn replay(handler: impl OrchestrationHandler, history: &[Event]) -> TurnOutput {
    let version = match history.first().map(|e| &e.kind) {
        Some(crate::history::EventKind::OrchestrationStarted { version, .. }) => version.clone(),
        _ => crate::registry::DEFAULT_VERSION.to_string(),
    };
    let mut engine = ReplayEngine::new("test-instance", 1, Arc::new(handler), version, Vec::new());
    engine.replay(history)
}

/// Replays `history`, then runs one turn over `messages` at `now_ms`.
pub fn replay_then_turn(
    handler: impl OrchestrationHandler,
    history: &[Event],
    messages: Vec<OrchestratorMessage>,
    now_ms: u64,
) -> (TurnOutput, TurnOutput) {
    let mut engine = ReplayEngine::new("test-instance", 1, Arc::new(handler), "1.0.0", Vec::new());
    let replayed = engine.replay(history);
    let turn = engine.run_turn(messages, now_ms, 7).expect("turn runs");
    (replayed, turn)
}

/// Encodes events as stored history records.
pub fn records(history: &[Event]) -> Vec<crate::provider::HistoryRecord> {
    history.iter().map(codec::encode_event).collect()
}
