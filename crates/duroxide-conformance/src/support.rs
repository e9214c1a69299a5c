//! Shared helpers for the checks: builders for messages, history records, worker items and turn acks,
//! fetch wrappers that turn "nothing arrived" into a failure, and bounded waiting on conditions.
//!
//! Payloads are encoded with the core codec so providers see exactly what a runtime would store, even
//! though the contract makes them opaque.

use std::fmt::Debug;
use std::future::Future;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use duroxide_core::codec::{encode_activity, encode_event, encode_message};
use duroxide_core::provider::{
    ActivityRef, CustomStatus, CustomStatusChange, ExecutionStatus, HistoryRecord, InstanceCreation,
    InstanceInfo, KvChange, KvEntry, NewMessage, NewWorkItem, OrchestrationItem, Provider, ProviderError,
    ProviderErrorKind, QueueDepths, SessionRouting, TagFilter, TurnAck, WorkItemLease, WorkerFetch,
};
use duroxide_core::{ActivityWork, ErrorDetails, Event, EventKind, OrchestratorMessage};

pub(crate) use crate::factory::ProviderFactory;
pub(crate) use crate::runner::{CheckError, CheckResult};

/// A provider under test.
pub(crate) type P = Arc<dyn Provider>;

/// A lease that never runs out during a check.
pub(crate) const LONG_LOCK: Duration = Duration::from_secs(60);
/// A lease short enough to run out within a check.
pub(crate) const SHORT_LOCK: Duration = Duration::from_millis(150);
/// A lease that a renewal issued right after the fetch lands inside even on a stalled machine, yet
/// short enough to outlive within a check.
pub(crate) const RENEWABLE_LOCK: Duration = Duration::from_secs(1);
/// How long a fetch that expects work may wait. It returns at once when the work is there; the wait
/// only matters for a broken provider, which then fails instead of hanging.
pub(crate) const EXPECT_WAIT: Duration = Duration::from_secs(5);
/// Upper bound for "promptly": generous so a loaded machine does not fail a correct provider, yet far
/// below the poll timeouts the wake-up checks use.
pub(crate) const PROMPT: Duration = Duration::from_secs(1);
/// Upper bound for waiting on a condition (a lease running out, a timer coming due).
pub(crate) const CONDITION_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock tolerance when comparing our clock with the provider's (rounding, a database clock).
pub(crate) const CLOCK_SLACK_MS: u64 = 50;
/// Orchestration name used for created instances.
pub(crate) const ORCH: &str = "ConformanceOrchestration";
pub(crate) const VERSION: &str = "1.0.0";

// ---- assertions -------------------------------------------------------------------------------------

/// Fails the check with a message and the source location unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::runner::CheckError::failed(format!(
                "{} (at {}:{})",
                format_args!($($msg)+),
                file!(),
                line!()
            )));
        }
    };
}

/// Fails the check unless `actual == expected`, showing both.
macro_rules! ensure_eq {
    ($actual:expr, $expected:expr, $($msg:tt)+) => {
        match (&$actual, &$expected) {
            (actual, expected) => {
                if actual != expected {
                    return Err($crate::runner::CheckError::failed(format!(
                        "{}: expected {:?}, got {:?} (at {}:{})",
                        format_args!($($msg)+),
                        expected,
                        actual,
                        file!(),
                        line!()
                    )));
                }
            }
        }
    };
}

pub(crate) use {ensure, ensure_eq};

/// A failure with a message and the caller's location.
#[track_caller]
pub(crate) fn fail(message: impl Into<String>) -> CheckError {
    let at = Location::caller();
    CheckError::failed(format!("{} (at {}:{})", message.into(), at.file(), at.line()))
}

/// Expects the call to have failed with `kind`.
#[track_caller]
pub(crate) fn expect_kind<T: Debug>(
    result: Result<T, ProviderError>,
    kind: ProviderErrorKind,
    what: &str,
) -> CheckResult {
    match result {
        Err(e) if e.kind == kind => Ok(()),
        Err(e) => Err(fail(format!("{what}: expected a {kind:?} error, got {e}"))),
        Ok(v) => Err(fail(format!("{what}: expected a {kind:?} error, got Ok({v:?})"))),
    }
}

/// Skips the check unless the capability holds.
pub(crate) fn require(capability: bool, what: &str) -> CheckResult {
    if capability {
        Ok(())
    } else {
        Err(CheckError::skipped(format!(
            "the provider does not declare {what}"
        )))
    }
}

/// Two provider objects on one store, or a skip.
pub(crate) async fn pair(factory: &dyn ProviderFactory) -> Result<(P, P), CheckError> {
    factory
        .create_pair()
        .await
        .ok_or_else(|| CheckError::skipped("the factory offers no second provider object on one store"))
}

// ---- time -------------------------------------------------------------------------------------------

/// Now on our clock, in Unix epoch milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sleeps until a lease of `lease` taken now has certainly run out. Not a race: a sleep lasts at least
/// its duration, so afterwards the lease is over on any clock that runs at the right speed.
pub(crate) async fn outlive(lease: Duration) {
    tokio::time::sleep(lease + Duration::from_millis(2 * CLOCK_SLACK_MS)).await;
}

/// Sleeps until our clock has passed `at_ms` (plus slack for a provider clock that rounds).
pub(crate) async fn sleep_until_ms(at_ms: u64) {
    let target = at_ms + CLOCK_SLACK_MS;
    let now = now_ms();
    if target > now {
        tokio::time::sleep(Duration::from_millis(target - now)).await;
    }
}

/// Polls `probe` every few milliseconds until it yields a value or `timeout` passes.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, CheckError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, CheckError>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(CheckError::failed(format!(
                "timed out after {timeout:?} waiting for {what}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- history records --------------------------------------------------------------------------------

/// A history record for `kind` with an explicit id, encoded as the runtime would store it.
pub(crate) fn record(event_id: u64, kind: EventKind) -> HistoryRecord {
    encode_event(&Event {
        event_id,
        source_event_id: None,
        timestamp_ms: now_ms(),
        kind,
    })
}

pub(crate) fn started_kind(name: &str, input: &str) -> EventKind {
    EventKind::OrchestrationStarted {
        name: name.into(),
        version: VERSION.into(),
        input: input.into(),
        parent: None,
        initial_custom_status: None,
    }
}

/// A neutral event to fill history with (a recorded `new_guid()` value).
pub(crate) fn filler_kind(n: u64) -> EventKind {
    EventKind::GuidRecorded {
        guid: format!("00000000-0000-4000-8000-{n:012}"),
    }
}

// ---- orchestrator messages --------------------------------------------------------------------------

fn message(instance: &str, m: &OrchestratorMessage) -> NewMessage {
    NewMessage {
        instance_id: instance.into(),
        payload: encode_message(m),
        visible_at_ms: None,
        creates: None,
    }
}

/// The client's start message for a new top-level instance.
pub(crate) fn start_message(instance: &str) -> NewMessage {
    let m = OrchestratorMessage::StartOrchestration {
        name: ORCH.into(),
        version: None,
        input: format!("\"input of {instance}\""),
        parent: None,
    };
    NewMessage {
        creates: Some(InstanceCreation {
            name: ORCH.into(),
            version: None,
            parent_instance_id: None,
        }),
        ..message(instance, &m)
    }
}

/// A sub-orchestration start sent by `parent`'s turn.
pub(crate) fn child_start_message(instance: &str, parent: &str) -> NewMessage {
    let m = OrchestratorMessage::StartOrchestration {
        name: "ChildOrchestration".into(),
        version: Some(VERSION.into()),
        input: "\"child input\"".into(),
        parent: Some(duroxide_core::ParentLink {
            instance_id: parent.into(),
            execution_id: 1,
            event_id: 2,
        }),
    };
    NewMessage {
        creates: Some(InstanceCreation {
            name: "ChildOrchestration".into(),
            version: Some(VERSION.into()),
            parent_instance_id: Some(parent.into()),
        }),
        ..message(instance, &m)
    }
}

pub(crate) fn external_event(instance: &str, name: &str, data: &str) -> NewMessage {
    message(
        instance,
        &OrchestratorMessage::ExternalEvent {
            name: name.into(),
            data: data.into(),
        },
    )
}

pub(crate) fn queue_message(instance: &str, queue: &str, data: &str) -> NewMessage {
    message(
        instance,
        &OrchestratorMessage::QueueMessage {
            queue: queue.into(),
            data: data.into(),
        },
    )
}

pub(crate) fn cancel_message(instance: &str) -> NewMessage {
    message(
        instance,
        &OrchestratorMessage::CancelRequested {
            reason: "conformance".into(),
        },
    )
}

/// A timer for `instance`, invisible until `fire_at_ms`.
pub(crate) fn timer_message(instance: &str, event_id: u64, fire_at_ms: u64) -> NewMessage {
    let m = OrchestratorMessage::TimerFired {
        execution_id: 1,
        event_id,
        fire_at_ms,
    };
    NewMessage {
        visible_at_ms: Some(fire_at_ms),
        ..message(instance, &m)
    }
}

pub(crate) fn activity_completion(instance: &str, execution_id: u64, event_id: u64) -> NewMessage {
    let m = OrchestratorMessage::ActivityCompleted {
        execution_id,
        event_id,
        result: format!("\"result of {event_id}\""),
    };
    message(instance, &m)
}

pub(crate) fn activity_failure(instance: &str, execution_id: u64, event_id: u64) -> NewMessage {
    let m = OrchestratorMessage::ActivityFailed {
        execution_id,
        event_id,
        error: ErrorDetails::application("activity failed"),
    };
    message(instance, &m)
}

fn continue_as_new_message(instance: &str, ended_execution: u64) -> NewMessage {
    let m = OrchestratorMessage::ContinueAsNew {
        execution_id: ended_execution,
        name: ORCH.into(),
        version: Some(VERSION.into()),
        input: "\"next\"".into(),
        parent: None,
        custom_status: None,
        carried: Vec::new(),
    };
    message(instance, &m)
}

/// The payloads of a fetched item's messages, in the order the provider returned them.
pub(crate) fn payloads(item: &OrchestrationItem) -> Vec<String> {
    item.messages.iter().map(|m| m.payload.clone()).collect()
}

/// Payloads of the given messages, for comparing with [`payloads`].
pub(crate) fn payloads_of(messages: &[NewMessage]) -> Vec<String> {
    messages.iter().map(|m| m.payload.clone()).collect()
}

// ---- worker items -----------------------------------------------------------------------------------

/// A worker item for activity `event_id` of `instance`'s execution 1, untagged and without session.
pub(crate) fn work_item(instance: &str, event_id: u64) -> NewWorkItem {
    build_work(instance, 1, event_id, None, None)
}

/// Variations of a worker item; each re-encodes the payload so it stays consistent with the fields.
pub(crate) trait WorkItemExt: Sized {
    fn in_session(self, session: &str) -> Self;
    fn tagged(self, tag: &str) -> Self;
    fn in_execution(self, execution_id: u64) -> Self;
}

impl WorkItemExt for NewWorkItem {
    fn in_session(self, session: &str) -> Self {
        let a = self.activity;
        build_work(
            &a.instance_id,
            a.execution_id,
            a.event_id,
            Some(session),
            self.tag.as_deref(),
        )
    }
    fn tagged(self, tag: &str) -> Self {
        let a = self.activity;
        build_work(
            &a.instance_id,
            a.execution_id,
            a.event_id,
            self.session_id.as_deref(),
            Some(tag),
        )
    }
    fn in_execution(self, execution_id: u64) -> Self {
        let a = self.activity;
        build_work(
            &a.instance_id,
            execution_id,
            a.event_id,
            self.session_id.as_deref(),
            self.tag.as_deref(),
        )
    }
}

fn build_work(
    instance: &str,
    execution_id: u64,
    event_id: u64,
    session: Option<&str>,
    tag: Option<&str>,
) -> NewWorkItem {
    let work = ActivityWork {
        instance_id: instance.into(),
        execution_id,
        event_id,
        name: format!("Activity{event_id}"),
        input: format!("\"input {event_id}\""),
        session_id: session.map(Into::into),
        tag: tag.map(Into::into),
        orchestration_name: ORCH.into(),
        orchestration_version: VERSION.into(),
    };
    NewWorkItem {
        activity: ActivityRef {
            instance_id: instance.into(),
            execution_id,
            event_id,
        },
        payload: encode_activity(&work),
        session_id: session.map(Into::into),
        tag: tag.map(Into::into),
    }
}

/// A worker that takes untagged items outside sessions.
pub(crate) fn worker() -> WorkerFetch {
    WorkerFetch {
        lock_timeout: LONG_LOCK,
        tag_filter: TagFilter::DefaultOnly,
        session: None,
    }
}

pub(crate) fn worker_with(tag_filter: TagFilter) -> WorkerFetch {
    WorkerFetch {
        tag_filter,
        ..worker()
    }
}

/// A session-aware worker accepting any tag.
pub(crate) fn session_worker(owner: &str, lease: Duration, may_claim_new: bool) -> WorkerFetch {
    WorkerFetch {
        lock_timeout: LONG_LOCK,
        tag_filter: TagFilter::Any,
        session: Some(SessionRouting {
            owner_id: owner.into(),
            lease,
            may_claim_new,
        }),
    }
}

pub(crate) async fn fetch_work(p: &P, request: &WorkerFetch) -> Result<WorkItemLease, CheckError> {
    p.fetch_work_item(request, EXPECT_WAIT)
        .await?
        .ok_or_else(|| CheckError::failed(format!("expected a worker item for {request:?}, got none")))
}

/// Expects that `request` finds nothing right now.
#[track_caller]
pub(crate) fn no_work(found: Option<WorkItemLease>, why: &str) -> CheckResult {
    match found {
        None => Ok(()),
        Some(w) => Err(fail(format!(
            "{why}: expected no worker item, got {:?} (tag {:?}, session {:?})",
            w.activity, w.tag, w.session_id
        ))),
    }
}

pub(crate) async fn try_fetch_work(
    p: &P,
    request: &WorkerFetch,
) -> Result<Option<WorkItemLease>, CheckError> {
    Ok(p.fetch_work_item(request, Duration::ZERO).await?)
}

// ---- turns ------------------------------------------------------------------------------------------

/// Builds the ack of one turn, assigning event ids the way the runtime does (dense, after history).
#[derive(Debug, Clone)]
pub(crate) struct Turn {
    ack: TurnAck,
    next_event_id: u64,
    instance_id: String,
}

impl Turn {
    /// A turn on the fetched item's current execution. On an empty history it starts the execution:
    /// `OrchestrationStarted` first, name and version written, as a runtime's first turn does.
    pub(crate) fn after(item: &OrchestrationItem) -> Self {
        let next_event_id = item.history.last().map_or(1, |r| r.event_id + 1);
        let turn = Turn {
            ack: TurnAck {
                execution_id: item.instance.current_execution_id,
                ..TurnAck::default()
            },
            next_event_id,
            instance_id: item.instance_id.clone(),
        };
        if next_event_id == 1 {
            turn.starting(&item.instance.name)
        } else {
            turn
        }
    }

    /// A turn on the item's current execution whose stored history has `len` events (for an item
    /// fetched without its history).
    pub(crate) fn after_len(item: &OrchestrationItem, len: u64) -> Self {
        Turn {
            ack: TurnAck {
                execution_id: item.instance.current_execution_id,
                ..TurnAck::default()
            },
            next_event_id: len + 1,
            instance_id: item.instance_id.clone(),
        }
    }

    /// The first turn of the next execution (continue-as-new): `execution_id + 1`, history from id 1.
    pub(crate) fn next_execution(item: &OrchestrationItem) -> Self {
        Turn {
            ack: TurnAck {
                execution_id: item.instance.current_execution_id + 1,
                ..TurnAck::default()
            },
            next_event_id: 1,
            instance_id: item.instance_id.clone(),
        }
        .starting(&item.instance.name)
    }

    fn starting(mut self, name: &str) -> Self {
        self.ack.name = Some(name.into());
        self.ack.version = Some(VERSION.into());
        self.event(started_kind(name, "\"input\""))
    }

    pub(crate) fn event(mut self, kind: EventKind) -> Self {
        self.ack.history.push(record(self.next_event_id, kind));
        self.next_event_id += 1;
        self
    }

    /// Appends `n` neutral events.
    pub(crate) fn events(mut self, n: u64) -> Self {
        for _ in 0..n {
            let id = self.next_event_id;
            self = self.event(filler_kind(id));
        }
        self
    }

    /// Appends a record with an explicit id, e.g. one that already exists.
    pub(crate) fn raw_record(mut self, event_id: u64) -> Self {
        self.ack.history.push(record(event_id, filler_kind(event_id)));
        self
    }

    pub(crate) fn status(mut self, status: ExecutionStatus) -> Self {
        self.ack.status = Some(status);
        self
    }

    pub(crate) fn complete(mut self, output: &str) -> Self {
        self.ack.output = Some(output.into());
        self.event(EventKind::OrchestrationCompleted {
            output: output.into(),
        })
        .status(ExecutionStatus::Completed)
    }

    pub(crate) fn fail(mut self, error: &str) -> Self {
        self.ack.output = Some(error.into());
        self.event(EventKind::OrchestrationFailed {
            error: ErrorDetails::application(error),
        })
        .status(ExecutionStatus::Failed)
    }

    /// Ends this execution with continue-as-new: the terminal event, the status, and the message that
    /// starts the next execution.
    pub(crate) fn continue_as_new(mut self) -> Self {
        let msg = continue_as_new_message(&self.instance_id, self.ack.execution_id);
        self.ack.messages.push(msg);
        self.event(EventKind::OrchestrationContinuedAsNew {
            input: "\"next\"".into(),
            version: None,
        })
        .status(ExecutionStatus::ContinuedAsNew)
    }

    pub(crate) fn work(mut self, item: NewWorkItem) -> Self {
        self.ack.worker_items.push(item);
        self
    }

    pub(crate) fn message(mut self, message: NewMessage) -> Self {
        self.ack.messages.push(message);
        self
    }

    pub(crate) fn kv_set(mut self, key: &str, value: &str, updated_at_ms: u64) -> Self {
        self.ack.kv_changes.push(KvChange::Set {
            key: key.into(),
            value: value.into(),
            updated_at_ms,
        });
        self
    }

    pub(crate) fn kv_delete(mut self, key: &str) -> Self {
        self.ack.kv_changes.push(KvChange::Delete { key: key.into() });
        self
    }

    pub(crate) fn custom_status(mut self, status: Option<&str>) -> Self {
        self.ack.custom_status = CustomStatusChange::Set(status.map(Into::into));
        self
    }

    pub(crate) fn cancel(mut self, activity: ActivityRef) -> Self {
        self.ack.cancel_activities.push(activity);
        self
    }

    pub(crate) fn build(self) -> TurnAck {
        self.ack
    }

    /// Acks the turn with the item's lock token, expecting success.
    pub(crate) async fn commit(self, p: &P, item: &OrchestrationItem) -> CheckResult {
        Ok(p.ack_orchestration_item(&item.lock_token, self.ack).await?)
    }
}

// ---- orchestrator flows -----------------------------------------------------------------------------

/// Creates a new top-level instance, expecting it not to exist yet.
pub(crate) async fn create(p: &P, instance: &str) -> CheckResult {
    ensure!(
        p.create_instance(start_message(instance)).await?,
        "create_instance({instance}) returned false for a new id"
    );
    Ok(())
}

pub(crate) async fn fetch_with_lock(p: &P, lock: Duration) -> Result<OrchestrationItem, CheckError> {
    p.fetch_orchestration_item(lock, EXPECT_WAIT)
        .await?
        .ok_or_else(|| CheckError::failed("expected an instance with work, the fetch returned none"))
}

/// Fetches the next instance under a long lease, failing if there is none.
pub(crate) async fn fetch(p: &P) -> Result<OrchestrationItem, CheckError> {
    fetch_with_lock(p, LONG_LOCK).await
}

/// Fetches, expecting `instance` (the only one with visible work at that point of the check).
pub(crate) async fn fetch_instance(p: &P, instance: &str) -> Result<OrchestrationItem, CheckError> {
    let item = fetch(p).await?;
    ensure_eq!(
        item.instance_id.as_str(),
        instance,
        "the fetch returned another instance"
    );
    Ok(item)
}

/// A fetch that does not wait: `None` if nothing is fetchable right now.
pub(crate) async fn try_fetch(p: &P) -> Result<Option<OrchestrationItem>, CheckError> {
    Ok(p.fetch_orchestration_item(LONG_LOCK, Duration::ZERO).await?)
}

/// Expects that nothing is fetchable right now.
#[track_caller]
pub(crate) fn no_item(found: Option<OrchestrationItem>, why: &str) -> CheckResult {
    match found {
        None => Ok(()),
        Some(item) => Err(fail(format!(
            "{why}: expected no fetchable instance, got {} with {} message(s)",
            item.instance_id,
            item.messages.len()
        ))),
    }
}

/// Creates `instance` and commits its first turn (built by `extra` on top of the start), leaving it
/// idle and running. No other instance may have visible work at that moment.
pub(crate) async fn start_with(p: &P, instance: &str, extra: impl FnOnce(Turn) -> Turn) -> CheckResult {
    create(p, instance).await?;
    let item = fetch_instance(p, instance).await?;
    extra(Turn::after(&item)).commit(p, &item).await
}

/// Creates `instance` and commits a plain first turn.
pub(crate) async fn start(p: &P, instance: &str) -> CheckResult {
    start_with(p, instance, |t| t).await
}

/// Runs one more turn on an idle instance: sends it a nudge event, fetches it and commits what `build`
/// adds. No other instance may have visible work at that moment.
pub(crate) async fn turn(p: &P, instance: &str, build: impl FnOnce(Turn) -> Turn) -> CheckResult {
    p.enqueue_message(external_event(instance, "nudge", "null"))
        .await?;
    let item = fetch_instance(p, instance).await?;
    build(Turn::after(&item)).commit(p, &item).await
}

/// Starts an instance and completes it in its first turn.
pub(crate) async fn start_completed(p: &P, instance: &str) -> CheckResult {
    start_with(p, instance, |t| t.complete("\"done\"")).await
}

/// Moves an idle instance to its next execution: one turn ends the current execution with
/// continue-as-new, the next turn starts the new one (built by `extra`).
pub(crate) async fn continue_as_new_with(
    p: &P,
    instance: &str,
    extra: impl FnOnce(Turn) -> Turn,
) -> CheckResult {
    turn(p, instance, Turn::continue_as_new).await?;
    let item = fetch_instance(p, instance).await?;
    extra(Turn::next_execution(&item)).commit(p, &item).await
}

pub(crate) async fn continue_as_new(p: &P, instance: &str) -> CheckResult {
    continue_as_new_with(p, instance, |t| t).await
}

/// Creates `instance` with a first turn that enqueues `items` on the worker queue.
pub(crate) async fn seed_work(p: &P, instance: &str, items: Vec<NewWorkItem>) -> CheckResult {
    start_with(p, instance, |t| items.into_iter().fold(t, Turn::work)).await
}

/// Enqueues more worker items from a further turn of an idle instance.
pub(crate) async fn add_work(p: &P, instance: &str, items: Vec<NewWorkItem>) -> CheckResult {
    turn(p, instance, |t| items.into_iter().fold(t, Turn::work)).await
}

// ---- before/after comparison ------------------------------------------------------------------------

/// Everything a failed call could have touched, seen through the client API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    instances: Vec<String>,
    info: Option<InstanceInfo>,
    executions: Vec<u64>,
    history: Vec<HistoryRecord>,
    custom_status: Option<CustomStatus>,
    kv: Vec<KvEntry>,
    depths: QueueDepths,
}

/// Captures what clients can see of `instance` and of the store as a whole.
pub(crate) async fn snapshot(p: &P, instance: &str) -> Result<Snapshot, CheckError> {
    let info = p.get_instance_info(instance).await?;
    let execution = info.as_ref().map_or(1, |i| i.current_execution_id);
    let mut instances = p.list_instances(None).await?;
    instances.sort();
    let mut kv = p.get_kv_entries(instance).await?;
    kv.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Snapshot {
        instances,
        executions: p.list_executions(instance).await?,
        history: p.read_history(instance, execution).await?,
        custom_status: p.get_custom_status(instance).await?,
        kv,
        depths: p.get_queue_depths().await?,
        info,
    })
}

/// Fails unless nothing visible changed since `before`.
pub(crate) async fn ensure_unchanged(p: &P, instance: &str, before: &Snapshot, why: &str) -> CheckResult {
    let after = snapshot(p, instance).await?;
    ensure_eq!(after.instances, before.instances, "{why}: instances");
    ensure_eq!(after.info, before.info, "{why}: instance info");
    ensure_eq!(after.executions, before.executions, "{why}: executions");
    ensure_eq!(after.history, before.history, "{why}: history");
    ensure_eq!(after.custom_status, before.custom_status, "{why}: custom status");
    ensure_eq!(after.kv, before.kv, "{why}: KV");
    ensure_eq!(after.depths, before.depths, "{why}: queue depths");
    Ok(())
}

/// A turn that touches everything: history, status, output, custom status, KV, worker items, a message
/// to `other`, a child start and a timer. Used to prove that a refused ack applies none of it.
pub(crate) fn everything(turn: Turn, other: &str) -> Turn {
    let instance = turn.instance_id.clone();
    turn.events(2)
        .kv_set("k", "v", now_ms())
        .custom_status(Some("busy"))
        .work(work_item(&instance, 90))
        .message(external_event(other, "e", "from a refused ack"))
        .message(child_start_message("child-of-refused-ack", &instance))
        .message(timer_message(&instance, 91, now_ms() + 3_600_000))
        .complete("\"out\"")
}
