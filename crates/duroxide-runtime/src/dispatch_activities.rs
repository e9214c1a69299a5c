//! The activity dispatcher: fetch a work item, run its activity with lease renewal and cancellation,
//! and ack its completion. Also keeps this runtime's session leases alive.

use std::sync::Arc;
use std::time::Duration;

use duroxide_core::codec;
use duroxide_core::context::SYSCALL_GET_KV_VALUE;
use duroxide_core::message::ActivityWork;
use duroxide_core::provider::{NewMessage, ProviderErrorKind, SessionRouting, WorkItemLease, WorkerFetch};
use duroxide_core::{ErrorDetails, ErrorKind, OrchestratorMessage};

use crate::activity::{ActivityContext, ActivityFuture, ActivityHandler};
use crate::cancel::CancelSignal;
use crate::dispatch_orchestrations::{panic_message, ErrorBackoff};
use crate::metrics::Metrics;
use crate::pending_acks::{PendingAck, PendingAcks};
use crate::runtime::Shared;

/// One worker slot: loops until the runtime stops. An activity's completion is acked on a task of
/// its own while the slot goes on to its next item (see `pending_acks`).
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = ErrorBackoff::default();
    let mut acks = PendingAcks::default();
    while !shared.stopping() {
        acks.make_room().await;
        let request = WorkerFetch {
            lock_timeout: shared.options.worker_lock_timeout,
            tag_filter: shared.options.worker_tag_filter.clone(),
            session: Some(SessionRouting {
                owner_id: shared.node_id.clone(),
                lease: shared.sessions.lease(),
                may_claim_new: shared.sessions.may_claim_new(),
            }),
        };
        let fetched = shared
            .provider
            .fetch_work_item(&request, shared.options.dispatcher_poll_interval)
            .await;
        match fetched {
            Ok(Some(lease)) => {
                backoff.reset();
                Metrics::inc(&shared.metrics.worker_dispatcher_items_fetched);
                let session = lease.session_id.clone();
                if let Some(s) = &session {
                    shared.sessions.begin(s);
                }
                if let Some(ack) = execute(&shared, lease).await {
                    acks.push(ack);
                }
                if let Some(s) = &session {
                    shared.sessions.end(s);
                }
            }
            Ok(None) => backoff.reset(),
            Err(error) => {
                Metrics::inc(&shared.metrics.provider_errors);
                tracing::warn!(target: "duroxide::runtime", %error, "fetching a work item failed");
                backoff.wait(&shared).await;
            }
        }
    }
    acks.finish(&shared.hard_stop).await;
}

/// The completion message for an activity, built from the lease's explicit identity (so it can be
/// sent even when the payload itself is unreadable).
fn completion(lease: &WorkItemLease, result: Result<String, ErrorDetails>) -> NewMessage {
    let (execution_id, event_id) = (lease.activity.execution_id, lease.activity.event_id);
    let message = match result {
        Ok(result) => OrchestratorMessage::ActivityCompleted {
            execution_id,
            event_id,
            result,
        },
        Err(error) => OrchestratorMessage::ActivityFailed {
            execution_id,
            event_id,
            error,
        },
    };
    NewMessage {
        instance_id: lease.activity.instance_id.clone(),
        payload: codec::encode_message(&message),
        visible_at_ms: None,
        creates: None,
    }
}

/// Runs the item's activity; returns the ack of its completion, for the caller to await (the rare
/// outcomes — poison, unreadable, unregistered, built-in calls — are acked before returning).
async fn execute(shared: &Arc<Shared>, lease: WorkItemLease) -> Option<PendingAck> {
    let max = shared.options.max_attempts;
    if lease.attempt > max {
        let message = format!(
            "activity {} of instance {} was fetched {} times without completing (max_attempts {max})",
            lease.activity.event_id, lease.activity.instance_id, lease.attempt
        );
        Metrics::inc(&shared.metrics.activity_poison);
        finish(shared, &lease, Err(ErrorDetails::new(ErrorKind::Poison, message))).await;
        return None;
    }
    let work = match codec::decode_activity(&lease.payload) {
        Ok(work) => work,
        Err(error) => {
            let reason = format!(
                "work item for instance {} is unreadable: {error}",
                lease.activity.instance_id
            );
            retry_or_fail(shared, &lease, ErrorKind::Poison, reason).await;
            return None;
        }
    };
    if work.name == SYSCALL_GET_KV_VALUE {
        let result = syscall_get_kv_value(shared, &work).await;
        finish(shared, &lease, result).await;
        return None;
    }
    let name = work.name.clone();
    // An execution the orchestration dispatcher began inline and committed this item for when it
    // ran long: take its result rather than run the activity a second time.
    let (cancel, mut activity, permit) = match shared.inline.take_detached(&lease.activity) {
        Some(detached) => {
            let result = detached.result;
            let outcome: ActivityFuture = Box::pin(async move {
                match result.await {
                    Ok(outcome) => outcome,
                    // Dropped only at the hard stop, which ends this wait too and hands the item
                    // back: that is no outcome of the activity.
                    Err(_) => std::future::pending().await,
                }
            });
            (detached.cancel, outcome, None)
        }
        None => {
            let Some(handler) = shared.activities.get(&work.name) else {
                let reason = format!(
                    "activity {:?} is not registered on worker {}",
                    work.name, shared.node_id
                );
                retry_or_fail(shared, &lease, ErrorKind::Configuration, reason).await;
                return None;
            };
            // Shared with activities run inline, so that together they stay within
            // `worker_concurrency`.
            let permit = shared.activity_permits.clone().acquire_owned().await.ok();
            let cancel = CancelSignal::default();
            let activity = invoke(shared, handler, Arc::new(work), lease.attempt, cancel.clone());
            (cancel, activity, permit)
        }
    };
    let started = std::time::Instant::now();
    shared.track_running(lease.activity.clone(), cancel.clone());
    // Renew often enough that a cancellation committed by another process (which deletes the item)
    // is noticed within about half a second, and the lease never lapses while the activity runs.
    let renew_every = (shared.options.worker_lock_timeout / 3).min(Duration::from_millis(500));
    // First renewal one period from now. (`interval`'s immediate first tick is not free: awaiting it
    // waits for the timer wheel's next millisecond, which cost every activity up to 1 ms.)
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    let outcome = loop {
        tokio::select! {
            outcome = &mut activity => break Some(outcome),
            _ = ticker.tick(), if !cancel.is_cancelled() => {
                match shared.provider.renew_work_item_lock(&lease.lock_token, shared.options.worker_lock_timeout).await {
                    Ok(()) => {}
                    Err(e) if e.kind == ProviderErrorKind::LockLost => cancel.cancel(),
                    Err(error) => {
                        Metrics::inc(&shared.metrics.provider_errors);
                        tracing::warn!(target: "duroxide::runtime", %error, "renewing an activity lease failed");
                    }
                }
            }
            _ = shared.hard_stop.cancelled() => break None,
        }
    };
    shared.untrack_running(&lease.activity);
    // Only a run of this slot's own says how long the activity takes (a detached execution's
    // driver records its whole run).
    if outcome.is_some() && permit.is_some() {
        shared.inline.record_time(&name, started.elapsed());
    }
    drop(permit);
    let Some(result) = outcome else {
        // Shutdown timed out: hand the item back so another runtime runs it at once.
        cancel.cancel();
        drop(activity);
        let _ = shared.provider.abandon_work_item(&lease.lock_token, None).await;
        return None;
    };
    if cancel.is_cancelled() {
        tracing::debug!(target: "duroxide::runtime", instance_id = %lease.activity.instance_id, activity_id = lease.activity.event_id, "activity was cancelled; its result is discarded");
        return None;
    }
    match &result {
        Ok(_) => Metrics::inc(&shared.metrics.activity_success),
        Err(_) => Metrics::inc(&shared.metrics.activity_app_errors),
    }
    let shared = shared.clone();
    Some(Box::pin(async move {
        finish(&shared, &lease, result.map_err(ErrorDetails::application)).await;
    }))
}

/// Starts the activity `work` names with `handler` (the worker slot's run and an inline one alike):
/// a panic in it becomes its failure rather than unwinding into the dispatcher.
pub(crate) fn invoke(
    shared: &Shared,
    handler: Arc<dyn ActivityHandler>,
    work: Arc<ActivityWork>,
    attempt: u32,
    cancel: CancelSignal,
) -> ActivityFuture {
    let input = work.input.clone();
    let ctx = ActivityContext {
        work,
        worker_id: Arc::from(shared.node_id.as_str()),
        attempt,
        cancel,
        provider: shared.provider.clone(),
    };
    let activity = CatchPanic(handler.invoke(ctx, input));
    Box::pin(async move {
        activity
            .await
            .unwrap_or_else(|panic| Err(format!("activity panicked: {}", panic_message(panic.as_ref()))))
    })
}

/// Polls an activity's future, turning a panic into an error instead of unwinding into the
/// dispatcher. (Cheaper than a task of its own per activity, which costs a spawn and a wake-up.)
struct CatchPanic(ActivityFuture);

impl std::future::Future for CatchPanic {
    type Output = Result<Result<String, String>, Box<dyn std::any::Any + Send>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// Unreadable payloads and unknown names: back off while attempts remain, then fail the activity.
async fn retry_or_fail(shared: &Shared, lease: &WorkItemLease, kind: ErrorKind, reason: String) {
    if lease.attempt >= shared.options.max_attempts {
        match kind {
            ErrorKind::Configuration => Metrics::inc(&shared.metrics.activity_config_errors),
            _ => Metrics::inc(&shared.metrics.activity_poison),
        }
        let message = format!("{reason} (gave up after {} attempts)", lease.attempt);
        return finish(shared, lease, Err(ErrorDetails::new(kind, message))).await;
    }
    let delay = Duration::from_millis((250u64 << lease.attempt.min(7)).min(30_000));
    tracing::warn!(target: "duroxide::runtime", attempt = lease.attempt, "{reason}; retrying in {} ms", delay.as_millis());
    if let Err(error) = shared
        .provider
        .abandon_work_item(&lease.lock_token, Some(delay))
        .await
    {
        Metrics::inc(&shared.metrics.provider_errors);
        tracing::warn!(target: "duroxide::runtime", %error, "abandoning a work item failed; its lease will expire");
    }
}

/// Acks the item with its completion, retrying transient failures.
async fn finish(shared: &Shared, lease: &WorkItemLease, result: Result<String, ErrorDetails>) {
    let message = completion(lease, result);
    let mut delay = Duration::from_millis(20);
    for attempt in 1..=6 {
        match shared
            .provider
            .ack_work_item(&lease.lock_token, Some(message.clone()))
            .await
        {
            // Waiting clients are not woken: a completion changes nothing they read until the turn
            // that takes it commits, which wakes them if it does.
            Ok(()) => return,
            Err(e) if e.kind == ProviderErrorKind::LockLost => {
                tracing::debug!(target: "duroxide::runtime", instance_id = %lease.activity.instance_id, "activity result discarded: {e}");
                return;
            }
            Err(error) => {
                Metrics::inc(&shared.metrics.provider_errors);
                tracing::warn!(target: "duroxide::runtime", attempt, %error, "acking a work item failed");
                if error.kind != ProviderErrorKind::Retryable || shared.hard_stop.is_cancelled() {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    let _ = shared.provider.abandon_work_item(&lease.lock_token, None).await;
}

/// The built-in activity behind `get_kv_value_from_instance`.
async fn syscall_get_kv_value(shared: &Shared, work: &ActivityWork) -> Result<String, ErrorDetails> {
    #[derive(serde::Deserialize)]
    struct Request {
        instance_id: String,
        key: String,
    }
    let request: Request = serde_json::from_str(&work.input)
        .map_err(|e| ErrorDetails::application(format!("bad get_kv_value request: {e}")))?;
    match shared
        .provider
        .get_kv_value(&request.instance_id, &request.key)
        .await
    {
        Ok(value) => Ok(serde_json::to_string(&value).unwrap_or_else(|_| "null".into())),
        Err(error) => Err(ErrorDetails::new(ErrorKind::Infrastructure, error.to_string())),
    }
}

/// Renews the leases of sessions in use and releases idle ones, until the runtime stops.
pub(crate) async fn maintain_sessions(shared: Arc<Shared>) {
    let lease = shared.sessions.lease();
    let period = (lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shared.stop.cancelled() => return,
        }
        let (renew, idle) = shared.sessions.sweep();
        for session in idle {
            let _ = shared.provider.release_session(&shared.node_id, &session).await;
        }
        if !renew.is_empty() {
            if let Err(error) = shared
                .provider
                .renew_session_leases(&shared.node_id, &renew, lease)
                .await
            {
                Metrics::inc(&shared.metrics.provider_errors);
                tracing::warn!(target: "duroxide::runtime", %error, "renewing session leases failed");
            }
        }
    }
}
