//! Execution state shared by the replay engine and the orchestration context of one execution.
//!
//! The context records *commands* (scheduling calls and state changes) here; the engine delivers
//! *completions* here. During replay every command must match the next recorded command event of the
//! history; afterwards commands become new events and actions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::task::Waker;

use crate::engine::{Action, LogLevel, LogRecord};
use crate::error::{ErrorDetails, ErrorKind, NondeterminismError};
use crate::history::{Event, EventKind, ParentLink};
use crate::provider::{KvChange, KvEntry};

/// What a slot is waiting for; decides which completions may resolve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotKind {
    Activity,
    Timer,
    SubOrchestration,
    External,
    Queue,
}

/// The state of one scheduled thing, keyed by its scheduling event id.
#[derive(Debug)]
pub(crate) struct Slot {
    pub kind: SlotKind,
    pub result: Option<Result<String, ErrorDetails>>,
    pub waker: Option<Waker>,
    /// The future was dropped before it completed (lost a select, or the execution ended).
    pub abandoned: bool,
    /// For sub-orchestrations: the child's instance id (needed to cancel it).
    pub child_instance: Option<String>,
}

/// The execution's mutable state. Guarded by a mutex shared with the context; never held while user
/// code or a waker runs.
#[derive(Debug)]
pub(crate) struct ExecState {
    pub instance_id: String,
    pub execution_id: u64,
    pub name: String,
    pub version: String,
    pub parent: Option<ParentLink>,

    pub replaying: bool,
    /// Logical time: the timestamp of the event being processed.
    pub now_ms: u64,
    pub next_event_id: u64,
    /// Recorded command events not yet matched by the code, in history order.
    pub recorded: VecDeque<Event>,
    /// Id of the last recorded command the code matched.
    pub matched_upto: u64,

    pub new_events: Vec<Event>,
    pub actions: Vec<Action>,
    pub logs: Vec<LogRecord>,
    pub kv_changes: Vec<KvChange>,
    pub custom_status_changed: bool,

    pub slots: HashMap<u64, Slot>,
    /// Waits in FIFO order per event name / queue name (slot ids).
    pub event_waiters: HashMap<String, VecDeque<u64>>,
    pub queue_waiters: HashMap<String, VecDeque<u64>>,
    /// Arrivals nobody waited for yet, FIFO per name.
    pub event_buffer: BTreeMap<String, VecDeque<String>>,
    pub queue_buffer: BTreeMap<String, VecDeque<String>>,

    pub custom_status: Option<String>,
    pub kv: BTreeMap<String, KvEntry>,

    pub rng_state: u64,
    /// The first nondeterminism found; the engine fails the execution with it.
    pub nondeterminism: Option<NondeterminismError>,
    /// A fatal error raised by a context call (limit breach, invalid argument).
    pub fatal: Option<ErrorDetails>,
    /// Set by `continue_as_new`: (input, version).
    pub continue_as_new: Option<(String, Option<String>)>,
    /// Why a child is cancelled when the future waiting for it is dropped.
    pub drop_reason: String,
}

impl ExecState {
    pub fn new(instance_id: String, execution_id: u64) -> Self {
        ExecState {
            instance_id,
            execution_id,
            name: String::new(),
            version: String::new(),
            parent: None,
            replaying: false,
            now_ms: 0,
            next_event_id: 1,
            recorded: VecDeque::new(),
            matched_upto: 0,
            new_events: Vec::new(),
            actions: Vec::new(),
            logs: Vec::new(),
            kv_changes: Vec::new(),
            custom_status_changed: false,
            slots: HashMap::new(),
            event_waiters: HashMap::new(),
            queue_waiters: HashMap::new(),
            event_buffer: BTreeMap::new(),
            queue_buffer: BTreeMap::new(),
            custom_status: None,
            kv: BTreeMap::new(),
            rng_state: 0,
            nondeterminism: None,
            fatal: None,
            continue_as_new: None,
            drop_reason: "the parent orchestration no longer waits for it".to_string(),
        }
    }

    /// Appends an engine-made event (start, completion, arrival) with the next id and returns it.
    pub fn push_event(&mut self, source_event_id: Option<u64>, kind: EventKind) -> Event {
        let event = Event {
            event_id: self.next_event_id,
            source_event_id,
            timestamp_ms: self.now_ms,
            kind,
        };
        self.next_event_id += 1;
        self.new_events.push(event.clone());
        event
    }

    /// Records a command the code issued and returns its event together with its id.
    ///
    /// While replaying, the command must match the next recorded command; the recorded event (with
    /// its recorded values: fire time, child id, guid) is returned. Otherwise a new event is appended.
    /// On a mismatch the nondeterminism is remembered and `None` is returned: the caller hands out a
    /// future that never completes, and the engine fails the execution after this poll.
    pub fn record_command(&mut self, kind: EventKind) -> Option<Event> {
        if self.nondeterminism.is_some() {
            return None;
        }
        if self.replaying {
            let Some(recorded) = self.recorded.pop_front() else {
                self.nondeterminism = Some(NondeterminismError::ExtraCommand {
                    event_id: self.next_event_id,
                    actual: describe(&kind),
                });
                return None;
            };
            if !same_command(&recorded.kind, &kind) {
                self.nondeterminism = Some(NondeterminismError::Mismatch {
                    event_id: recorded.event_id,
                    expected: describe(&recorded.kind),
                    actual: describe(&kind),
                });
                return None;
            }
            self.matched_upto = recorded.event_id;
            return Some(recorded);
        }
        Some(self.push_event(None, kind))
    }

    /// Queues an action unless replaying (replayed actions were already carried out).
    pub fn act(&mut self, action: Action) {
        if !self.replaying {
            self.actions.push(action);
        }
    }

    /// Records a KV change for the ack unless replaying.
    pub fn kv_change(&mut self, change: KvChange) {
        if !self.replaying {
            self.kv_changes.push(change);
        }
    }

    pub fn log(&mut self, level: LogLevel, message: String) {
        if !self.replaying {
            self.logs.push(LogRecord {
                level,
                instance_id: self.instance_id.clone(),
                execution_id: self.execution_id,
                message,
            });
        }
    }

    pub fn fail_fatal(&mut self, kind: ErrorKind, message: String) {
        if self.fatal.is_none() {
            self.fatal = Some(ErrorDetails::new(kind, message));
        }
    }

    pub fn new_slot(&mut self, id: u64, kind: SlotKind) {
        self.slots.insert(
            id,
            Slot {
                kind,
                result: None,
                waker: None,
                abandoned: false,
                child_instance: None,
            },
        );
    }

    /// Resolves a live slot; returns its waker to be woken after the lock is released.
    pub fn resolve(&mut self, id: u64, result: Result<String, ErrorDetails>) -> Option<Waker> {
        let slot = self.slots.get_mut(&id)?;
        slot.result = Some(result);
        slot.waker.take()
    }

    /// Gives an arrived external event to the oldest live wait of that name, or buffers it.
    pub fn arrive_event(&mut self, name: &str, data: String) -> Option<Waker> {
        if let Some(waiters) = self.event_waiters.get_mut(name) {
            if let Some(slot) = waiters.pop_front() {
                return self.resolve(slot, Ok(data));
            }
        }
        self.event_buffer
            .entry(name.to_string())
            .or_default()
            .push_back(data);
        None
    }

    /// Gives an arrived queue message to the oldest live dequeue of that queue, or buffers it.
    pub fn arrive_queue(&mut self, queue: &str, data: String) -> Option<Waker> {
        if let Some(waiters) = self.queue_waiters.get_mut(queue) {
            if let Some(slot) = waiters.pop_front() {
                return self.resolve(slot, Ok(data));
            }
        }
        self.queue_buffer
            .entry(queue.to_string())
            .or_default()
            .push_back(data);
        None
    }

    /// Marks a dropped future's slot abandoned and cancels what it started (activities, children).
    pub fn abandon(&mut self, id: u64, reason: &str) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if slot.result.is_some() || slot.abandoned {
            slot.abandoned = true;
            return;
        }
        slot.abandoned = true;
        slot.waker = None;
        let kind = slot.kind;
        let child = slot.child_instance.clone();
        match kind {
            SlotKind::Activity => self.act(Action::CancelActivity { event_id: id }),
            SlotKind::SubOrchestration => {
                if let Some(instance_id) = child {
                    self.act(Action::CancelSubOrchestration {
                        instance_id,
                        reason: reason.to_string(),
                    });
                }
            }
            SlotKind::External | SlotKind::Queue => {
                let waiters = if kind == SlotKind::External {
                    &mut self.event_waiters
                } else {
                    &mut self.queue_waiters
                };
                for queue in waiters.values_mut() {
                    queue.retain(|s| *s != id);
                }
            }
            SlotKind::Timer => {}
        }
    }

    /// Ids of slots still waiting (not resolved, not abandoned), in id order.
    pub fn outstanding(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.result.is_none() && !s.abandoned)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Next 64 random bits from the turn's seed (splitmix64): fresh values without drawing entropy here.
    pub fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Whether a recorded command and the code's command are the same step: same kind and the same
/// identity (activity or orchestration name, event name, queue, KV key). Inputs may differ.
fn same_command(recorded: &EventKind, now: &EventKind) -> bool {
    use EventKind as K;
    match (recorded, now) {
        (K::ActivityScheduled { name: a, .. }, K::ActivityScheduled { name: b, .. }) => a == b,
        (K::TimerCreated { .. }, K::TimerCreated { .. }) => true,
        (K::ExternalSubscribed { name: a }, K::ExternalSubscribed { name: b }) => a == b,
        (K::QueueSubscribed { queue: a }, K::QueueSubscribed { queue: b }) => a == b,
        (
            K::SubOrchestrationScheduled {
                name: a,
                instance_id: ia,
                ..
            },
            K::SubOrchestrationScheduled {
                name: b,
                instance_id: ib,
                ..
            },
        ) => a == b && (ib.is_empty() || ia == ib),
        (
            K::OrchestrationChained {
                name: a,
                instance_id: ia,
                ..
            },
            K::OrchestrationChained {
                name: b,
                instance_id: ib,
                ..
            },
        ) => a == b && ia == ib,
        (K::CustomStatusUpdated { .. }, K::CustomStatusUpdated { .. }) => true,
        (K::KvSet { key: a, .. }, K::KvSet { key: b, .. }) => a == b,
        (K::KvCleared { key: a }, K::KvCleared { key: b }) => a == b,
        (K::KvClearedAll, K::KvClearedAll) => true,
        (K::KvPruned { .. }, K::KvPruned { .. }) => true,
        (K::UtcNowRecorded { .. }, K::UtcNowRecorded { .. }) => true,
        (K::GuidRecorded { .. }, K::GuidRecorded { .. }) => true,
        _ => false,
    }
}

/// Whether an event is a command (made by orchestration code) rather than an engine-made event.
pub(crate) fn is_command(kind: &EventKind) -> bool {
    use EventKind as K;
    matches!(
        kind,
        K::ActivityScheduled { .. }
            | K::TimerCreated { .. }
            | K::ExternalSubscribed { .. }
            | K::QueueSubscribed { .. }
            | K::SubOrchestrationScheduled { .. }
            | K::OrchestrationChained { .. }
            | K::CustomStatusUpdated { .. }
            | K::KvSet { .. }
            | K::KvCleared { .. }
            | K::KvClearedAll
            | K::KvPruned { .. }
            | K::UtcNowRecorded { .. }
            | K::GuidRecorded { .. }
    )
}

/// A short description of a command for nondeterminism messages, e.g. `ActivityScheduled("Charge")`.
pub(crate) fn describe(kind: &EventKind) -> String {
    use EventKind as K;
    let detail = match kind {
        K::ActivityScheduled { name, .. } | K::SubOrchestrationScheduled { name, .. } => name.clone(),
        K::OrchestrationChained {
            name, instance_id, ..
        } => format!("{name}, {instance_id}"),
        K::ExternalSubscribed { name } => name.clone(),
        K::QueueSubscribed { queue } => queue.clone(),
        K::KvSet { key, .. } | K::KvCleared { key } => key.clone(),
        _ => return kind.name().to_string(),
    };
    format!("{}({detail:?})", kind.name())
}
