//! The orchestration dispatcher: fetch a locked instance, run its turn, ack it (or abandon it).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duroxide_core::provider::{
    CachedFetch, CustomStatus, CustomStatusChange, OrchestrationItem, ProviderErrorKind, TurnAck,
};
use duroxide_core::turn::{
    fail_item, process_cached_item, process_item, TurnDecision, TurnOptions, TurnOutcome, TurnReport,
};
use duroxide_core::{ErrorDetails, ErrorKind};

use crate::cache::{Cached, HistoryPrint};
use crate::client::OrchestrationState;
use crate::inline::{self, Decided};
use crate::metrics::Metrics;
use crate::pending_acks::{PendingAck, PendingAcks};
use crate::runtime::Shared;
use crate::{logging, notify};

/// Wall-clock time in epoch ms: the runtime is where time enters the engine.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Backoff after provider errors: grows to two seconds, resets on success.
#[derive(Debug, Default)]
pub(crate) struct ErrorBackoff(u32);

impl ErrorBackoff {
    pub async fn wait(&mut self, shared: &Shared) {
        self.0 = (self.0 + 1).min(6);
        let delay = Duration::from_millis(30 << self.0).min(Duration::from_secs(2));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.stop.cancelled() => {}
        }
    }

    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

/// The text of a panic payload (`panic!` with a message gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_string())
}

/// One dispatcher slot: loops until the runtime stops. A turn's ack is committed on a task of its
/// own while the slot goes on to its next item (see `pending_acks`); the instance itself stays
/// locked until its ack commits.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = ErrorBackoff::default();
    let options = &shared.options;
    let mut acks = PendingAcks::default();
    while !shared.stopping() {
        acks.make_room().await;
        let fetched = shared
            .provider
            .fetch_orchestration_item_cached(
                options.orchestrator_lock_timeout,
                options.dispatcher_poll_interval,
                shared.cache.clone(),
            )
            .await;
        match fetched {
            Ok(Some(fetched)) => {
                backoff.reset();
                Metrics::inc(&shared.metrics.orch_dispatcher_items_fetched);
                if let Some(ack) = handle(&shared, fetched).await {
                    acks.push(ack);
                }
            }
            Ok(None) => backoff.reset(),
            Err(error) => {
                Metrics::inc(&shared.metrics.provider_errors);
                tracing::warn!(target: "duroxide::runtime", %error, "fetching an orchestration item failed");
                backoff.wait(&shared).await;
            }
        }
    }
    acks.finish(&shared.hard_stop).await;
}

/// What running the turn's code gave.
enum Ran {
    Decided(TurnDecision),
    /// Not decided yet: the turn runs from the whole history (which the fetch may have left out; see
    /// `process_cached_item`).
    NeedsHistory,
    /// The orchestration code panicked, with this message.
    Panicked(String),
}

/// Runs `turn` (which runs user code), turning a panic into [`Ran::Panicked`]: a panic must fail that
/// instance, not this dispatcher slot.
fn guarded(turn: impl FnOnce() -> Option<TurnDecision>) -> Ran {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(turn)) {
        Ok(Some(decision)) => Ran::Decided(decision),
        Ok(None) => Ran::NeedsHistory,
        Err(panic) => Ran::Panicked(format!(
            "orchestration code panicked: {}",
            panic_message(panic.as_ref())
        )),
    }
}

/// Runs the fetched item's turn; returns its commit, for the caller to await (an abandon is done
/// before returning).
async fn handle(shared: &Arc<Shared>, fetched: CachedFetch) -> Option<PendingAck> {
    let CachedFetch {
        mut item,
        omitted_history_len,
    } = fetched;
    // An engine that saw another history than the stored one (see `cache`) is dropped here; the core
    // checks the length.
    let stored_print = omitted_history_len
        .is_none()
        .then(|| HistoryPrint::of(&item.history));
    let mut cached = shared
        .cache
        .take(&item.instance_id)
        .filter(|cached| cached.saw(stored_print));
    // The print of the history this turn runs on, to extend with what it appends.
    let mut print = stored_print.or_else(|| cached.as_ref().and_then(|cached| cached.print));
    let options = turn_options(shared);
    let mut ran = match omitted_history_len {
        Some(stored_len) => match cached.take() {
            Some(cached) => guarded(|| process_cached_item(&item, cached.engine, stored_len, &options)),
            None => Ran::NeedsHistory,
        },
        // The whole history is here: `process_item` decides whether the cached engine fits.
        None => Ran::NeedsHistory,
    };
    if omitted_history_len.is_some() && !matches!(ran, Ran::Decided(_)) {
        // Rare: the cached engine went away or does not fit after all; read what the fetch left out.
        match shared
            .provider
            .read_history(&item.instance_id, item.instance.current_execution_id)
            .await
        {
            Ok(history) => {
                print = Some(HistoryPrint::of(&history));
                item.history = history;
            }
            Err(error) => {
                Metrics::inc(&shared.metrics.provider_errors);
                tracing::warn!(target: "duroxide::runtime", instance_id = %item.instance_id, %error, "reading the history failed; retrying the turn");
                let _ = shared
                    .provider
                    .abandon_orchestration_item(&item.lock_token, None)
                    .await;
                return None;
            }
        }
    }
    if matches!(ran, Ran::NeedsHistory) {
        let engine = cached.map(|cached| cached.engine);
        ran = guarded(|| Some(process_item(&item, &shared.orchestrations, engine, &options)));
    }
    let decision = match ran {
        Ran::Decided(decision) => decision,
        Ran::Panicked(message) => {
            tracing::error!(target: "duroxide::runtime", instance_id = %item.instance_id, "{message}");
            fail_item(&item, ErrorDetails::application(message))
        }
        Ran::NeedsHistory => unreachable!("process_item always decides"),
    };
    match decision {
        TurnDecision::Ack { ack, engine, report } => {
            let decided = Decided {
                ack: *ack,
                engine,
                reports: vec![report],
            };
            let Decided { ack, engine, reports } =
                inline::run_chain(shared, &item.instance_id, decided).await;
            let cancels = ack.cancel_activities.clone();
            let wakes_waiters = changes_what_waiters_read(&ack);
            let finished = finished_state(&item, &ack);
            // Cache the engine before committing: the commit releases the instance lock, and the
            // instance's next turn may be fetched at once (a fast activity) — it must find the engine.
            // Until then the lock keeps everyone else away. An engine whose turn did not commit is
            // ahead of the stored history, which `process_item` detects; it is dropped anyway.
            if let Some(engine) = engine {
                let print = print.map(|print| print.extend(&ack.history));
                shared
                    .cache
                    .put(item.instance_id.clone(), Cached { engine, print });
            }
            let shared = shared.clone();
            Some(Box::pin(async move {
                if commit(&shared, &item, ack).await {
                    shared.cancel_local(&cancels);
                    for report in &reports {
                        record(&shared, &item, report);
                    }
                    if let Some(state) = finished {
                        notify::instance_finished(&shared.provider, &item.instance_id, state);
                    } else if wakes_waiters {
                        notify::instance_changed(&item.instance_id);
                    }
                } else {
                    drop(shared.cache.take(&item.instance_id));
                }
            }))
        }
        TurnDecision::Abandon { delay, reason } => {
            tracing::warn!(target: "duroxide::runtime", instance_id = %item.instance_id, attempt = item.attempt, "{reason}; retrying in {} ms", delay.as_millis());
            if let Err(error) = shared
                .provider
                .abandon_orchestration_item(&item.lock_token, Some(delay))
                .await
            {
                Metrics::inc(&shared.metrics.provider_errors);
                tracing::warn!(target: "duroxide::runtime", instance_id = %item.instance_id, %error, "abandon failed; the lock will expire");
            }
            None
        }
    }
}

/// Whether a committed turn changes what a waiting client reads: the status (a terminal or
/// continued-as-new execution), the custom status, or KV values. Most turns of a running instance do
/// none of these, and waking its waiters for them only costs each a status read that finds nothing
/// new (a fan-out's waiting client was woken by about every batch of completions).
fn changes_what_waiters_read(ack: &TurnAck) -> bool {
    ack.changes_status() || !ack.kv_changes.is_empty()
}

/// The state a client reads once `ack` commits, when it ends the instance: the status and output
/// the ack writes, and the custom status as fetched (the lock kept it) or as the ack sets it. `None`
/// for a turn that does not end the instance, or leaves its output column as it was.
fn finished_state(item: &OrchestrationItem, ack: &TurnAck) -> Option<OrchestrationState> {
    let status = ack.status?.instance_status();
    if !status.is_terminal() || ack.execution_id != item.instance.current_execution_id {
        return None;
    }
    let output = ack.output.clone()?;
    let custom = match &ack.custom_status {
        CustomStatusChange::Unchanged => item.custom_status.clone(),
        CustomStatusChange::Set(status) => CustomStatus {
            status: status.clone(),
            version: item.custom_status.version + 1,
        },
    };
    Some(OrchestrationState::from_instance(status, Some(output), custom))
}

/// What a turn starting now takes from outside the core: the time, fresh entropy, the attempt cap.
pub(crate) fn turn_options(shared: &Shared) -> TurnOptions {
    TurnOptions {
        now_ms: now_ms(),
        entropy: entropy(),
        max_attempts: shared.options.max_attempts,
    }
}

/// Fresh random bits for a turn's `new_guid`: a per-thread generator seeded once from the OS, so a
/// turn costs no system call. (SplitMix64: unique per draw within a thread, unpredictable across
/// processes through the random seed — all `new_guid` needs.)
fn entropy() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Acks the turn, retrying transient failures; a turn whose ack cannot be committed is handed back
/// (its messages stay queued), never failed. Returns whether the ack committed.
async fn commit(shared: &Shared, item: &OrchestrationItem, ack: TurnAck) -> bool {
    let mut delay = Duration::from_millis(20);
    for attempt in 1..=6 {
        match shared
            .provider
            .ack_orchestration_item(&item.lock_token, ack.clone())
            .await
        {
            Ok(()) => return true,
            Err(error) => {
                Metrics::inc(&shared.metrics.provider_errors);
                let retry = error.kind == ProviderErrorKind::Retryable
                    && attempt < 6
                    && !shared.hard_stop.is_cancelled();
                tracing::warn!(target: "duroxide::runtime", instance_id = %item.instance_id, attempt, %error, retry, "ack failed");
                if error.kind == ProviderErrorKind::LockLost {
                    return false;
                }
                if !retry {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    let _ = shared
        .provider
        .abandon_orchestration_item(&item.lock_token, None)
        .await;
    false
}

/// Logs and counts what the committed turn did.
fn record(shared: &Shared, item: &OrchestrationItem, report: &TurnReport) {
    let name = &item.instance.name;
    for line in &report.logs {
        logging::emit(line, name, &shared.options);
    }
    for dropped in &report.discarded {
        tracing::debug!(target: "duroxide::runtime", instance_id = %item.instance_id, message = dropped.message, "message discarded: {}", dropped.reason);
    }
    let m = &shared.metrics;
    if report.started_execution {
        Metrics::inc(&m.orch_starts);
    }
    Metrics::add(
        &m.suborchestration_calls,
        report.sub_orchestrations_started as u64,
    );
    match &report.outcome {
        TurnOutcome::Completed => Metrics::inc(&m.orch_completions),
        TurnOutcome::ContinuedAsNew => Metrics::inc(&m.orch_continue_as_new),
        TurnOutcome::Failed(kind) => {
            Metrics::inc(&m.orch_failures);
            match kind {
                ErrorKind::Poison => Metrics::inc(&m.orch_poison),
                ErrorKind::Configuration => Metrics::inc(&m.orch_configuration_errors),
                ErrorKind::Infrastructure | ErrorKind::Nondeterminism => {
                    Metrics::inc(&m.orch_infrastructure_errors)
                }
                ErrorKind::Application | ErrorKind::LimitExceeded | ErrorKind::Cancelled => {
                    Metrics::inc(&m.orch_application_errors)
                }
            }
        }
        TurnOutcome::Running | TurnOutcome::Dropped => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duroxide_core::provider::{CustomStatusChange, ExecutionStatus, KvChange};

    #[test]
    fn only_turns_that_change_what_clients_read_wake_them() {
        let running = TurnAck::default();
        assert!(
            !changes_what_waiters_read(&running),
            "a turn that only schedules work"
        );
        let started = TurnAck {
            status: Some(ExecutionStatus::Running),
            ..TurnAck::default()
        };
        assert!(
            !changes_what_waiters_read(&started),
            "the first turn of an execution"
        );
        for status in [
            ExecutionStatus::Completed,
            ExecutionStatus::Failed,
            ExecutionStatus::ContinuedAsNew,
        ] {
            let ended = TurnAck {
                status: Some(status),
                ..TurnAck::default()
            };
            assert!(changes_what_waiters_read(&ended), "{status:?}");
        }
        let custom = TurnAck {
            custom_status: CustomStatusChange::Set(None),
            ..TurnAck::default()
        };
        assert!(changes_what_waiters_read(&custom), "a custom status change");
        let kv = TurnAck {
            kv_changes: vec![KvChange::Delete { key: "k".into() }],
            ..TurnAck::default()
        };
        assert!(changes_what_waiters_read(&kv), "a KV change");
    }
}
