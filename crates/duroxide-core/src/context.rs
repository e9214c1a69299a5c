//! The orchestration context: the deterministic API orchestration code calls (Rust `async fn`s).
//!
//! Every scheduling call records a command at once (so Python tasks and Rust futures behave alike) and
//! returns a [`DurableFuture`] resolved by the engine from history. Calls that change state (custom
//! status, KV) or read nondeterministic values (`utc_now`, `new_guid`) are recorded as history events
//! too, so replay reproduces them without asking the outside world.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::compose::{self, Either, JoinAll, SelectAll};
use crate::engine::{lock, Action, ExecState, LogLevel, SlotKind};
use crate::error::{ErrorDetails, ErrorKind};
use crate::history::EventKind;
use crate::limits;
use crate::message::ActivityWork;
use crate::provider::{KvChange, KvEntry};
use crate::retry::RetryPolicy;

/// Name of the built-in activity that reads another instance's KV value (served by the runtime).
pub const SYSCALL_GET_KV_VALUE: &str = "__duroxide_syscall:get_kv_value";

/// Routing options of one activity call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityOptions {
    /// Run on the worker slot that owns this session.
    pub session_id: Option<String>,
    /// Run only on workers whose tag filter accepts this tag.
    pub tag: Option<String>,
}

/// Handle to the running execution, given to orchestration code. Cheap to clone.
#[derive(Clone)]
pub struct OrchestrationContext {
    state: Arc<Mutex<ExecState>>,
}

impl std::fmt::Debug for OrchestrationContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.state);
        f.debug_struct("OrchestrationContext")
            .field("instance_id", &st.instance_id)
            .field("execution_id", &st.execution_id)
            .finish_non_exhaustive()
    }
}

fn to_error_string(r: Result<String, ErrorDetails>) -> Result<String, String> {
    r.map_err(|e| e.to_string())
}

fn to_unit(_: Result<String, ErrorDetails>) {}

fn to_value(r: Result<String, ErrorDetails>) -> String {
    r.unwrap_or_default()
}

fn to_detailed(r: Result<String, ErrorDetails>) -> Result<String, ErrorDetails> {
    r
}

impl OrchestrationContext {
    pub(crate) fn new(state: Arc<Mutex<ExecState>>) -> Self {
        OrchestrationContext { state }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, ExecState> {
        lock(&self.state)
    }

    // ---- identity -----------------------------------------------------------------------------------

    pub fn instance_id(&self) -> String {
        self.st().instance_id.clone()
    }

    pub fn execution_id(&self) -> u64 {
        self.st().execution_id
    }

    pub fn orchestration_name(&self) -> String {
        self.st().name.clone()
    }

    pub fn orchestration_version(&self) -> String {
        self.st().version.clone()
    }

    /// True while the code re-runs over recorded history (its effects were already carried out).
    pub fn is_replaying(&self) -> bool {
        self.st().replaying
    }

    /// Deterministic time: the timestamp of the history event being processed, in epoch ms.
    /// Prefer [`OrchestrationContext::utc_now`], which records the value it returns.
    pub fn current_time_ms(&self) -> u64 {
        self.st().now_ms
    }

    // ---- activities ---------------------------------------------------------------------------------

    /// Schedules an activity; resolves to its result or its error message.
    pub fn schedule_activity(
        &self,
        name: &str,
        input: impl Into<String>,
    ) -> DurableFuture<Result<String, String>> {
        self.schedule_activity_with_options(name, input, &ActivityOptions::default())
    }

    /// Schedules an activity on the worker slot that owns `session_id`.
    pub fn schedule_activity_on_session(
        &self,
        name: &str,
        input: impl Into<String>,
        session_id: &str,
    ) -> DurableFuture<Result<String, String>> {
        let options = ActivityOptions {
            session_id: Some(session_id.to_string()),
            tag: None,
        };
        self.schedule_activity_with_options(name, input, &options)
    }

    /// Schedules an activity for workers that accept `tag`.
    pub fn schedule_activity_with_tag(
        &self,
        name: &str,
        input: impl Into<String>,
        tag: &str,
    ) -> DurableFuture<Result<String, String>> {
        let options = ActivityOptions {
            session_id: None,
            tag: Some(tag.to_string()),
        };
        self.schedule_activity_with_options(name, input, &options)
    }

    /// Schedules an activity with explicit routing options.
    pub fn schedule_activity_with_options(
        &self,
        name: &str,
        input: impl Into<String>,
        options: &ActivityOptions,
    ) -> DurableFuture<Result<String, String>> {
        self.schedule_activity_detailed(name, input, options)
            .map_output(to_error_string)
    }

    /// Like [`OrchestrationContext::schedule_activity_with_options`], keeping the failure's kind.
    pub fn schedule_activity_detailed(
        &self,
        name: &str,
        input: impl Into<String>,
        options: &ActivityOptions,
    ) -> DurableFuture<Result<String, ErrorDetails>> {
        let input = input.into();
        let mut st = self.st();
        if let Some(tag) = &options.tag {
            if let Err(message) = limits::validate_tag(tag) {
                st.fail_fatal(ErrorKind::LimitExceeded, format!("activity {name:?}: {message}"));
                return DurableFuture::never(self.state.clone(), to_detailed);
            }
        }
        let kind = EventKind::ActivityScheduled {
            name: name.to_string(),
            input,
            session_id: options.session_id.clone(),
            tag: options.tag.clone(),
        };
        let Some(event) = st.record_command(kind) else {
            return DurableFuture::never(self.state.clone(), to_detailed);
        };
        st.new_slot(event.event_id, SlotKind::Activity);
        if let EventKind::ActivityScheduled {
            name,
            input,
            session_id,
            tag,
        } = event.kind
        {
            let work = ActivityWork {
                instance_id: st.instance_id.clone(),
                execution_id: st.execution_id,
                event_id: event.event_id,
                name,
                input,
                session_id,
                tag,
                orchestration_name: st.name.clone(),
                orchestration_version: st.version.clone(),
            };
            st.act(Action::ScheduleActivity(work));
        }
        DurableFuture::new(self.state.clone(), event.event_id, to_detailed)
    }

    /// Schedules an activity and retries it under `policy` (durable: attempts and backoff timers are
    /// history, so the retry loop replays deterministically).
    pub async fn schedule_activity_with_retry(
        &self,
        name: &str,
        input: impl Into<String>,
        policy: &RetryPolicy,
    ) -> Result<String, String> {
        crate::retry::run(self, name, &input.into(), policy, &ActivityOptions::default()).await
    }

    /// [`OrchestrationContext::schedule_activity_with_retry`] with every attempt on one session.
    pub async fn schedule_activity_with_retry_on_session(
        &self,
        name: &str,
        input: impl Into<String>,
        policy: &RetryPolicy,
        session_id: &str,
    ) -> Result<String, String> {
        let options = ActivityOptions {
            session_id: Some(session_id.to_string()),
            tag: None,
        };
        crate::retry::run(self, name, &input.into(), policy, &options).await
    }

    /// Retry with explicit routing options.
    pub async fn schedule_activity_with_retry_and_options(
        &self,
        name: &str,
        input: impl Into<String>,
        policy: &RetryPolicy,
        options: &ActivityOptions,
    ) -> Result<String, String> {
        crate::retry::run(self, name, &input.into(), policy, options).await
    }

    /// Typed activity call: serialises the input and deserialises the output with serde_json.
    pub async fn schedule_activity_typed<I: Serialize, O: DeserializeOwned>(
        &self,
        name: &str,
        input: &I,
    ) -> Result<O, String> {
        let input =
            serde_json::to_string(input).map_err(|e| format!("cannot serialise input of {name}: {e}"))?;
        let out = self.schedule_activity(name, input).await?;
        serde_json::from_str(&out).map_err(|e| format!("cannot deserialise output of {name}: {e}"))
    }

    // ---- timers, events, queues ---------------------------------------------------------------------

    /// A durable timer that fires after `delay` (it survives restarts).
    pub fn schedule_timer(&self, delay: Duration) -> DurableFuture<()> {
        let mut st = self.st();
        let fire_at_ms = st.now_ms.saturating_add(delay.as_millis() as u64);
        let Some(event) = st.record_command(EventKind::TimerCreated { fire_at_ms }) else {
            return DurableFuture::never(self.state.clone(), to_unit);
        };
        st.new_slot(event.event_id, SlotKind::Timer);
        if let EventKind::TimerCreated { fire_at_ms } = event.kind {
            st.act(Action::StartTimer {
                event_id: event.event_id,
                fire_at_ms,
            });
        }
        DurableFuture::new(self.state.clone(), event.event_id, to_unit)
    }

    /// Waits for the next external event of this name. Events raised before the wait are buffered and
    /// delivered to waits in FIFO order.
    pub fn wait_for_event(&self, name: &str) -> DurableFuture<String> {
        self.subscribe(SlotKind::External, name)
    }

    /// Waits for the next message of this queue (FIFO; messages survive continue-as-new).
    pub fn dequeue_event(&self, queue: &str) -> DurableFuture<String> {
        self.subscribe(SlotKind::Queue, queue)
    }

    /// Typed [`OrchestrationContext::wait_for_event`].
    pub async fn wait_for_event_typed<T: DeserializeOwned>(&self, name: &str) -> Result<T, String> {
        let data = self.wait_for_event(name).await;
        serde_json::from_str(&data).map_err(|e| format!("event {name:?} does not decode: {e}"))
    }

    /// Typed [`OrchestrationContext::dequeue_event`].
    pub async fn dequeue_event_typed<T: DeserializeOwned>(&self, queue: &str) -> Result<T, String> {
        let data = self.dequeue_event(queue).await;
        serde_json::from_str(&data).map_err(|e| format!("message of queue {queue:?} does not decode: {e}"))
    }

    fn subscribe(&self, kind: SlotKind, name: &str) -> DurableFuture<String> {
        let mut st = self.st();
        let command = match kind {
            SlotKind::External => EventKind::ExternalSubscribed {
                name: name.to_string(),
            },
            _ => EventKind::QueueSubscribed {
                queue: name.to_string(),
            },
        };
        let Some(event) = st.record_command(command) else {
            return DurableFuture::never(self.state.clone(), to_value);
        };
        let id = event.event_id;
        st.new_slot(id, kind);
        let buffer = if kind == SlotKind::External {
            &mut st.event_buffer
        } else {
            &mut st.queue_buffer
        };
        let buffered = buffer.get_mut(name).and_then(|q| q.pop_front());
        if buffer.get(name).is_some_and(|q| q.is_empty()) {
            buffer.remove(name);
        }
        match buffered {
            Some(data) => {
                // Resolved before anyone polled: there is no waker to wake.
                let _ = st.resolve(id, Ok(data));
            }
            None => {
                let waiters = if kind == SlotKind::External {
                    &mut st.event_waiters
                } else {
                    &mut st.queue_waiters
                };
                waiters.entry(name.to_string()).or_default().push_back(id);
            }
        }
        DurableFuture::new(self.state.clone(), id, to_value)
    }

    // ---- sub-orchestrations and detached starts -----------------------------------------------------

    /// Starts a child orchestration and waits for its output. The child's id is derived from this
    /// instance, execution and event: `<instance>::sub::<execution>.<event id>`.
    pub fn schedule_sub_orchestration(
        &self,
        name: &str,
        input: impl Into<String>,
    ) -> DurableFuture<Result<String, String>> {
        self.sub_orchestration(name, None, None, input.into())
            .map_output(to_error_string)
    }

    /// Starts a child orchestration with an explicit instance id and waits for its output.
    pub fn schedule_sub_orchestration_with_id(
        &self,
        name: &str,
        instance_id: &str,
        input: impl Into<String>,
    ) -> DurableFuture<Result<String, String>> {
        self.sub_orchestration(name, None, Some(instance_id), input.into())
            .map_output(to_error_string)
    }

    /// Starts a specific version of a child orchestration (`None` = latest).
    pub fn schedule_sub_orchestration_versioned(
        &self,
        name: &str,
        version: Option<&str>,
        input: impl Into<String>,
    ) -> DurableFuture<Result<String, String>> {
        self.sub_orchestration(name, version, None, input.into())
            .map_output(to_error_string)
    }

    /// Starts a specific version of a child orchestration under an explicit id.
    pub fn schedule_sub_orchestration_versioned_with_id(
        &self,
        name: &str,
        version: Option<&str>,
        instance_id: &str,
        input: impl Into<String>,
    ) -> DurableFuture<Result<String, String>> {
        self.sub_orchestration(name, version, Some(instance_id), input.into())
            .map_output(to_error_string)
    }

    /// Typed [`OrchestrationContext::schedule_sub_orchestration`].
    pub async fn schedule_sub_orchestration_typed<I: Serialize, O: DeserializeOwned>(
        &self,
        name: &str,
        input: &I,
    ) -> Result<O, String> {
        let input =
            serde_json::to_string(input).map_err(|e| format!("cannot serialise input of {name}: {e}"))?;
        let out = self.schedule_sub_orchestration(name, input).await?;
        serde_json::from_str(&out).map_err(|e| format!("cannot deserialise output of {name}: {e}"))
    }

    /// The general sub-orchestration call; the failure keeps its kind.
    pub fn sub_orchestration(
        &self,
        name: &str,
        version: Option<&str>,
        instance_id: Option<&str>,
        input: String,
    ) -> DurableFuture<Result<String, ErrorDetails>> {
        let mut st = self.st();
        if let Some(id) = instance_id {
            if let Err(message) = limits::validate_instance_id(id) {
                st.fail_fatal(
                    ErrorKind::Application,
                    format!("sub-orchestration {name:?}: {message}"),
                );
                return DurableFuture::never(self.state.clone(), to_detailed);
            }
        }
        // A derived child id needs this command's event id, known only when it is new; on replay the
        // recorded id is used and matching ignores the (empty) derived one.
        let child_id = match instance_id {
            Some(id) => id.to_string(),
            None if st.replaying => String::new(),
            // The execution id keeps children of successive executions apart (event ids restart).
            None => derived_child_id(&st.instance_id, st.execution_id, st.next_event_id),
        };
        let kind = EventKind::SubOrchestrationScheduled {
            name: name.to_string(),
            version: version.map(str::to_string),
            instance_id: child_id,
            input,
        };
        let Some(event) = st.record_command(kind) else {
            return DurableFuture::never(self.state.clone(), to_detailed);
        };
        let id = event.event_id;
        st.new_slot(id, SlotKind::SubOrchestration);
        if let EventKind::SubOrchestrationScheduled {
            name,
            version,
            instance_id,
            input,
        } = event.kind
        {
            if let Some(slot) = st.slots.get_mut(&id) {
                slot.child_instance = Some(instance_id.clone());
            }
            st.act(Action::StartSubOrchestration {
                event_id: id,
                instance_id,
                name,
                version,
                input,
            });
        }
        DurableFuture::new(self.state.clone(), id, to_detailed)
    }

    /// Starts another orchestration without waiting for it (fire-and-forget).
    pub fn start_orchestration(&self, name: &str, instance_id: &str, input: impl Into<String>) {
        self.start_orchestration_versioned(name, None, instance_id, input)
    }

    /// Fire-and-forget start of a specific version (`None` = latest).
    pub fn start_orchestration_versioned(
        &self,
        name: &str,
        version: Option<&str>,
        instance_id: &str,
        input: impl Into<String>,
    ) {
        let mut st = self.st();
        if let Err(message) = limits::validate_instance_id(instance_id) {
            st.fail_fatal(
                ErrorKind::Application,
                format!("start_orchestration {name:?}: {message}"),
            );
            return;
        }
        let kind = EventKind::OrchestrationChained {
            name: name.to_string(),
            version: version.map(str::to_string),
            instance_id: instance_id.to_string(),
            input: input.into(),
        };
        if let Some(event) = st.record_command(kind) {
            if let EventKind::OrchestrationChained {
                name,
                version,
                instance_id,
                input,
            } = event.kind
            {
                st.act(Action::StartDetached {
                    instance_id,
                    name,
                    version,
                    input,
                });
            }
        }
    }

    /// Ends this execution and starts a new one of the same instance with `input` (latest version).
    /// Unconsumed events and queue messages and the custom status carry over. Never resolves:
    /// write `return ctx.continue_as_new(input).await;`.
    pub fn continue_as_new(&self, input: impl Into<String>) -> ContinueAsNew {
        self.continue_as_new_versioned(input, None)
    }

    /// [`OrchestrationContext::continue_as_new`] onto a specific version (`None` = latest).
    pub fn continue_as_new_versioned(
        &self,
        input: impl Into<String>,
        version: Option<&str>,
    ) -> ContinueAsNew {
        let mut st = self.st();
        if st.continue_as_new.is_none() {
            st.continue_as_new = Some((input.into(), version.map(str::to_string)));
        }
        ContinueAsNew { _private: () }
    }

    // ---- recorded values ----------------------------------------------------------------------------

    /// The current time in epoch ms, recorded in history (replay returns the recorded value).
    pub fn utc_now(&self) -> u64 {
        let mut st = self.st();
        let now_ms = st.now_ms;
        match st.record_command(EventKind::UtcNowRecorded { now_ms }) {
            Some(Event {
                kind: EventKind::UtcNowRecorded { now_ms },
                ..
            }) => now_ms,
            _ => now_ms,
        }
    }

    /// A fresh UUID (version 4 format), recorded in history (replay returns the recorded value).
    pub fn new_guid(&self) -> String {
        let mut st = self.st();
        let guid = format_uuid_v4(st.next_random(), st.next_random());
        match st.record_command(EventKind::GuidRecorded { guid: guid.clone() }) {
            Some(Event {
                kind: EventKind::GuidRecorded { guid },
                ..
            }) => guid,
            _ => guid,
        }
    }

    // ---- custom status ------------------------------------------------------------------------------

    /// Sets the custom status clients see (fire-and-forget; survives replay and continue-as-new).
    pub fn set_custom_status(&self, status: impl Into<String>) {
        let status = status.into();
        let mut st = self.st();
        if status.len() > limits::MAX_CUSTOM_STATUS_BYTES {
            let message = format!(
                "custom status is {} bytes; MAX_CUSTOM_STATUS_BYTES is {}",
                status.len(),
                limits::MAX_CUSTOM_STATUS_BYTES
            );
            st.fail_fatal(ErrorKind::LimitExceeded, message);
            return;
        }
        self.change_custom_status(&mut st, Some(status));
    }

    /// Clears the custom status.
    pub fn reset_custom_status(&self) {
        let mut st = self.st();
        self.change_custom_status(&mut st, None);
    }

    fn change_custom_status(&self, st: &mut ExecState, status: Option<String>) {
        if st
            .record_command(EventKind::CustomStatusUpdated {
                status: status.clone(),
            })
            .is_some()
        {
            st.custom_status = status;
            if !st.replaying {
                st.custom_status_changed = true;
            }
        }
    }

    pub fn get_custom_status(&self) -> Option<String> {
        self.st().custom_status.clone()
    }

    // ---- KV -----------------------------------------------------------------------------------------

    /// Sets a KV value of this instance (readable by clients once the turn commits).
    /// Exceeding `MAX_KV_KEYS` or `MAX_KV_VALUE_BYTES` fails the orchestration.
    pub fn set_kv_value(&self, key: &str, value: impl Into<String>) {
        let value = value.into();
        let mut st = self.st();
        let breach = if key.is_empty() {
            Some("KV key must not be empty".to_string())
        } else if key.len() > limits::MAX_KV_KEY_BYTES {
            Some(format!(
                "KV key is {} bytes; MAX_KV_KEY_BYTES is {}",
                key.len(),
                limits::MAX_KV_KEY_BYTES
            ))
        } else if value.len() > limits::MAX_KV_VALUE_BYTES {
            Some(format!(
                "KV value for {key:?} is {} bytes; MAX_KV_VALUE_BYTES is {}",
                value.len(),
                limits::MAX_KV_VALUE_BYTES
            ))
        } else if !st.kv.contains_key(key) && st.kv.len() >= limits::MAX_KV_KEYS {
            Some(format!(
                "setting {key:?} would exceed MAX_KV_KEYS ({})",
                limits::MAX_KV_KEYS
            ))
        } else {
            None
        };
        if let Some(message) = breach {
            st.fail_fatal(ErrorKind::LimitExceeded, message);
            return;
        }
        if st
            .record_command(EventKind::KvSet {
                key: key.to_string(),
                value: value.clone(),
            })
            .is_some()
        {
            let updated_at_ms = st.now_ms;
            st.kv.insert(
                key.to_string(),
                KvEntry {
                    key: key.to_string(),
                    value: value.clone(),
                    updated_at_ms,
                },
            );
            st.kv_change(KvChange::Set {
                key: key.to_string(),
                value,
                updated_at_ms,
            });
        }
    }

    pub fn get_kv_value(&self, key: &str) -> Option<String> {
        self.st().kv.get(key).map(|e| e.value.clone())
    }

    /// A snapshot of all KV entries (key → value).
    pub fn get_kv_all_values(&self) -> std::collections::BTreeMap<String, String> {
        self.st()
            .kv
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect()
    }

    pub fn get_kv_all_keys(&self) -> Vec<String> {
        self.st().kv.keys().cloned().collect()
    }

    pub fn get_kv_length(&self) -> usize {
        self.st().kv.len()
    }

    pub fn clear_kv_value(&self, key: &str) {
        let mut st = self.st();
        if st
            .record_command(EventKind::KvCleared { key: key.to_string() })
            .is_some()
            && st.kv.remove(key).is_some()
        {
            st.kv_change(KvChange::Delete { key: key.to_string() });
        }
    }

    pub fn clear_all_kv_values(&self) {
        let mut st = self.st();
        if st.record_command(EventKind::KvClearedAll).is_some() {
            for key in std::mem::take(&mut st.kv).into_keys() {
                st.kv_change(KvChange::Delete { key });
            }
        }
    }

    /// Removes keys last updated before `cutoff_ms`; returns how many went.
    pub fn prune_kv_values_updated_before(&self, cutoff_ms: u64) -> usize {
        let mut st = self.st();
        if st.record_command(EventKind::KvPruned { cutoff_ms }).is_none() {
            return 0;
        }
        let old: Vec<String> = st
            .kv
            .values()
            .filter(|e| e.updated_at_ms < cutoff_ms)
            .map(|e| e.key.clone())
            .collect();
        for key in &old {
            st.kv.remove(key);
            st.kv_change(KvChange::Delete { key: key.clone() });
        }
        old.len()
    }

    /// Reads another instance's KV value through the runtime's built-in syscall activity.
    pub async fn get_kv_value_from_instance(
        &self,
        instance_id: &str,
        key: &str,
    ) -> Result<Option<String>, String> {
        let input = serde_json::json!({ "instance_id": instance_id, "key": key }).to_string();
        let out = self.schedule_activity(SYSCALL_GET_KV_VALUE, input).await?;
        serde_json::from_str(&out).map_err(|e| format!("syscall returned bad data: {e}"))
    }

    // ---- tracing ------------------------------------------------------------------------------------

    /// Writes a trace line (not during replay, so each line appears once).
    pub fn trace(&self, level: LogLevel, message: impl Into<String>) {
        self.st().log(level, message.into());
    }

    pub fn trace_info(&self, message: impl Into<String>) {
        self.trace(LogLevel::Info, message)
    }

    pub fn trace_warn(&self, message: impl Into<String>) {
        self.trace(LogLevel::Warn, message)
    }

    pub fn trace_error(&self, message: impl Into<String>) {
        self.trace(LogLevel::Error, message)
    }

    pub fn trace_debug(&self, message: impl Into<String>) {
        self.trace(LogLevel::Debug, message)
    }

    // ---- composition --------------------------------------------------------------------------------

    /// Waits for all futures; outputs in input order. Any number of futures.
    pub fn join<F: Future>(&self, futures: Vec<F>) -> JoinAll<F> {
        compose::join(futures)
    }

    /// Waits for the first future; the others are cancelled. Returns `(index, output)`.
    pub fn select<F: Future>(&self, futures: Vec<F>) -> SelectAll<F> {
        compose::select(futures)
    }

    pub async fn join2<A: Future, B: Future>(&self, a: A, b: B) -> (A::Output, B::Output) {
        compose::join2(a, b).await
    }

    pub async fn select2<A: Future, B: Future>(&self, a: A, b: B) -> Either<A::Output, B::Output> {
        compose::select2(a, b).await
    }
}

use crate::history::Event;

/// Formats 128 random bits as a version-4 UUID string.
fn format_uuid_v4(hi: u64, lo: u64) -> String {
    let hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
    let lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// A future resolved by the replay engine: an activity, timer, wait, dequeue or sub-orchestration.
/// Dropping it before it resolves cancels what it waits for.
#[must_use = "futures do nothing unless awaited; dropping one cancels its work"]
pub struct DurableFuture<T> {
    state: Arc<Mutex<ExecState>>,
    /// Scheduling event id; 0 for a future that never resolves (the call failed).
    slot: u64,
    map: fn(Result<String, ErrorDetails>) -> T,
    done: bool,
    _out: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for DurableFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableFuture")
            .field("event_id", &self.slot)
            .field("done", &self.done)
            .finish()
    }
}

impl<T> DurableFuture<T> {
    fn new(state: Arc<Mutex<ExecState>>, slot: u64, map: fn(Result<String, ErrorDetails>) -> T) -> Self {
        DurableFuture {
            state,
            slot,
            map,
            done: false,
            _out: PhantomData,
        }
    }

    fn never(state: Arc<Mutex<ExecState>>, map: fn(Result<String, ErrorDetails>) -> T) -> Self {
        Self::new(state, 0, map)
    }

    /// The scheduling event id this future waits on (0 if the call was refused).
    pub fn event_id(&self) -> u64 {
        self.slot
    }

    fn map_output<U>(mut self, map: fn(Result<String, ErrorDetails>) -> U) -> DurableFuture<U> {
        self.done = true; // disarm this handle's Drop: the new one owns the slot
        DurableFuture::new(self.state.clone(), self.slot, map)
    }
}

impl<T> Unpin for DurableFuture<T> {}

impl<T> Future for DurableFuture<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let result = {
            let mut st = lock(&self.state);
            match st.slots.get_mut(&self.slot) {
                Some(slot) if slot.result.is_some() => {
                    // Finished: forget the slot, so long executions do not accumulate them.
                    st.slots.remove(&self.slot).and_then(|s| s.result)
                }
                Some(slot) => {
                    slot.waker = Some(cx.waker().clone());
                    None
                }
                None => None,
            }
        };
        match result {
            Some(result) => {
                self.done = true;
                Poll::Ready((self.map)(result))
            }
            None => Poll::Pending,
        }
    }
}

impl<T> Drop for DurableFuture<T> {
    fn drop(&mut self) {
        if self.done || self.slot == 0 {
            return;
        }
        let mut st = lock(&self.state);
        let reason = st.drop_reason.clone();
        st.abandon(self.slot, &reason);
    }
}

/// The never-resolving future returned by `continue_as_new`.
#[must_use = "await it: `return ctx.continue_as_new(input).await;`"]
#[derive(Debug)]
pub struct ContinueAsNew {
    _private: (),
}

impl Future for ContinueAsNew {
    type Output = Result<String, String>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Pending
    }
}

/// The id of a child started without one: `<parent>::sub::<execution>.<event id>`, unique per parent
/// because the engine never reuses an (execution, event) pair. When that would pass the instance-id
/// limit, the parent part is cut and followed by a stable hash of the whole parent id (FNV-1a, the same
/// in every version), so the id stays addressable and distinct parents still get distinct children.
pub(crate) fn derived_child_id(parent: &str, execution_id: u64, event_id: u64) -> String {
    let suffix = format!("::sub::{execution_id}.{event_id}");
    if parent.len() + suffix.len() <= limits::MAX_INSTANCE_ID_BYTES {
        return format!("{parent}{suffix}");
    }
    let hash = parent.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let hash = format!("~{hash:016x}");
    let mut cut = limits::MAX_INSTANCE_ID_BYTES.saturating_sub(suffix.len() + hash.len());
    while !parent.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{hash}{suffix}", &parent[..cut])
}

#[cfg(test)]
mod tests {
    use super::derived_child_id;
    use crate::limits::{validate_instance_id, MAX_INSTANCE_ID_BYTES};

    #[test]
    fn a_derived_child_id_names_its_parent_and_position() {
        assert_eq!(derived_child_id("order-7", 2, 15), "order-7::sub::2.15");
    }

    #[test]
    fn a_derived_child_id_of_a_long_parent_stays_within_the_limit_and_distinct() {
        let a = "p".repeat(MAX_INSTANCE_ID_BYTES);
        let b = format!("{}q", "p".repeat(MAX_INSTANCE_ID_BYTES - 1));
        let multibyte = "é".repeat(MAX_INSTANCE_ID_BYTES / 2);
        for parent in [&a, &b, &multibyte] {
            let child = derived_child_id(parent, u64::MAX, u64::MAX);
            assert!(validate_instance_id(&child).is_ok(), "{child}");
            assert!(child.ends_with(&format!("::sub::{}.{}", u64::MAX, u64::MAX)));
            assert_eq!(
                child,
                derived_child_id(parent, u64::MAX, u64::MAX),
                "deterministic"
            );
        }
        assert_ne!(derived_child_id(&a, 1, 5), derived_child_id(&b, 1, 5));
        assert_ne!(derived_child_id(&a, 1, 5), derived_child_id(&a, 1, 6));
    }
}
