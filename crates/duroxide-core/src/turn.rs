//! One orchestration turn from a fetched provider item to the ack that commits it.
//!
//! This is the pure half of an orchestration dispatcher: decode what the provider returned, decide
//! poison and unregistered-name handling, replay (or reuse a cached engine), run the turn, and turn
//! the engine's actions into the explicit routing fields of a [`TurnAck`]. The runtime only fetches,
//! calls [`process_item`], and acks or abandons.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::codec;
use crate::engine::{Action, Discarded, LogRecord, ReplayEngine, TurnOutput, TurnStatus};
use crate::error::{ErrorDetails, ErrorKind};
use crate::history::{Event, EventKind, ParentLink};
use crate::message::OrchestratorMessage;
use crate::provider::{
    ActivityRef, CustomStatusChange, ExecutionStatus, InstanceCreation, KvEntry, NewMessage, NewWorkItem,
    OrchestrationItem, TurnAck,
};
use crate::registry::OrchestrationRegistry;

/// Inputs of a turn that come from outside the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnOptions {
    pub now_ms: u64,
    /// Fresh random bits for `new_guid`.
    pub entropy: u64,
    /// An item fetched more often than this is poison.
    pub max_attempts: u32,
}

/// How the turn ended, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    Running,
    Completed,
    Failed(ErrorKind),
    ContinuedAsNew,
    /// Nothing to run (terminal instance, or no start message): messages were consumed and dropped.
    Dropped,
}

/// What the turn did besides its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnReport {
    pub outcome: TurnOutcome,
    /// Whether this turn started an execution.
    pub started_execution: bool,
    pub logs: Vec<LogRecord>,
    pub discarded: Vec<Discarded>,
    /// Sub-orchestrations started this turn.
    pub sub_orchestrations_started: usize,
}

/// What the dispatcher must do with the item.
#[derive(Debug)]
pub enum TurnDecision {
    /// Commit this ack. `engine` is the live engine to keep in the instance cache (only while running).
    Ack {
        ack: Box<TurnAck>,
        engine: Option<ReplayEngine>,
        report: TurnReport,
    },
    /// Do not consume anything: abandon the item, invisible for `delay` (it will come back with a
    /// higher attempt count, and fail as poison past `max_attempts`).
    Abandon { delay: Duration, reason: String },
}

/// Processes one fetched item. `cached` is this instance's engine from the previous turn, if any;
/// it is used only when it provably matches the stored history (same execution, same length).
pub fn process_item(
    item: &OrchestrationItem,
    registry: &OrchestrationRegistry,
    cached: Option<ReplayEngine>,
    options: &TurnOptions,
) -> TurnDecision {
    let instance_id = &item.instance_id;
    let next_event_id = item.history.last().map_or(0, |r| r.event_id).saturating_add(1);
    let execution_id = item.instance.current_execution_id;

    if item.instance.status.is_terminal() {
        return drop_all(item, "the instance has already ended");
    }
    if item.attempt > options.max_attempts {
        let message = format!(
            "instance {instance_id}: its messages were fetched {} times without being processed (max_attempts {})",
            item.attempt, options.max_attempts
        );
        return fail_without_engine(
            item,
            execution_id,
            next_event_id,
            ErrorDetails::new(ErrorKind::Poison, message),
        );
    }

    let messages = item
        .messages
        .iter()
        .map(|m| codec::decode_message(&m.payload).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>();
    let mut messages = match messages {
        Ok(messages) => messages,
        Err(reason) => {
            let reason = format!("instance {instance_id}: a stored message is unreadable: {reason}");
            return retry_or_fail(
                item,
                options,
                execution_id,
                next_event_id,
                ErrorKind::Poison,
                reason,
            );
        }
    };

    // Instance cache: an engine that has seen exactly the stored history runs the turn without
    // decoding or replaying it, so a turn's cost does not grow with history length.
    if let Some(engine) = cached.filter(|e| {
        e.is_started()
            && *e.status() == TurnStatus::Running
            && e.execution_id() == execution_id
            && e.history_len() == item.history.len() as u64
            && next_event_id == e.history_len() + 1
    }) {
        return run(item, engine, messages, options, None);
    }

    let history = match codec::decode_history(&item.history) {
        Ok(history) => history,
        Err(reason) => {
            let reason = format!("instance {instance_id}: stored history is unreadable: {reason}");
            return retry_or_fail(
                item,
                options,
                execution_id,
                next_event_id,
                ErrorKind::Poison,
                reason,
            );
        }
    };

    // A new execution starts from the first start message; everything else follows it in order.
    let needs_start = history
        .last()
        .is_none_or(|e| matches!(e.kind, EventKind::OrchestrationContinuedAsNew { .. }));
    let (execution_id, name, version) = if needs_start {
        let Some(pos) = messages.iter().position(|m| {
            matches!(m, OrchestratorMessage::StartOrchestration { .. })
                || matches!(m, OrchestratorMessage::ContinueAsNew { execution_id: e, .. } if *e == execution_id)
        }) else {
            if history.is_empty() && item.instance.current_execution_id == 1 && messages.is_empty() {
                return drop_all(item, "nothing to do");
            }
            // The start message is enqueued before anything else can reach the instance, so it
            // should be here; hand the batch back rather than lose what it holds, and fail clearly
            // if it never shows up.
            let reason = format!("instance {instance_id}: no start message for execution {}", execution_id.saturating_add(1));
            return retry_or_fail(item, options, execution_id, next_event_id, ErrorKind::Infrastructure, reason);
        };
        let start = messages.remove(pos);
        let (exec, name, version) = match &start {
            OrchestratorMessage::StartOrchestration { name, version, .. } => (execution_id, name, version),
            OrchestratorMessage::ContinueAsNew {
                execution_id,
                name,
                version,
                ..
            } => (execution_id.saturating_add(1), name, version),
            _ => unreachable!("position() matched a start message"),
        };
        let (name, version) = (name.clone(), version.clone());
        messages.insert(0, start);
        (exec, name, version)
    } else {
        match &history[0].kind {
            EventKind::OrchestrationStarted { name, version, .. } => {
                (execution_id, name.clone(), Some(version.clone()))
            }
            _ => unreachable!("decode_history checks the first event"),
        }
    };

    let Some((resolved_version, handler)) = registry.resolve(&name, version.as_deref()) else {
        let reason = match &version {
            Some(v) => format!("orchestration {name:?} version {v} is not registered on this runtime"),
            None => format!("orchestration {name:?} is not registered on this runtime"),
        };
        return retry_or_fail(
            item,
            options,
            execution_id,
            next_event_id,
            ErrorKind::Configuration,
            reason,
        );
    };

    // The execution after a continue-as-new starts from the KV state the previous one left.
    let kv = if needs_start && execution_id != item.instance.current_execution_id {
        kv_after(&item.kv_snapshot, &history)
    } else {
        item.kv_snapshot.clone()
    };
    let mut engine = ReplayEngine::new(
        instance_id.clone(),
        execution_id,
        handler,
        resolved_version.clone(),
        kv,
    );
    if needs_start {
        return run(item, engine, messages, options, Some((name, resolved_version)));
    }
    let replayed = engine.replay(&history);
    if replayed.status != TurnStatus::Running {
        let discarded = messages
            .iter()
            .map(|m| Discarded {
                message: m.name(),
                reason: "the execution failed during replay".into(),
            })
            .collect();
        return ack_output(&item.instance_id, replayed, None, discarded, false);
    }
    run(item, engine, messages, options, None)
}

/// Runs the turn on a ready engine; `started` names the execution this turn starts.
fn run(
    item: &OrchestrationItem,
    mut engine: ReplayEngine,
    messages: Vec<OrchestratorMessage>,
    options: &TurnOptions,
    started: Option<(String, String)>,
) -> TurnDecision {
    let output = match engine.run_turn(messages, options.now_ms, options.entropy) {
        Ok(output) => output,
        Err(e) => return drop_all(item, &e.to_string()),
    };
    let keep = (output.status == TurnStatus::Running).then_some(engine);
    let mut decision = ack_output(&item.instance_id, output, keep, Vec::new(), started.is_some());
    if let (TurnDecision::Ack { ack, .. }, Some((name, version))) = (&mut decision, started) {
        ack.name = Some(name);
        ack.version = Some(version);
    }
    decision
}

/// A turn on a live engine whose messages never went through the store: the results of activities
/// the runtime ran in process for the turn before, which has not been committed either (see
/// [`TurnAck::only_schedules_activities`]). Its ack is meant to be committed after that turn's, or
/// merged into it ([`TurnAck::then`]). `None` when the engine cannot run a turn.
pub fn continue_turn(
    instance_id: &str,
    mut engine: ReplayEngine,
    messages: Vec<OrchestratorMessage>,
    options: &TurnOptions,
) -> Option<(TurnAck, Option<ReplayEngine>, TurnReport)> {
    if !engine.is_started() || *engine.status() != TurnStatus::Running {
        return None;
    }
    let output = engine.run_turn(messages, options.now_ms, options.entropy).ok()?;
    let keep = (output.status == TurnStatus::Running).then_some(engine);
    match ack_output(instance_id, output, keep, Vec::new(), false) {
        TurnDecision::Ack { ack, engine, report } => Some((*ack, engine, report)),
        TurnDecision::Abandon { .. } => None,
    }
}

/// The KV state at the end of an execution: its start snapshot plus its recorded KV changes.
fn kv_after(snapshot: &[KvEntry], history: &[Event]) -> Vec<KvEntry> {
    let mut kv: BTreeMap<String, KvEntry> = snapshot.iter().map(|e| (e.key.clone(), e.clone())).collect();
    for event in history {
        match &event.kind {
            EventKind::KvSet { key, value } => {
                let entry = KvEntry {
                    key: key.clone(),
                    value: value.clone(),
                    updated_at_ms: event.timestamp_ms,
                };
                kv.insert(key.clone(), entry);
            }
            EventKind::KvCleared { key } => {
                kv.remove(key);
            }
            EventKind::KvClearedAll => kv.clear(),
            EventKind::KvPruned { cutoff_ms } => kv.retain(|_, e| e.updated_at_ms >= *cutoff_ms),
            _ => {}
        }
    }
    kv.into_values().collect()
}

/// The turn of an item fetched without its history because `engine` (this instance's cached engine)
/// holds all `stored_len` events of it. `None` when the turn needs the stored history after all — the
/// engine does not match, the instance ended, the item is poison, a message is unreadable — in which
/// case the caller reads the history and calls [`process_item`].
pub fn process_cached_item(
    item: &OrchestrationItem,
    engine: ReplayEngine,
    stored_len: u64,
    options: &TurnOptions,
) -> Option<TurnDecision> {
    let usable = !item.instance.status.is_terminal()
        && item.attempt <= options.max_attempts
        && engine.is_started()
        && *engine.status() == TurnStatus::Running
        && engine.execution_id() == item.instance.current_execution_id
        && engine.history_len() == stored_len;
    if !usable {
        return None;
    }
    let messages = item
        .messages
        .iter()
        .map(|m| codec::decode_message(&m.payload))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(run(item, engine, messages, options, None))
}

/// Fails the item's execution with `error` without running its code (for example when the code
/// panicked): a terminal event, the parent's notification, every message consumed.
pub fn fail_item(item: &OrchestrationItem, error: ErrorDetails) -> TurnDecision {
    let next_event_id = item.history.last().map_or(0, |r| r.event_id).saturating_add(1);
    fail_without_engine(item, item.instance.current_execution_id, next_event_id, error)
}

/// Unreadable data or an unknown name: back off and retry until `max_attempts`, then fail for good.
fn retry_or_fail(
    item: &OrchestrationItem,
    options: &TurnOptions,
    execution_id: u64,
    next_event_id: u64,
    kind: ErrorKind,
    reason: String,
) -> TurnDecision {
    if item.attempt >= options.max_attempts {
        let message = format!("{reason} (gave up after {} attempts)", item.attempt);
        return fail_without_engine(
            item,
            execution_id,
            next_event_id,
            ErrorDetails::new(kind, message),
        );
    }
    let delay = Duration::from_millis((250u64 << item.attempt.min(7)).min(30_000));
    TurnDecision::Abandon { delay, reason }
}

/// Fails the execution without running code: the terminal event (after a start event when the
/// execution never started) and the parent's notification.
fn fail_without_engine(
    item: &OrchestrationItem,
    execution_id: u64,
    next_event_id: u64,
    error: ErrorDetails,
) -> TurnDecision {
    let now = item.instance.updated_at_ms;
    let mut events = Vec::new();
    let mut parent: Option<ParentLink> = None;
    let mut start_name = None;
    let mut event_id = next_event_id;
    if item.history.is_empty() {
        // Record what was asked for, so the failed instance's history explains itself.
        let start = item
            .messages
            .iter()
            .find_map(|m| match codec::decode_message(&m.payload) {
                Ok(OrchestratorMessage::StartOrchestration {
                    name,
                    version,
                    input,
                    parent,
                }) => Some((name, version, input, parent)),
                _ => None,
            });
        if let Some((name, version, input, p)) = start {
            parent = p.clone();
            start_name = Some(name.clone());
            events.push(Event {
                event_id,
                source_event_id: None,
                timestamp_ms: now,
                kind: EventKind::OrchestrationStarted {
                    name,
                    version: version.unwrap_or_default(),
                    input,
                    parent: p,
                    initial_custom_status: None,
                },
            });
            event_id = event_id.saturating_add(1);
        }
    } else if let Some(Ok(Event {
        kind: EventKind::OrchestrationStarted { parent: p, .. },
        ..
    })) = item.history.first().map(codec::decode_event)
    {
        parent = p;
    }
    events.push(Event {
        event_id,
        source_event_id: None,
        timestamp_ms: now,
        kind: EventKind::OrchestrationFailed { error: error.clone() },
    });
    let mut actions = Vec::new();
    if let Some(parent) = parent {
        actions.push(Action::NotifyParent {
            parent,
            result: Err(error.clone()),
        });
    }
    let output = TurnOutput {
        execution_id,
        new_events: events,
        actions,
        status: TurnStatus::Failed { error },
        custom_status: None,
        kv_changes: Vec::new(),
        logs: Vec::new(),
        discarded: Vec::new(),
    };
    let mut decision = ack_output(&item.instance_id, output, None, Vec::new(), start_name.is_some());
    if let (TurnDecision::Ack { ack, .. }, Some(name)) = (&mut decision, start_name) {
        ack.name = Some(name);
    }
    decision
}

/// Consumes every message without effect.
fn drop_all(item: &OrchestrationItem, reason: &str) -> TurnDecision {
    let discarded = item
        .messages
        .iter()
        .map(|m| Discarded {
            message: codec::decode_message(&m.payload)
                .map(|m| m.name())
                .unwrap_or("undecodable message"),
            reason: reason.to_string(),
        })
        .collect();
    let ack = Box::new(TurnAck {
        execution_id: item.instance.current_execution_id,
        ..TurnAck::default()
    });
    let report = TurnReport {
        outcome: TurnOutcome::Dropped,
        started_execution: false,
        logs: Vec::new(),
        discarded,
        sub_orchestrations_started: 0,
    };
    TurnDecision::Ack {
        ack,
        engine: None,
        report,
    }
}

fn ack_output(
    instance_id: &str,
    output: TurnOutput,
    engine: Option<ReplayEngine>,
    mut discarded: Vec<Discarded>,
    started_execution: bool,
) -> TurnDecision {
    let (ack, sub_orchestrations_started) = build_ack(instance_id, &output);
    let ack = Box::new(ack);
    let outcome = match &output.status {
        TurnStatus::Running => TurnOutcome::Running,
        TurnStatus::Completed { .. } => TurnOutcome::Completed,
        TurnStatus::Failed { error } => TurnOutcome::Failed(error.kind),
        TurnStatus::ContinuedAsNew => TurnOutcome::ContinuedAsNew,
    };
    discarded.extend(output.discarded);
    let report = TurnReport {
        outcome,
        started_execution,
        logs: output.logs,
        discarded,
        sub_orchestrations_started,
    };
    TurnDecision::Ack { ack, engine, report }
}

/// Converts a turn's output into the explicit fields a provider commits; returns the ack and the
/// number of sub-orchestrations it starts.
pub fn build_ack(instance_id: &str, output: &TurnOutput) -> (TurnAck, usize) {
    let execution_id = output.execution_id;
    let mut ack = TurnAck {
        execution_id,
        history: output.new_events.iter().map(codec::encode_event).collect(),
        ..TurnAck::default()
    };
    match &output.status {
        TurnStatus::Running => {}
        TurnStatus::Completed { output } => {
            ack.status = Some(ExecutionStatus::Completed);
            ack.output = Some(output.clone());
        }
        TurnStatus::Failed { error } => {
            ack.status = Some(ExecutionStatus::Failed);
            ack.output = Some(error.to_string());
        }
        TurnStatus::ContinuedAsNew => ack.status = Some(ExecutionStatus::ContinuedAsNew),
    }
    if let Some(status) = &output.custom_status {
        ack.custom_status = CustomStatusChange::Set(status.clone());
    }
    ack.kv_changes = output.kv_changes.clone();
    let message = |target: &str, payload: &OrchestratorMessage| NewMessage {
        instance_id: target.to_string(),
        payload: codec::encode_message(payload),
        visible_at_ms: None,
        creates: None,
    };
    let mut subs = 0;
    for action in &output.actions {
        match action {
            Action::ScheduleActivity(work) => ack.worker_items.push(NewWorkItem {
                activity: ActivityRef {
                    instance_id: instance_id.to_string(),
                    execution_id,
                    event_id: work.event_id,
                },
                payload: codec::encode_activity(work),
                session_id: work.session_id.clone(),
                tag: work.tag.clone(),
            }),
            Action::CancelActivity { event_id } => ack.cancel_activities.push(ActivityRef {
                instance_id: instance_id.to_string(),
                execution_id,
                event_id: *event_id,
            }),
            Action::StartTimer { event_id, fire_at_ms } => {
                let fired = OrchestratorMessage::TimerFired {
                    execution_id,
                    event_id: *event_id,
                    fire_at_ms: *fire_at_ms,
                };
                ack.messages.push(NewMessage {
                    visible_at_ms: Some(*fire_at_ms),
                    ..message(instance_id, &fired)
                });
            }
            Action::StartSubOrchestration {
                event_id,
                instance_id: child,
                name,
                version,
                input,
            } => {
                subs += 1;
                let start = OrchestratorMessage::StartOrchestration {
                    name: name.clone(),
                    version: version.clone(),
                    input: input.clone(),
                    parent: Some(ParentLink {
                        instance_id: instance_id.to_string(),
                        execution_id,
                        event_id: *event_id,
                    }),
                };
                let creates = InstanceCreation {
                    name: name.clone(),
                    version: version.clone(),
                    parent_instance_id: Some(instance_id.to_string()),
                };
                ack.messages.push(NewMessage {
                    creates: Some(creates),
                    ..message(child, &start)
                });
            }
            Action::CancelSubOrchestration {
                instance_id: child,
                reason,
            } => {
                ack.messages.push(message(
                    child,
                    &OrchestratorMessage::CancelRequested {
                        reason: reason.clone(),
                    },
                ));
            }
            Action::StartDetached {
                instance_id: target,
                name,
                version,
                input,
            } => {
                let start = OrchestratorMessage::StartOrchestration {
                    name: name.clone(),
                    version: version.clone(),
                    input: input.clone(),
                    parent: None,
                };
                let creates = InstanceCreation {
                    name: name.clone(),
                    version: version.clone(),
                    parent_instance_id: None,
                };
                ack.messages.push(NewMessage {
                    creates: Some(creates),
                    ..message(target, &start)
                });
            }
            Action::NotifyParent { parent, result } => {
                let payload = match result {
                    Ok(result) => OrchestratorMessage::SubOrchestrationCompleted {
                        execution_id: parent.execution_id,
                        event_id: parent.event_id,
                        result: result.clone(),
                    },
                    Err(error) => OrchestratorMessage::SubOrchestrationFailed {
                        execution_id: parent.execution_id,
                        event_id: parent.event_id,
                        error: error.clone(),
                    },
                };
                ack.messages.push(message(&parent.instance_id, &payload));
            }
            Action::ContinueAsNew(next) => ack.messages.push(message(instance_id, next)),
        }
    }
    (ack, subs)
}
