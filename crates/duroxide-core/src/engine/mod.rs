//! The sans-IO replay engine: `history + new messages + now → new events + actions + status`.

mod state;
mod wake;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::context::OrchestrationContext;
use crate::error::{ErrorDetails, ErrorKind, NondeterminismError};
use crate::history::{CarriedMessage, Event, EventKind, ParentLink};
use crate::message::{ActivityWork, OrchestratorMessage};
use crate::provider::{KvChange, KvEntry};
use crate::registry::OrchestrationHandler;

pub(crate) use state::{describe, is_command, ExecState, SlotKind};

/// The future an orchestration function returns: its output, or an application error message.
pub type OrchestrationFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Something the host must do because of this turn. Carried out by the runtime (through the
/// provider ack) or by the simulated host in tests.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Enqueue a worker item that runs this activity.
    ScheduleActivity(ActivityWork),
    /// Remove (or signal cancellation of) the activity scheduled at this event.
    CancelActivity { event_id: u64 },
    /// Deliver `TimerFired` for this event at `fire_at_ms`.
    StartTimer { event_id: u64, fire_at_ms: u64 },
    /// Create the child instance (if absent) and start it with a link back to this execution.
    StartSubOrchestration {
        event_id: u64,
        instance_id: String,
        name: String,
        version: Option<String>,
        input: String,
    },
    /// Ask a child instance to cancel itself.
    CancelSubOrchestration { instance_id: String, reason: String },
    /// Create and start an independent instance (fire-and-forget).
    StartDetached {
        instance_id: String,
        name: String,
        version: Option<String>,
        input: String,
    },
    /// Report this execution's result to the parent that waits for it.
    NotifyParent {
        parent: ParentLink,
        result: Result<String, ErrorDetails>,
    },
    /// Start the next execution of this instance with this message.
    ContinueAsNew(OrchestratorMessage),
}

/// Where the execution stands after a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnStatus {
    /// Waiting for more messages.
    Running,
    Completed {
        output: String,
    },
    Failed {
        error: ErrorDetails,
    },
    /// Ended by continue-as-new; the `Action::ContinueAsNew` message starts the next execution.
    ContinuedAsNew,
}

/// Severity of an orchestration trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// A trace line the orchestration emitted outside replay; the host writes it to its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub level: LogLevel,
    pub instance_id: String,
    pub execution_id: u64,
    pub message: String,
}

/// A message the turn consumed without effect, and why (stale execution, duplicate, unknown target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    pub message: &'static str,
    pub reason: String,
}

/// Everything one turn produced. Apply all of it atomically (see `turn::build_ack`).
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnOutput {
    pub execution_id: u64,
    pub new_events: Vec<Event>,
    pub actions: Vec<Action>,
    pub status: TurnStatus,
    /// Set when the custom status changed this turn (to the new value, `None` = reset).
    pub custom_status: Option<Option<String>>,
    pub kv_changes: Vec<KvChange>,
    pub logs: Vec<LogRecord>,
    pub discarded: Vec<Discarded>,
}

/// Why the engine refused to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The first message of a new execution was not a start.
    #[error("execution cannot start from a {0} message")]
    NotAStart(&'static str),
}

/// Replays one execution of an orchestration and runs its turns.
///
/// # Calling protocol
///
/// 1. Create the engine with [`ReplayEngine::new`] for one instance, execution and orchestration
///    handler, passing the KV snapshot as it was when the execution started.
/// 2. Feed the recorded history once with [`ReplayEngine::replay`]. The code runs against it with
///    `is_replaying() == true`: every command it makes must match the recorded commands in order; a
///    mismatch ends the execution as failed with a [`NondeterminismError`]. Replay produces no actions.
///    (A brand-new execution has an empty history: skip to step 3 with its start message.)
/// 3. Call [`ReplayEngine::run_turn`] with the turn's decoded messages, the current time and fresh
///    entropy. Messages become history events, completions resolve the code's futures, the code runs,
///    and the returned [`TurnOutput`] holds the new events, the actions to carry out, the status and
///    the state changes. The host commits all of it atomically.
/// 4. While the status stays `Running`, the engine may be kept (the instance cache) and step 3 repeated
///    for the next turn, provided the stored history still ends where this engine's does
///    ([`ReplayEngine::history_len`]). On any doubt, drop it and start again at step 1: a full replay is
///    always correct.
///
/// Neither step reads a clock, performs I/O or draws randomness: `now_ms` and `entropy` are inputs.
pub struct ReplayEngine {
    state: Arc<Mutex<ExecState>>,
    handler: Arc<dyn OrchestrationHandler>,
    root: Option<OrchestrationFuture>,
    waker: Arc<wake::RootWake>,
    status: TurnStatus,
    history_len: u64,
    started: bool,
    /// The version of the orchestration `handler` implements.
    version: String,
}

/// How the code ended in a poll.
enum Ending {
    Finished(Result<String, ErrorDetails>),
    ContinuedAsNew(String, Option<String>),
}

impl std::fmt::Debug for ReplayEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayEngine")
            .field("history_len", &self.history_len)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl ReplayEngine {
    /// Creates an engine for one execution of the orchestration `handler` implements (at `version`).
    /// `kv_snapshot` is the KV state as it was when the execution started.
    pub fn new(
        instance_id: impl Into<String>,
        execution_id: u64,
        handler: Arc<dyn OrchestrationHandler>,
        version: impl Into<String>,
        kv_snapshot: Vec<KvEntry>,
    ) -> Self {
        let mut st = ExecState::new(instance_id.into(), execution_id);
        st.kv = kv_snapshot.into_iter().map(|e| (e.key.clone(), e)).collect();
        ReplayEngine {
            state: Arc::new(Mutex::new(st)),
            handler,
            root: None,
            waker: Arc::new(wake::RootWake::default()),
            status: TurnStatus::Running,
            history_len: 0,
            started: false,
            version: version.into(),
        }
    }

    /// Number of history events this engine has seen (replayed plus produced).
    pub fn history_len(&self) -> u64 {
        self.history_len
    }

    pub fn execution_id(&self) -> u64 {
        self.lock().execution_id
    }

    /// The execution's status after the last call.
    pub fn status(&self) -> &TurnStatus {
        &self.status
    }

    /// Whether the execution has started (its `OrchestrationStarted` is known).
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Whether everything the code still waits for is an activity (no timer, event, queue message
    /// or sub-orchestration). Then nothing but those activities' results can change what it does
    /// next, so a runtime may run them and the next turn before looking at the queue again.
    pub fn waits_only_for_activities(&self) -> bool {
        self.lock()
            .slots
            .values()
            .filter(|slot| slot.result.is_none() && !slot.abandoned)
            .all(|slot| slot.kind == state::SlotKind::Activity)
    }

    fn lock(&self) -> MutexGuard<'_, ExecState> {
        lock(&self.state)
    }

    /// Replays recorded history (step 2 of the protocol). Returns the output of the replay, which has
    /// no actions; its status is `Failed` when the code does not match the history.
    pub fn replay(&mut self, history: &[Event]) -> TurnOutput {
        {
            let mut st = self.lock();
            st.replaying = true;
            st.recorded = history.iter().filter(|e| is_command(&e.kind)).cloned().collect();
            st.next_event_id = history.len() as u64 + 1;
        }
        for (i, event) in history.iter().enumerate() {
            if self.status != TurnStatus::Running {
                break;
            }
            self.history_len = event.event_id;
            if event.kind.is_terminal() {
                // The recorded run ended here, but this code has not.
                self.halt(NondeterminismError::NotFinished {
                    event_id: event.event_id,
                    recorded: event.kind.name().to_string(),
                });
                break;
            }
            if is_command(&event.kind) {
                let st = self.lock();
                if st.nondeterminism.is_none() && st.matched_upto < event.event_id {
                    drop(st);
                    self.halt(NondeterminismError::MissingCommand {
                        event_id: event.event_id,
                        expected: describe(&event.kind),
                    });
                }
                continue;
            }
            self.lock().now_ms = event.timestamp_ms;
            self.apply_event(event.clone());
            if let Some(ending) = self.poll_and_settle() {
                self.settle_replayed_ending(ending, &history[i + 1..]);
            }
        }
        self.lock().replaying = false;
        // Replayed commands produced no actions (`ExecState::act` suppresses them); only a failure
        // found during replay leaves any (its terminal event and the cancellations it implies).
        self.take_output()
    }

    /// Runs one turn over new messages (step 3 of the protocol).
    pub fn run_turn(
        &mut self,
        messages: Vec<OrchestratorMessage>,
        now_ms: u64,
        entropy: u64,
    ) -> Result<TurnOutput, EngineError> {
        {
            let mut st = self.lock();
            st.now_ms = now_ms;
            st.rng_state = entropy;
            st.replaying = false;
        }
        let mut discarded = Vec::new();
        let mut messages: std::collections::VecDeque<OrchestratorMessage> = messages.into();
        if !self.started {
            match messages.pop_front() {
                None => return Ok(self.take_output()),
                Some(first @ OrchestratorMessage::StartOrchestration { .. })
                | Some(first @ OrchestratorMessage::ContinueAsNew { .. }) => {
                    // Carried messages were sent before anything still queued: deliver them first.
                    for carried in self.start_from(first).into_iter().rev() {
                        messages.push_front(carried);
                    }
                }
                Some(other) => return Err(EngineError::NotAStart(other.name())),
            }
        }
        for message in messages {
            if self.status != TurnStatus::Running {
                self.leftover(message, &mut discarded);
                continue;
            }
            if let Some(event) = self.message_to_event(message, &mut discarded) {
                self.apply_new_event(event);
            }
        }
        let mut out = self.take_output();
        out.discarded = discarded;
        Ok(out)
    }

    /// Starts the execution from its start message by recording `OrchestrationStarted`; returns the
    /// messages a continue-as-new carried over, to be delivered next.
    fn start_from(&mut self, message: OrchestratorMessage) -> Vec<OrchestratorMessage> {
        let (name, version, input, parent, custom_status, carried) = match message {
            OrchestratorMessage::StartOrchestration {
                name,
                version,
                input,
                parent,
            } => (name, version, input, parent, None, Vec::new()),
            OrchestratorMessage::ContinueAsNew {
                name,
                version,
                input,
                parent,
                custom_status,
                carried,
                ..
            } => (name, version, input, parent, custom_status, carried),
            _ => unreachable!("start_from is only called with start messages"),
        };
        // The host resolved which version runs; a start naming no version records that one.
        let version = version.unwrap_or_else(|| self.version.clone());
        let kind = EventKind::OrchestrationStarted {
            name,
            version,
            input,
            parent,
            initial_custom_status: custom_status,
        };
        let event = self.lock().push_event(None, kind);
        self.apply_new_event(event);
        carried
            .into_iter()
            .map(|c| match c {
                CarriedMessage::Event { name, data } => OrchestratorMessage::ExternalEvent { name, data },
                CarriedMessage::Queue { queue, data } => OrchestratorMessage::QueueMessage { queue, data },
                CarriedMessage::Cancel { reason } => OrchestratorMessage::CancelRequested { reason },
            })
            .collect()
    }

    /// Turns a message into the history event it causes, or explains why it has no effect.
    fn message_to_event(
        &mut self,
        message: OrchestratorMessage,
        discarded: &mut Vec<Discarded>,
    ) -> Option<Event> {
        use OrchestratorMessage as M;
        let name = message.name();
        let current = self.lock().execution_id;
        let (source, kind, expected) = match message {
            M::StartOrchestration { .. } | M::ContinueAsNew { .. } => {
                discarded.push(Discarded {
                    message: name,
                    reason: "the execution has already started".into(),
                });
                return None;
            }
            M::ExternalEvent { name, data } => (None, EventKind::ExternalEventReceived { name, data }, None),
            M::QueueMessage { queue, data } => (None, EventKind::QueueMessageReceived { queue, data }, None),
            M::CancelRequested { reason } => (None, EventKind::CancelRequested { reason }, None),
            M::ActivityCompleted {
                execution_id,
                event_id,
                result,
            } => (
                Some((execution_id, event_id)),
                EventKind::ActivityCompleted { result },
                Some(SlotKind::Activity),
            ),
            M::ActivityFailed {
                execution_id,
                event_id,
                error,
            } => (
                Some((execution_id, event_id)),
                EventKind::ActivityFailed { error },
                Some(SlotKind::Activity),
            ),
            M::TimerFired {
                execution_id,
                event_id,
                fire_at_ms,
            } => (
                Some((execution_id, event_id)),
                EventKind::TimerFired { fire_at_ms },
                Some(SlotKind::Timer),
            ),
            M::SubOrchestrationCompleted {
                execution_id,
                event_id,
                result,
            } => (
                Some((execution_id, event_id)),
                EventKind::SubOrchestrationCompleted { result },
                Some(SlotKind::SubOrchestration),
            ),
            M::SubOrchestrationFailed {
                execution_id,
                event_id,
                error,
            } => (
                Some((execution_id, event_id)),
                EventKind::SubOrchestrationFailed { error },
                Some(SlotKind::SubOrchestration),
            ),
        };
        let mut st = self.lock();
        let source_event_id = match (source, expected) {
            (Some((execution_id, event_id)), Some(kind)) => {
                if execution_id != current {
                    discarded.push(Discarded {
                        message: name,
                        reason: format!("for execution {execution_id}, the current one is {current}"),
                    });
                    return None;
                }
                match st.slots.get(&event_id) {
                    None => {
                        discarded.push(Discarded {
                            message: name,
                            reason: format!("event {event_id} is unknown"),
                        });
                        return None;
                    }
                    Some(slot) if slot.kind != kind => {
                        discarded.push(Discarded {
                            message: name,
                            reason: format!("event {event_id} is a {:?}", slot.kind),
                        });
                        return None;
                    }
                    Some(slot) if slot.result.is_some() => {
                        discarded.push(Discarded {
                            message: name,
                            reason: format!("event {event_id} already completed"),
                        });
                        return None;
                    }
                    Some(slot) if slot.abandoned => {
                        discarded.push(Discarded {
                            message: name,
                            reason: format!("event {event_id} was cancelled; its late result is discarded"),
                        });
                        return None;
                    }
                    Some(_) => Some(event_id),
                }
            }
            _ => None,
        };
        Some(st.push_event(source_event_id, kind))
    }

    /// A message that arrived after the execution ended in this turn: carried to the next execution
    /// when it continues as new, otherwise discarded.
    fn leftover(&mut self, message: OrchestratorMessage, discarded: &mut Vec<Discarded>) {
        let carried = match &message {
            OrchestratorMessage::ExternalEvent { name, data } => Some(CarriedMessage::Event {
                name: name.clone(),
                data: data.clone(),
            }),
            OrchestratorMessage::QueueMessage { queue, data } => Some(CarriedMessage::Queue {
                queue: queue.clone(),
                data: data.clone(),
            }),
            OrchestratorMessage::CancelRequested { reason } => Some(CarriedMessage::Cancel {
                reason: reason.clone(),
            }),
            _ => None,
        };
        if self.status == TurnStatus::ContinuedAsNew {
            if let Some(carried) = carried {
                let mut st = self.lock();
                for action in st.actions.iter_mut() {
                    if let Action::ContinueAsNew(OrchestratorMessage::ContinueAsNew {
                        carried: list, ..
                    }) = action
                    {
                        list.push(carried);
                        return;
                    }
                }
            }
        }
        discarded.push(Discarded {
            message: message.name(),
            reason: "the execution has ended".into(),
        });
    }

    /// Applies one engine-made event produced in this turn, then lets the code run.
    fn apply_new_event(&mut self, event: Event) {
        self.history_len = event.event_id;
        self.apply_event(event);
        let replayed_ending = self.poll_and_settle();
        debug_assert!(replayed_ending.is_none(), "new events are never replayed");
    }

    /// Delivers one non-command event to the execution state.
    fn apply_event(&mut self, event: Event) {
        let mut wakers: Vec<Waker> = Vec::new();
        {
            let mut st = self.lock();
            match event.kind {
                EventKind::OrchestrationStarted {
                    name,
                    version,
                    input,
                    parent,
                    initial_custom_status,
                } => {
                    st.name = name;
                    st.version = version;
                    st.parent = parent;
                    st.custom_status = initial_custom_status;
                    drop(st);
                    self.started = true;
                    let ctx = OrchestrationContext::new(self.state.clone());
                    self.root = Some(self.handler.invoke(ctx, input));
                    self.waker.wake_flag();
                    return;
                }
                EventKind::ActivityCompleted { result } | EventKind::SubOrchestrationCompleted { result } => {
                    wakers.extend(complete(&mut st, event.source_event_id, Ok(result)));
                }
                EventKind::ActivityFailed { error } | EventKind::SubOrchestrationFailed { error } => {
                    wakers.extend(complete(&mut st, event.source_event_id, Err(error)));
                }
                EventKind::TimerFired { .. } => {
                    wakers.extend(complete(&mut st, event.source_event_id, Ok(String::new())));
                }
                EventKind::ExternalEventReceived { name, data } => {
                    wakers.extend(st.arrive_event(&name, data))
                }
                EventKind::QueueMessageReceived { queue, data } => {
                    wakers.extend(st.arrive_queue(&queue, data))
                }
                EventKind::CancelRequested { reason } => {
                    drop(st);
                    self.finish(Err(ErrorDetails::cancelled(&reason)));
                    return;
                }
                _ => {}
            }
        }
        for waker in wakers {
            waker.wake();
        }
    }

    /// Polls the code if something woke it, then checks whether the execution ended. An ending
    /// while replaying is returned for the caller to compare with history instead of being acted on.
    #[must_use]
    fn poll_and_settle(&mut self) -> Option<Ending> {
        if self.status != TurnStatus::Running {
            return None;
        }
        let mut result = None;
        if let Some(root) = self.root.as_mut() {
            if self.waker.take_flag() {
                let waker = Waker::from(self.waker.clone());
                let mut cx = Context::from_waker(&waker);
                if let Poll::Ready(r) = root.as_mut().poll(&mut cx) {
                    result = Some(r);
                }
            }
        }
        let (nondeterminism, fatal, can, replaying) = {
            let mut st = self.lock();
            (
                st.nondeterminism.take(),
                st.fatal.take(),
                st.continue_as_new.take(),
                st.replaying,
            )
        };
        if let Some(error) = nondeterminism {
            self.halt(error);
            return None;
        }
        let ending = match (fatal, can, result) {
            (Some(error), _, _) => Ending::Finished(Err(error)),
            (None, Some((input, version)), _) => Ending::ContinuedAsNew(input, version),
            (None, None, Some(result)) => Ending::Finished(result.map_err(ErrorDetails::application)),
            (None, None, None) => return None,
        };
        if replaying {
            return Some(ending);
        }
        match ending {
            Ending::Finished(result) => self.finish(result),
            Ending::ContinuedAsNew(input, version) => self.continue_as_new(input, version),
        }
        None
    }

    /// The code ended while replaying. That is right only where history records the same ending next;
    /// then the execution is simply known to be over (its effects were carried out when it ran).
    fn settle_replayed_ending(&mut self, ending: Ending, rest: &[Event]) {
        // Commands the code already matched in this poll are not "what comes next".
        let matched_upto = self.lock().matched_upto;
        let next = rest
            .iter()
            .find(|e| !(is_command(&e.kind) && e.event_id <= matched_upto))
            .map(|e| (e.event_id, e.kind.clone()));
        let status = match (&ending, &next) {
            (Ending::Finished(Ok(output)), Some((_, EventKind::OrchestrationCompleted { .. }))) => {
                Some(TurnStatus::Completed {
                    output: output.clone(),
                })
            }
            (Ending::Finished(Err(error)), Some((_, EventKind::OrchestrationFailed { .. }))) => {
                Some(TurnStatus::Failed { error: error.clone() })
            }
            (Ending::ContinuedAsNew(..), Some((_, EventKind::OrchestrationContinuedAsNew { .. }))) => {
                Some(TurnStatus::ContinuedAsNew)
            }
            _ => None,
        };
        if let Some(status) = status {
            let root = self.root.take();
            drop(root); // still replaying: the drops' cancellations were carried out long ago
            self.history_len = next.map_or(self.history_len, |(id, _)| id);
            self.status = status;
            return;
        }
        let error = match next {
            Some((event_id, kind)) => NondeterminismError::FinishedEarly {
                event_id,
                expected: describe(&kind),
            },
            None => NondeterminismError::FinishedWithoutRecord {
                event_id: self.history_len,
            },
        };
        self.halt(error);
    }

    fn halt(&mut self, error: NondeterminismError) {
        self.finish(Err(ErrorDetails::new(
            ErrorKind::Nondeterminism,
            error.to_string(),
        )));
    }

    /// Ends the execution: cancels what is outstanding, records the terminal event and tells the parent.
    fn finish(&mut self, result: Result<String, ErrorDetails>) {
        let reason = match &result {
            Ok(_) => "the parent orchestration completed".to_string(),
            Err(error) => format!("the parent orchestration failed: {error}"),
        };
        self.end_execution(&reason);
        let state = self.state.clone();
        let mut st = lock(&state);
        let kind = match &result {
            Ok(output) => EventKind::OrchestrationCompleted {
                output: output.clone(),
            },
            Err(error) => EventKind::OrchestrationFailed { error: error.clone() },
        };
        self.history_len = st.push_event(None, kind).event_id;
        if let Some(parent) = st.parent.clone() {
            st.act(Action::NotifyParent {
                parent,
                result: result.clone(),
            });
        }
        drop(st);
        self.status = match result {
            Ok(output) => TurnStatus::Completed { output },
            Err(error) => TurnStatus::Failed { error },
        };
    }

    fn continue_as_new(&mut self, input: String, version: Option<String>) {
        self.end_execution("the parent orchestration continued as new");
        let state = self.state.clone();
        let mut st = lock(&state);
        let kind = EventKind::OrchestrationContinuedAsNew {
            input: input.clone(),
            version: version.clone(),
        };
        self.history_len = st.push_event(None, kind).event_id;
        let mut carried = Vec::new();
        for (name, datas) in std::mem::take(&mut st.event_buffer) {
            carried.extend(datas.into_iter().map(|data| CarriedMessage::Event {
                name: name.clone(),
                data,
            }));
        }
        for (queue, datas) in std::mem::take(&mut st.queue_buffer) {
            carried.extend(datas.into_iter().map(|data| CarriedMessage::Queue {
                queue: queue.clone(),
                data,
            }));
        }
        let message = OrchestratorMessage::ContinueAsNew {
            execution_id: st.execution_id,
            name: st.name.clone(),
            version,
            input,
            parent: st.parent.clone(),
            custom_status: st.custom_status.clone(),
            carried,
        };
        st.act(Action::ContinueAsNew(message));
        drop(st);
        self.status = TurnStatus::ContinuedAsNew;
    }

    /// Drops the code and cancels every outstanding activity and child. From here on the execution
    /// produces real actions even if it ended while replaying (a nondeterminism failure).
    fn end_execution(&mut self, reason: &str) {
        {
            let mut st = self.lock();
            st.replaying = false;
            st.drop_reason = reason.to_string();
        }
        // Drop outside the lock: dropping futures takes the lock in their Drop impls.
        let root = self.root.take();
        drop(root);
        let mut st = self.lock();
        for id in st.outstanding() {
            st.abandon(id, reason);
        }
    }

    fn take_output(&mut self) -> TurnOutput {
        let state = self.state.clone();
        let mut st = lock(&state);
        // Commands recorded by the code are history too: the engine has seen everything up to here,
        // which is what lets the instance cache recognise it next turn.
        self.history_len = st.next_event_id - 1;
        let custom_status = if std::mem::take(&mut st.custom_status_changed) {
            Some(st.custom_status.clone())
        } else {
            None
        };
        TurnOutput {
            execution_id: st.execution_id,
            new_events: std::mem::take(&mut st.new_events),
            actions: std::mem::take(&mut st.actions),
            status: self.status.clone(),
            custom_status,
            kv_changes: std::mem::take(&mut st.kv_changes),
            logs: std::mem::take(&mut st.logs),
            discarded: Vec::new(),
        }
    }
}

/// Resolves the slot a completion event points at; completions for unknown or abandoned slots are
/// ignored (during replay they cannot occur unless the history was produced by different code).
fn complete(st: &mut ExecState, source: Option<u64>, result: Result<String, ErrorDetails>) -> Option<Waker> {
    let id = source?;
    let slot = st.slots.get(&id)?;
    if slot.abandoned || slot.result.is_some() {
        return None;
    }
    st.resolve(id, result)
}

/// Locks the shared state, recovering from poisoning: a panic in user code must not wedge the engine.
pub(crate) fn lock(state: &Mutex<ExecState>) -> MutexGuard<'_, ExecState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}
