//! Messages (work items): what travels through the provider's queues between turns.
//!
//! Orchestrator messages are delivered to one instance and consumed by its next turn; worker items ask a
//! worker to run one activity. Providers store them as opaque JSON next to explicit routing fields; only
//! the engine and the runtime decode them.

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetails;
use crate::history::{CarriedMessage, ParentLink};

/// A message for one orchestration instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrchestratorMessage {
    /// Start execution 1 of a new instance.
    StartOrchestration {
        name: String,
        /// `None` = the latest registered version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        input: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentLink>,
    },
    /// Start the next execution of an instance that called continue-as-new.
    ContinueAsNew {
        /// The execution that ended; the new one is `execution_id + 1`.
        execution_id: u64,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        input: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentLink>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        custom_status: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        carried: Vec<CarriedMessage>,
    },
    ActivityCompleted {
        execution_id: u64,
        event_id: u64,
        result: String,
    },
    ActivityFailed {
        execution_id: u64,
        event_id: u64,
        error: ErrorDetails,
    },
    TimerFired {
        execution_id: u64,
        event_id: u64,
        fire_at_ms: u64,
    },
    SubOrchestrationCompleted {
        execution_id: u64,
        event_id: u64,
        result: String,
    },
    SubOrchestrationFailed {
        execution_id: u64,
        event_id: u64,
        error: ErrorDetails,
    },
    ExternalEvent {
        name: String,
        data: String,
    },
    QueueMessage {
        queue: String,
        data: String,
    },
    CancelRequested {
        reason: String,
    },
}

impl OrchestratorMessage {
    /// The stable type name of the message.
    pub fn name(&self) -> &'static str {
        match self {
            OrchestratorMessage::StartOrchestration { .. } => "StartOrchestration",
            OrchestratorMessage::ContinueAsNew { .. } => "ContinueAsNew",
            OrchestratorMessage::ActivityCompleted { .. } => "ActivityCompleted",
            OrchestratorMessage::ActivityFailed { .. } => "ActivityFailed",
            OrchestratorMessage::TimerFired { .. } => "TimerFired",
            OrchestratorMessage::SubOrchestrationCompleted { .. } => "SubOrchestrationCompleted",
            OrchestratorMessage::SubOrchestrationFailed { .. } => "SubOrchestrationFailed",
            OrchestratorMessage::ExternalEvent { .. } => "ExternalEvent",
            OrchestratorMessage::QueueMessage { .. } => "QueueMessage",
            OrchestratorMessage::CancelRequested { .. } => "CancelRequested",
        }
    }
}

/// A request to run one activity: the payload of a worker-queue item.
///
/// It carries the orchestration's name and version so a worker never reads history to learn them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityWork {
    pub instance_id: String,
    pub execution_id: u64,
    /// The `ActivityScheduled` event id; the completion is addressed to it.
    pub event_id: u64,
    pub name: String,
    pub input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub orchestration_name: String,
    pub orchestration_version: String,
}

impl ActivityWork {
    /// The message that reports this activity's result back to its orchestration.
    pub fn completion(&self, result: Result<String, ErrorDetails>) -> OrchestratorMessage {
        match result {
            Ok(result) => OrchestratorMessage::ActivityCompleted {
                execution_id: self.execution_id,
                event_id: self.event_id,
                result,
            },
            Err(error) => OrchestratorMessage::ActivityFailed {
                execution_id: self.execution_id,
                event_id: self.event_id,
                error,
            },
        }
    }
}
