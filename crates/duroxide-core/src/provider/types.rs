//! Plain data exchanged with a `Provider`: fetched items, acks, routing fields, management records.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

// ---- errors -----------------------------------------------------------------------------------------

/// What kind of failure a provider call had, and so whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderErrorKind {
    /// Transient (connection lost, busy, timeout): the same call may succeed later.
    Retryable,
    /// Retrying the same call will fail the same way (schema too new, corrupt file, bug).
    Permanent,
    /// The named instance (or execution) does not exist.
    NotFound,
    /// The lock token is unknown, expired, or its item was removed; nothing was changed.
    LockLost,
    /// The instance is still running and the operation needs it terminal (or `force`).
    StillRunning,
    /// The arguments were invalid; nothing was changed.
    InvalidInput,
}

/// A provider call failed. `operation` names the call, `message` says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    pub operation: &'static str,
    pub message: String,
}

impl ProviderError {
    pub fn new(kind: ProviderErrorKind, operation: &'static str, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            operation,
            message: message.into(),
        }
    }
    pub fn retryable(operation: &'static str, message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Retryable, operation, message)
    }
    pub fn permanent(operation: &'static str, message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::Permanent, operation, message)
    }
    pub fn not_found(operation: &'static str, message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::NotFound, operation, message)
    }
    pub fn lock_lost(operation: &'static str, message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::LockLost, operation, message)
    }
    pub fn invalid_input(operation: &'static str, message: impl Into<String>) -> Self {
        Self::new(ProviderErrorKind::InvalidInput, operation, message)
    }
    /// Whether repeating the call can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == ProviderErrorKind::Retryable
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed ({:?}): {}", self.operation, self.kind, self.message)
    }
}

impl std::error::Error for ProviderError {}

// ---- statuses ---------------------------------------------------------------------------------------

/// Status of an instance as a whole (its current execution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceStatus {
    Running,
    Completed,
    Failed,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Running => "Running",
            InstanceStatus::Completed => "Completed",
            InstanceStatus::Failed => "Failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Running" => Some(InstanceStatus::Running),
            "Completed" => Some(InstanceStatus::Completed),
            "Failed" => Some(InstanceStatus::Failed),
            _ => None,
        }
    }
    pub fn is_terminal(self) -> bool {
        self != InstanceStatus::Running
    }
}

/// Status of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecutionStatus {
    Running,
    Completed,
    Failed,
    ContinuedAsNew,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "Running",
            ExecutionStatus::Completed => "Completed",
            ExecutionStatus::Failed => "Failed",
            ExecutionStatus::ContinuedAsNew => "ContinuedAsNew",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Running" => Some(ExecutionStatus::Running),
            "Completed" => Some(ExecutionStatus::Completed),
            "Failed" => Some(ExecutionStatus::Failed),
            "ContinuedAsNew" => Some(ExecutionStatus::ContinuedAsNew),
            _ => None,
        }
    }
    /// The instance status an execution in this status implies (continue-as-new keeps it running).
    pub fn instance_status(self) -> InstanceStatus {
        match self {
            ExecutionStatus::Completed => InstanceStatus::Completed,
            ExecutionStatus::Failed => InstanceStatus::Failed,
            ExecutionStatus::Running | ExecutionStatus::ContinuedAsNew => InstanceStatus::Running,
        }
    }
}

// ---- orchestrator queue -----------------------------------------------------------------------------

/// Metadata for an instance that a message creates (client start, sub-orchestration, detached start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCreation {
    pub name: String,
    /// `None` until the first turn resolves the latest version.
    pub version: Option<String>,
    pub parent_instance_id: Option<String>,
}

/// A message to enqueue on the orchestrator queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub instance_id: String,
    /// The encoded `OrchestratorMessage`; opaque to the provider.
    pub payload: String,
    /// Invisible until this time (timers, backoff); `None` = visible at once.
    pub visible_at_ms: Option<u64>,
    /// When set, the message starts an instance: create it if absent, and if it already exists drop
    /// the message (idempotent start).
    pub creates: Option<InstanceCreation>,
}

/// A message as stored in the orchestrator queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub payload: String,
}

/// One stored history event: explicit id and type name beside the opaque encoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    pub event_id: u64,
    pub kind: String,
    pub payload: String,
}

/// One KV entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub value: String,
    pub updated_at_ms: u64,
}

/// Custom status with its version (incremented by every change).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomStatus {
    pub status: Option<String>,
    pub version: u64,
}

/// A locked instance with everything its next turn needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestrationItem {
    pub instance_id: String,
    pub lock_token: String,
    /// How many times these messages have been fetched, this fetch included (the highest among them).
    pub attempt: u32,
    pub instance: InstanceInfo,
    /// History of the current execution (`instance.current_execution_id`); empty before the first turn.
    pub history: Vec<HistoryRecord>,
    /// Every visible message of the instance, in enqueue order.
    pub messages: Vec<StoredMessage>,
    /// KV as it was when the current execution started: the current execution's own changes are in
    /// its history, not here.
    pub kv_snapshot: Vec<KvEntry>,
    pub custom_status: CustomStatus,
}

/// What a fetching runtime already holds: the replayed history of recently run instances. A provider
/// may consult it to leave out history the caller has (see
/// [`Provider::fetch_orchestration_item_cached`](crate::provider::Provider::fetch_orchestration_item_cached)).
pub trait HistoryCache: Send + Sync {
    /// How many history events of this execution of the instance the caller holds, if any.
    fn cached_history_len(&self, instance_id: &str, execution_id: u64) -> Option<u64>;
}

/// A fetched item whose history may have been left out because the caller holds all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFetch {
    /// The item; `item.history` is empty when `omitted_history_len` is set.
    pub item: OrchestrationItem,
    /// Set when the history was left out: the stored history's length, equal to what the
    /// [`HistoryCache`] reported for this instance and execution at the moment of the fetch.
    pub omitted_history_len: Option<u64>,
}

/// A KV change written by a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvChange {
    Set {
        key: String,
        value: String,
        updated_at_ms: u64,
    },
    Delete {
        key: String,
    },
}

/// A custom status change written by a turn; any `Set` increments the version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CustomStatusChange {
    #[default]
    Unchanged,
    Set(Option<String>),
}

/// Identity of one scheduled activity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActivityRef {
    pub instance_id: String,
    pub execution_id: u64,
    pub event_id: u64,
}

/// A worker-queue item to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorkItem {
    pub activity: ActivityRef,
    /// The encoded `ActivityWork`; opaque to the provider.
    pub payload: String,
    pub session_id: Option<String>,
    pub tag: Option<String>,
}

/// Everything one turn writes, committed atomically by `ack_orchestration_item`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TurnAck {
    /// The execution the new history belongs to. Greater than the instance's current execution when
    /// this turn started a new one (continue-as-new): the provider then creates that execution, makes
    /// it current, and takes the KV state before this ack as the new execution's snapshot.
    pub execution_id: u64,
    /// Events appended to that execution, in id order.
    pub history: Vec<HistoryRecord>,
    /// New execution status; `None` leaves it as it is.
    pub status: Option<ExecutionStatus>,
    /// Output (completed) or error text (failed) of a terminal execution.
    pub output: Option<String>,
    /// Name and resolved version, written on the turn that starts an execution.
    pub name: Option<String>,
    pub version: Option<String>,
    pub custom_status: CustomStatusChange,
    pub kv_changes: Vec<KvChange>,
    pub worker_items: Vec<NewWorkItem>,
    /// Orchestrator messages for this or other instances (timers carry `visible_at_ms`).
    pub messages: Vec<NewMessage>,
    /// Worker items to remove (cancelled activities). Locked ones are removed too; their holders
    /// find out through `LockLost` on renew or ack.
    pub cancel_activities: Vec<ActivityRef>,
}

impl TurnAck {
    /// Whether the turn changes the instance's status (a terminal or continued-as-new execution) or
    /// its custom status: what a client reading the instance's state sees. Most turns do neither.
    pub fn changes_status(&self) -> bool {
        let status_changed = self.status.is_some_and(|s| s != ExecutionStatus::Running);
        status_changed || self.custom_status != CustomStatusChange::Unchanged
    }

    /// Whether the turn's only effect besides its history is to schedule activities: no status
    /// change beyond running, no custom status, KV, message, timer or cancellation. Such a turn
    /// changes nothing anyone else reads, so a runtime may run its activities in process and commit
    /// the turn together with the one that takes their results ([`TurnAck::then`]).
    pub fn only_schedules_activities(&self) -> bool {
        !self.worker_items.is_empty()
            && !self.changes_status()
            && self.output.is_none()
            && self.kv_changes.is_empty()
            && self.messages.is_empty()
            && self.cancel_activities.is_empty()
    }

    /// This turn's ack followed by the next turn's of the same execution, as one ack: what the two
    /// commits in order would leave. Work items this turn schedules and the next cancels are
    /// neither stored nor cancelled.
    pub fn then(mut self, next: TurnAck) -> TurnAck {
        debug_assert_eq!(self.execution_id, next.execution_id, "turns of one execution");
        let TurnAck {
            execution_id,
            history,
            status,
            output,
            name,
            version,
            custom_status,
            kv_changes,
            worker_items,
            messages,
            mut cancel_activities,
        } = next;
        self.execution_id = execution_id;
        self.history.extend(history);
        self.status = status.or(self.status);
        self.output = output.or(self.output);
        self.name = self.name.or(name);
        self.version = self.version.or(version);
        if custom_status != CustomStatusChange::Unchanged {
            self.custom_status = custom_status;
        }
        self.kv_changes.extend(kv_changes);
        let scheduled_here =
            |cancelled: &ActivityRef| self.worker_items.iter().any(|item| item.activity == *cancelled);
        let (never_stored, stored): (Vec<_>, Vec<_>) =
            cancel_activities.drain(..).partition(|c| scheduled_here(c));
        self.worker_items
            .retain(|item| !never_stored.contains(&item.activity));
        self.worker_items.extend(worker_items);
        self.messages.extend(messages);
        self.cancel_activities.extend(stored);
        self
    }
}

// ---- worker queue -----------------------------------------------------------------------------------

/// Which activity tags a worker accepts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TagFilter {
    /// Untagged activities only.
    #[default]
    DefaultOnly,
    /// Only activities with one of these tags.
    Tags(Vec<String>),
    /// Untagged activities and these tags.
    DefaultAnd(Vec<String>),
    /// Every activity.
    Any,
    /// No activity at all.
    None,
}

impl TagFilter {
    /// Whether an item with this tag passes the filter.
    pub fn accepts(&self, tag: Option<&str>) -> bool {
        match (self, tag) {
            (TagFilter::Any, _) => true,
            (TagFilter::None, _) => false,
            (TagFilter::DefaultOnly, t) => t.is_none(),
            (TagFilter::Tags(tags), Some(t)) => tags.iter().any(|x| x == t),
            (TagFilter::Tags(_), None) => false,
            (TagFilter::DefaultAnd(_), None) => true,
            (TagFilter::DefaultAnd(tags), Some(t)) => tags.iter().any(|x| x == t),
        }
    }
}

/// How a worker takes part in session routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRouting {
    /// Stable identity of the session owner (worker node plus slot, chosen by the runtime).
    pub owner_id: String,
    /// Session lease: an owned session idle this long may be claimed by another owner.
    pub lease: Duration,
    /// Whether this fetch may claim a session that nobody owns (false when the owner is at its limit).
    pub may_claim_new: bool,
}

/// What a worker asks for when it fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFetch {
    pub lock_timeout: Duration,
    pub tag_filter: TagFilter,
    /// `None`: this worker never takes items that belong to a session.
    pub session: Option<SessionRouting>,
}

/// A locked worker item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItemLease {
    pub lock_token: String,
    pub activity: ActivityRef,
    pub payload: String,
    pub attempt: u32,
    pub session_id: Option<String>,
    pub tag: Option<String>,
}

// ---- management -------------------------------------------------------------------------------------

/// Metadata of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub instance_id: String,
    pub name: String,
    pub version: Option<String>,
    pub current_execution_id: u64,
    pub status: InstanceStatus,
    /// Output of a completed instance, error text of a failed one.
    pub output: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub parent_instance_id: Option<String>,
}

/// Metadata of one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionInfo {
    pub execution_id: u64,
    pub status: ExecutionStatus,
    pub output: Option<String>,
    pub started_at_ms: u64,
    pub completed_at_ms: Option<u64>,
    pub event_count: u64,
}

/// What a delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeleteResult {
    pub instances_deleted: u64,
    pub executions_deleted: u64,
    pub events_deleted: u64,
    pub queue_messages_deleted: u64,
}

/// Selects instances for bulk operations. At least one criterion must be set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceFilter {
    pub instance_ids: Option<Vec<String>>,
    pub completed_before_ms: Option<u64>,
    pub limit: Option<u32>,
}

/// Which old executions to prune.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneOptions {
    /// Keep this many most recent executions (the current one always stays).
    pub keep_last: Option<u32>,
    /// Only prune executions completed before this time.
    pub completed_before_ms: Option<u64>,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneResult {
    pub instances_processed: u64,
    pub executions_deleted: u64,
    pub events_deleted: u64,
}

/// Store-wide counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SystemMetrics {
    pub total_instances: u64,
    pub total_executions: u64,
    pub running_instances: u64,
    pub completed_instances: u64,
    pub failed_instances: u64,
    pub total_events: u64,
}

/// Queue depths; `timer_queue` counts orchestrator messages not yet visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepths {
    pub orchestrator_queue: u64,
    pub worker_queue: u64,
    pub timer_queue: u64,
}

/// Size figures of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceStats {
    pub history_event_count: u64,
    pub history_size_bytes: u64,
    pub queue_pending_count: u64,
    pub kv_user_key_count: u64,
    pub kv_total_value_bytes: u64,
}
