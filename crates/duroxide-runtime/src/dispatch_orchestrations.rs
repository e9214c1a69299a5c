//! The orchestration dispatcher: fetch a locked instance, run its turn, ack it (or abandon it).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duroxide_core::provider::{OrchestrationItem, ProviderErrorKind};
use duroxide_core::turn::{fail_item, process_item, TurnDecision, TurnOptions, TurnOutcome, TurnReport};
use duroxide_core::{ErrorDetails, ErrorKind};

use crate::metrics::Metrics;
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

/// One dispatcher slot: loops until the runtime stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = ErrorBackoff::default();
    let options = &shared.options;
    while !shared.stopping() {
        let fetched = shared
            .provider
            .fetch_orchestration_item(
                options.orchestrator_lock_timeout,
                options.dispatcher_poll_interval,
            )
            .await;
        match fetched {
            Ok(Some(item)) => {
                backoff.reset();
                Metrics::inc(&shared.metrics.orch_dispatcher_items_fetched);
                handle(&shared, item).await;
            }
            Ok(None) => backoff.reset(),
            Err(error) => {
                Metrics::inc(&shared.metrics.provider_errors);
                tracing::warn!(target: "duroxide::runtime", %error, "fetching an orchestration item failed");
                backoff.wait(&shared).await;
            }
        }
    }
}

async fn handle(shared: &Shared, item: OrchestrationItem) {
    let cached = shared.cache.take(&item.instance_id);
    let options = TurnOptions {
        now_ms: now_ms(),
        entropy: uuid::Uuid::new_v4().as_u64_pair().0,
        max_attempts: shared.options.max_attempts,
    };
    // User code runs inside `process_item`; a panic there must fail that instance, not this slot.
    let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        process_item(&item, &shared.orchestrations, cached, &options)
    }))
    .unwrap_or_else(|panic| {
        let message = format!("orchestration code panicked: {}", panic_message(panic.as_ref()));
        tracing::error!(target: "duroxide::runtime", instance_id = %item.instance_id, "{message}");
        fail_item(&item, ErrorDetails::application(message))
    });
    match decision {
        TurnDecision::Ack { ack, engine, report } => {
            let cancels = ack.cancel_activities.clone();
            // Cache the engine before committing: the commit releases the instance lock, and the
            // instance's next turn may be fetched at once (a fast activity) — it must find the engine.
            // Until then the lock keeps everyone else away. An engine whose turn did not commit is
            // ahead of the stored history, which `process_item` detects; it is dropped anyway.
            if let Some(engine) = engine {
                shared.cache.put(item.instance_id.clone(), engine);
            }
            if commit(shared, &item, *ack).await {
                shared.cancel_local(&cancels);
                record(shared, &item, &report);
                notify::instance_changed(&item.instance_id);
            } else {
                drop(shared.cache.take(&item.instance_id));
            }
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
        }
    }
}

/// Acks the turn, retrying transient failures; a turn whose ack cannot be committed is handed back
/// (its messages stay queued), never failed. Returns whether the ack committed.
async fn commit(shared: &Shared, item: &OrchestrationItem, ack: duroxide_core::provider::TurnAck) -> bool {
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
