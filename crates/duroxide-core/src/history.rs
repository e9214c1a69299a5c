//! History events: the append-only record of one execution that replay reads back.
//!
//! Every event has an id (1-based, dense within an execution, assigned only by the replay engine), a
//! timestamp taken from the turn's `now`, and a kind. Completion events point at the scheduling event
//! they complete through `source_event_id`.

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetails;

/// Identifies the parent of a sub-orchestration: where its result must be delivered.
///
/// It is written into the child's `OrchestrationStarted` and carried across continue-as-new, so a
/// child that restarts itself still reports to the execution that is waiting for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    pub instance_id: String,
    pub execution_id: u64,
    /// The parent's `SubOrchestrationScheduled` event id.
    pub event_id: u64,
}

/// A message that outlived its execution and is handed to the next one by continue-as-new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CarriedMessage {
    /// An external event that no wait consumed.
    Event { name: String, data: String },
    /// A queue message that no dequeue consumed.
    Queue { queue: String, data: String },
    /// A cancellation that arrived after the execution ended.
    Cancel { reason: String },
}

/// One recorded event of an execution's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: u64,
    /// For completions: the id of the scheduling event they complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event_id: Option<u64>,
    pub timestamp_ms: u64,
    pub kind: EventKind,
}

/// What happened. The variant name is the event's stable type name (see [`EventKind::name`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    /// First event of every execution.
    OrchestrationStarted {
        name: String,
        version: String,
        input: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentLink>,
        /// Custom status inherited from the previous execution (continue-as-new).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        initial_custom_status: Option<String>,
    },
    ActivityScheduled {
        name: String,
        input: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
    },
    ActivityCompleted {
        result: String,
    },
    ActivityFailed {
        error: ErrorDetails,
    },
    TimerCreated {
        fire_at_ms: u64,
    },
    TimerFired {
        fire_at_ms: u64,
    },
    /// The code started waiting for an external event of this name.
    ExternalSubscribed {
        name: String,
    },
    /// An external event arrived (it is matched to waits of the same name in FIFO order).
    ExternalEventReceived {
        name: String,
        data: String,
    },
    /// The code started waiting for the next message of this queue.
    QueueSubscribed {
        queue: String,
    },
    /// A queue message arrived (matched to dequeues of the same queue in FIFO order).
    QueueMessageReceived {
        queue: String,
        data: String,
    },
    SubOrchestrationScheduled {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        instance_id: String,
        input: String,
    },
    SubOrchestrationCompleted {
        result: String,
    },
    SubOrchestrationFailed {
        error: ErrorDetails,
    },
    /// A detached (fire-and-forget) start of another orchestration.
    OrchestrationChained {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        instance_id: String,
        input: String,
    },
    CustomStatusUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    KvSet {
        key: String,
        value: String,
    },
    KvCleared {
        key: String,
    },
    KvClearedAll,
    KvPruned {
        cutoff_ms: u64,
    },
    /// A `utc_now()` value, recorded so replay reads it back instead of asking a clock.
    UtcNowRecorded {
        now_ms: u64,
    },
    /// A `new_guid()` value, recorded so replay reads it back instead of drawing randomness.
    GuidRecorded {
        guid: String,
    },
    CancelRequested {
        reason: String,
    },
    OrchestrationContinuedAsNew {
        input: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    OrchestrationCompleted {
        output: String,
    },
    OrchestrationFailed {
        error: ErrorDetails,
    },
}

impl EventKind {
    /// The stable type name stored beside each event (`ActivityScheduled`, `TimerFired`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::OrchestrationStarted { .. } => "OrchestrationStarted",
            EventKind::ActivityScheduled { .. } => "ActivityScheduled",
            EventKind::ActivityCompleted { .. } => "ActivityCompleted",
            EventKind::ActivityFailed { .. } => "ActivityFailed",
            EventKind::TimerCreated { .. } => "TimerCreated",
            EventKind::TimerFired { .. } => "TimerFired",
            EventKind::ExternalSubscribed { .. } => "ExternalSubscribed",
            EventKind::ExternalEventReceived { .. } => "ExternalEventReceived",
            EventKind::QueueSubscribed { .. } => "QueueSubscribed",
            EventKind::QueueMessageReceived { .. } => "QueueMessageReceived",
            EventKind::SubOrchestrationScheduled { .. } => "SubOrchestrationScheduled",
            EventKind::SubOrchestrationCompleted { .. } => "SubOrchestrationCompleted",
            EventKind::SubOrchestrationFailed { .. } => "SubOrchestrationFailed",
            EventKind::OrchestrationChained { .. } => "OrchestrationChained",
            EventKind::CustomStatusUpdated { .. } => "CustomStatusUpdated",
            EventKind::KvSet { .. } => "KvSet",
            EventKind::KvCleared { .. } => "KvCleared",
            EventKind::KvClearedAll => "KvClearedAll",
            EventKind::KvPruned { .. } => "KvPruned",
            EventKind::UtcNowRecorded { .. } => "UtcNowRecorded",
            EventKind::GuidRecorded { .. } => "GuidRecorded",
            EventKind::CancelRequested { .. } => "CancelRequested",
            EventKind::OrchestrationContinuedAsNew { .. } => "OrchestrationContinuedAsNew",
            EventKind::OrchestrationCompleted { .. } => "OrchestrationCompleted",
            EventKind::OrchestrationFailed { .. } => "OrchestrationFailed",
        }
    }

    /// Whether this event ends its execution.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::OrchestrationCompleted { .. }
                | EventKind::OrchestrationFailed { .. }
                | EventKind::OrchestrationContinuedAsNew { .. }
        )
    }
}

impl Event {
    /// The JSON the management API shows as an event's `data`: the payload a user cares about.
    pub fn data_json(&self) -> String {
        use serde_json::json;
        let v = match &self.kind {
            EventKind::OrchestrationStarted {
                name, version, input, ..
            } => {
                json!({"name": name, "version": version, "input": input})
            }
            EventKind::ActivityScheduled { name, input, .. } => json!({"name": name, "input": input}),
            EventKind::SubOrchestrationScheduled {
                name,
                instance_id,
                input,
                ..
            }
            | EventKind::OrchestrationChained {
                name,
                instance_id,
                input,
                ..
            } => {
                json!({"name": name, "instance_id": instance_id, "input": input})
            }
            EventKind::ActivityCompleted { result } | EventKind::SubOrchestrationCompleted { result } => {
                json!(result)
            }
            EventKind::OrchestrationCompleted { output } => json!(output),
            EventKind::ActivityFailed { error }
            | EventKind::SubOrchestrationFailed { error }
            | EventKind::OrchestrationFailed { error } => json!(error.to_string()),
            other => serde_json::to_value(other).unwrap_or(serde_json::Value::Null),
        };
        v.to_string()
    }
}
