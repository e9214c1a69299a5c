//! Error types of the core: how a failure is recorded in history, and why replay can refuse a history.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an activity, sub-orchestration or orchestration failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// User code returned an error (or raised an exception).
    Application,
    /// The orchestration's code no longer matches its recorded history.
    Nondeterminism,
    /// A message was fetched more than `max_attempts` times, or its stored data could not be read.
    Poison,
    /// The engine or its storage failed in a way retrying could not fix.
    Infrastructure,
    /// The name or version is not registered, or the runtime is configured so it cannot run it.
    Configuration,
    /// A documented limit (KV keys, value size, custom status size, tag length) was exceeded.
    LimitExceeded,
    /// The instance (or its parent) was cancelled.
    Cancelled,
}

/// A failure as recorded in history and reported to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetails {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorDetails {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ErrorDetails {
            kind,
            message: message.into(),
        }
    }

    pub fn application(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Application, message)
    }

    pub fn cancelled(reason: &str) -> Self {
        Self::new(ErrorKind::Cancelled, reason)
    }
}

impl fmt::Display for ErrorDetails {
    /// Application errors show the user's message as is; the others say what kind of failure it was,
    /// so a client reading only the text can tell a cancellation from a poison message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Application => f.write_str(&self.message),
            ErrorKind::Nondeterminism => write!(f, "nondeterministic: {}", self.message),
            ErrorKind::Poison => write!(f, "poison: {}", self.message),
            ErrorKind::Infrastructure => write!(f, "infrastructure: {}", self.message),
            ErrorKind::Configuration => write!(f, "configuration: {}", self.message),
            ErrorKind::LimitExceeded => write!(f, "limit exceeded: {}", self.message),
            ErrorKind::Cancelled => write!(f, "canceled: {}", self.message),
        }
    }
}

/// The code and the recorded history disagree. Stable code `DX-ND` in every message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NondeterminismError {
    /// The code scheduled something other than what history recorded at that position.
    #[error("[DX-ND] history recorded {expected} at event {event_id}, but the code now scheduled {actual}")]
    Mismatch {
        event_id: u64,
        expected: String,
        actual: String,
    },
    /// History recorded a scheduling event the code did not make at that point of its replay.
    #[error("[DX-ND] history recorded {expected} at event {event_id}, but the code did not schedule it")]
    MissingCommand { event_id: u64, expected: String },
    /// During replay the code scheduled something that history has no record of.
    #[error(
        "[DX-ND] the code scheduled {actual} while replaying (before event {event_id}), but history has no such event"
    )]
    ExtraCommand { event_id: u64, actual: String },
    /// The code returned while history still holds events it has not reached.
    #[error("[DX-ND] the code finished, but history continues with {expected} at event {event_id}")]
    FinishedEarly { event_id: u64, expected: String },
    /// The code finished where history shows the original run still waiting for more.
    #[error("[DX-ND] the code finished after event {event_id}, but history recorded the execution still running there")]
    FinishedWithoutRecord { event_id: u64 },
    /// History ends the execution at this event, but the code has not finished there.
    #[error(
        "[DX-ND] history ended the execution at event {event_id} ({recorded}), but the code is still running"
    )]
    NotFinished { event_id: u64, recorded: String },
    /// A completion event refers to a scheduling event that does not exist or has another kind.
    #[error("[DX-ND] event {event_id} ({kind}) completes event {source_event_id}, which is {found}")]
    BadCompletion {
        event_id: u64,
        kind: String,
        source_event_id: u64,
        found: String,
    },
}

/// History or a message could not be interpreted: the instance cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptHistoryError {
    #[error("event {position} of the history does not decode: {reason}")]
    Undecodable { position: usize, reason: String },
    #[error("history ids are not dense: expected event id {expected}, found {found}")]
    IdGap { expected: u64, found: u64 },
    #[error("history does not start with OrchestrationStarted (found {found})")]
    MissingStart { found: String },
    #[error("history continues after its terminal event {event_id}")]
    AfterTerminal { event_id: u64 },
}
