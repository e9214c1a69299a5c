//! The client: start orchestrations, send them events, read their state, and manage stored instances.

use std::sync::Arc;
use std::time::Duration;

use duroxide_core::codec;
use duroxide_core::limits::validate_instance_id;
use duroxide_core::provider::{
    CustomStatus, DeleteResult, ExecutionInfo, InstanceCreation, InstanceFilter, InstanceInfo, InstanceStats,
    InstanceStatus, NewMessage, Provider, ProviderError, ProviderErrorKind, PruneOptions, PruneResult,
    QueueDepths, SystemMetrics,
};
use duroxide_core::{Event, OrchestratorMessage};
use tokio::time::Instant;

use crate::notify::{self, ChangeWatch};

/// A client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The arguments were invalid; nothing was sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The instance (or execution) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation needs a terminal instance.
    #[error("instance is still running: {0}")]
    StillRunning(String),
    /// The wait ended before the condition held.
    #[error("Operation timed out")]
    Timeout,
    /// The provider failed.
    #[error("{0}")]
    Provider(ProviderError),
}

impl From<ProviderError> for ClientError {
    fn from(e: ProviderError) -> Self {
        match e.kind {
            ProviderErrorKind::NotFound => ClientError::NotFound(e.message),
            ProviderErrorKind::StillRunning => ClientError::StillRunning(e.message),
            ProviderErrorKind::InvalidInput => ClientError::InvalidInput(e.message),
            _ => ClientError::Provider(e),
        }
    }
}

/// Status of an instance as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Completed,
    Failed,
    NotFound,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "Running",
            Status::Completed => "Completed",
            Status::Failed => "Failed",
            Status::NotFound => "NotFound",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed)
    }
}

/// An instance's status, output or error, and custom status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestrationState {
    pub status: Status,
    /// The output (JSON text as the orchestration returned it), when completed.
    pub output: Option<String>,
    /// The error text, when failed.
    pub error: Option<String>,
    pub custom_status: Option<String>,
    pub custom_status_version: u64,
}

impl OrchestrationState {
    /// The state from the instance row and its custom status (`None`: an unknown id).
    fn from_parts(state: Option<(InstanceInfo, CustomStatus)>) -> Self {
        let Some((info, custom)) = state else {
            return OrchestrationState {
                status: Status::NotFound,
                output: None,
                error: None,
                custom_status: None,
                custom_status_version: 0,
            };
        };
        OrchestrationState::from_instance(info.status, info.output, custom)
    }

    /// The state of an existing instance from its status, its output column (output or error
    /// text) and its custom status.
    pub(crate) fn from_instance(
        status: InstanceStatus,
        output: Option<String>,
        custom: CustomStatus,
    ) -> Self {
        let (status, output, error) = match status {
            InstanceStatus::Running => (Status::Running, None, None),
            InstanceStatus::Completed => (Status::Completed, output, None),
            InstanceStatus::Failed => (Status::Failed, None, output),
        };
        OrchestrationState {
            status,
            output,
            error,
            custom_status: custom.status,
            custom_status_version: custom.version,
        }
    }
}

/// Talks to a provider on behalf of applications. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    provider: Arc<dyn Provider>,
    /// The provider reports changes made by other processes (`Provider::watch_instance_changes`),
    /// so waits need only a slow safety-net poll.
    hears_other_processes: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

fn check_id(instance_id: &str) -> Result<(), ClientError> {
    validate_instance_id(instance_id).map_err(ClientError::InvalidInput)
}

fn check_name(what: &str, name: &str) -> Result<(), ClientError> {
    if name.is_empty() {
        return Err(ClientError::InvalidInput(format!(
            "{what} must be a non-empty string"
        )));
    }
    Ok(())
}

/// How long a waiting client polls every millisecond before backing off, when its provider does not
/// report other processes' changes (see `Client::wait_until`).
const FAST_POLL_PERIOD: Duration = Duration::from_millis(20);

/// The first poll of a wait when the provider reports other processes' changes: only a safety net
/// for a report lost with a dropped connection, so it may be slow.
const SAFETY_NET_POLL: Duration = Duration::from_millis(25);

impl Client {
    /// A client on `provider`. Asks the provider to report other processes' changes to instances
    /// (routed to this process's waiting clients), so that waits need not poll fast.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        let hears_other_processes = provider.watch_instance_changes(notify::hook());
        Client {
            provider,
            hears_other_processes,
        }
    }

    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    // ---- starting and messaging ---------------------------------------------------------------------

    /// Starts an instance running the latest version of `name`. Starting an id that exists is a no-op
    /// that keeps the first input (idempotent start).
    pub async fn start_orchestration(
        &self,
        instance_id: &str,
        name: &str,
        input: &str,
    ) -> Result<(), ClientError> {
        self.start(instance_id, name, input, None).await
    }

    /// Starts an instance on a specific version of `name`.
    pub async fn start_orchestration_versioned(
        &self,
        instance_id: &str,
        name: &str,
        input: &str,
        version: &str,
    ) -> Result<(), ClientError> {
        duroxide_core::registry::Version::parse(version)
            .map_err(|e| ClientError::InvalidInput(e.to_string()))?;
        self.start(instance_id, name, input, Some(version.to_string()))
            .await
    }

    async fn start(
        &self,
        instance_id: &str,
        name: &str,
        input: &str,
        version: Option<String>,
    ) -> Result<(), ClientError> {
        check_id(instance_id)?;
        check_name("orchestration name", name)?;
        let message = OrchestratorMessage::StartOrchestration {
            name: name.to_string(),
            version: version.clone(),
            input: input.to_string(),
            parent: None,
        };
        let creates = InstanceCreation {
            name: name.to_string(),
            version,
            parent_instance_id: None,
        };
        let message = NewMessage {
            instance_id: instance_id.to_string(),
            payload: codec::encode_message(&message),
            visible_at_ms: None,
            creates: Some(creates),
        };
        self.provider.create_instance(message).await?;
        Ok(())
    }

    /// Raises an external event; delivered to the instance's next wait of that name (buffered if it
    /// is not waiting yet). Fails with `NotFound` for an id that was never started.
    pub async fn raise_event(&self, instance_id: &str, name: &str, data: &str) -> Result<(), ClientError> {
        check_name("event name", name)?;
        self.send(
            instance_id,
            OrchestratorMessage::ExternalEvent {
                name: name.into(),
                data: data.into(),
            },
        )
        .await
    }

    /// Appends a message to one of the instance's queues (FIFO; survives continue-as-new).
    pub async fn enqueue_event(&self, instance_id: &str, queue: &str, data: &str) -> Result<(), ClientError> {
        check_name("queue name", queue)?;
        self.send(
            instance_id,
            OrchestratorMessage::QueueMessage {
                queue: queue.into(),
                data: data.into(),
            },
        )
        .await
    }

    /// Cancels a running instance (and its running children). No-op on terminal instances.
    pub async fn cancel_instance(&self, instance_id: &str, reason: &str) -> Result<(), ClientError> {
        check_id(instance_id)?;
        match self.provider.get_instance_info(instance_id).await? {
            None => return Err(ClientError::NotFound(format!("instance {instance_id}"))),
            Some(info) if info.status.is_terminal() => return Ok(()),
            Some(_) => {}
        }
        self.send(
            instance_id,
            OrchestratorMessage::CancelRequested {
                reason: reason.into(),
            },
        )
        .await
    }

    async fn send(&self, instance_id: &str, message: OrchestratorMessage) -> Result<(), ClientError> {
        check_id(instance_id)?;
        let message = NewMessage {
            instance_id: instance_id.to_string(),
            payload: codec::encode_message(&message),
            visible_at_ms: None,
            creates: None,
        };
        self.provider
            .enqueue_message(message)
            .await
            .map_err(|e| match e.kind {
                ProviderErrorKind::NotFound => {
                    ClientError::NotFound(format!("instance {instance_id} was never started"))
                }
                _ => e.into(),
            })
    }

    // ---- reading state ------------------------------------------------------------------------------

    /// The instance's current state (`Status::NotFound` for an unknown id). Reads no history.
    pub async fn get_status(&self, instance_id: &str) -> Result<OrchestrationState, ClientError> {
        check_id(instance_id)?;
        // One read: metadata and custom status share the instance's row.
        let state = self.provider.get_instance_state(instance_id).await?;
        Ok(OrchestrationState::from_parts(state))
    }

    /// Waits until the instance is terminal; `Timeout` if it is not within `timeout`.
    pub async fn wait_for_orchestration(
        &self,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<OrchestrationState, ClientError> {
        self.wait_until(instance_id, timeout, Duration::from_millis(50), |s| {
            s.status.is_terminal()
        })
        .await?
        .ok_or(ClientError::Timeout)
    }

    /// Waits until the custom status version exceeds `last_seen_version` or the instance is terminal;
    /// `Ok(None)` on timeout.
    pub async fn wait_for_status_change(
        &self,
        instance_id: &str,
        last_seen_version: u64,
        poll_interval: Duration,
        timeout: Duration,
    ) -> Result<Option<OrchestrationState>, ClientError> {
        self.wait_until(instance_id, timeout, poll_interval, |s| {
            s.custom_status_version > last_seen_version || s.status.is_terminal()
        })
        .await
    }

    /// Polls the state until `done` holds, woken early by change notifications: of this process's
    /// runtimes always, of other processes' when the provider reports them.
    async fn wait_until(
        &self,
        instance_id: &str,
        timeout: Duration,
        max_poll: Duration,
        done: impl Fn(&OrchestrationState) -> bool,
    ) -> Result<Option<OrchestrationState>, ClientError> {
        check_id(instance_id)?;
        let deadline = Instant::now() + timeout;
        let watch = ChangeWatch::new(instance_id);
        let mut polls = PollSchedule::new(self.hears_other_processes, max_poll, Instant::now());
        loop {
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            // Before the read: a change committed after it began still wakes us.
            notified.as_mut().enable();
            // A turn of this process that ended the instance left its state here: no read needed.
            let state = match watch.finished(&self.provider) {
                Some(state) => state,
                None => self.get_status(instance_id).await?,
            };
            if done(&state) {
                return Ok(Some(state));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wake_at = (now + polls.interval()).min(deadline);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
            polls.advance(Instant::now());
        }
    }

    /// One KV value as clients see it (`None` if unset).
    pub async fn get_kv_value(&self, instance_id: &str, key: &str) -> Result<Option<String>, ClientError> {
        check_id(instance_id)?;
        Ok(self.provider.get_kv_value(instance_id, key).await?)
    }

    /// Waits until the key exists; `Timeout` otherwise.
    pub async fn wait_for_kv_value(
        &self,
        instance_id: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        check_id(instance_id)?;
        let deadline = Instant::now() + timeout;
        let watch = ChangeWatch::new(instance_id);
        let mut interval = Duration::from_millis(1);
        loop {
            let notified = watch.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = self.provider.get_kv_value(instance_id, key).await? {
                return Ok(value);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until((now + interval).min(deadline)) => {}
            }
            interval = (interval * 2).min(Duration::from_millis(50));
        }
    }

    // ---- management ---------------------------------------------------------------------------------

    pub async fn list_all_instances(&self) -> Result<Vec<String>, ClientError> {
        Ok(self.provider.list_instances(None).await?)
    }

    /// Instances in one status: `Running`, `Completed` or `Failed`.
    pub async fn list_instances_by_status(&self, status: &str) -> Result<Vec<String>, ClientError> {
        let status = InstanceStatus::parse(status).ok_or_else(|| {
            ClientError::InvalidInput(format!(
                "unknown status {status:?}; expected Running, Completed or Failed"
            ))
        })?;
        Ok(self.provider.list_instances(Some(status)).await?)
    }

    pub async fn get_instance_info(&self, instance_id: &str) -> Result<InstanceInfo, ClientError> {
        check_id(instance_id)?;
        self.provider
            .get_instance_info(instance_id)
            .await?
            .ok_or_else(|| ClientError::NotFound(format!("instance {instance_id}")))
    }

    pub async fn get_execution_info(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<ExecutionInfo, ClientError> {
        check_id(instance_id)?;
        self.provider
            .get_execution_info(instance_id, execution_id)
            .await?
            .ok_or_else(|| {
                ClientError::NotFound(format!("execution {execution_id} of instance {instance_id}"))
            })
    }

    pub async fn list_executions(&self, instance_id: &str) -> Result<Vec<u64>, ClientError> {
        check_id(instance_id)?;
        Ok(self.provider.list_executions(instance_id).await?)
    }

    /// The decoded history of one execution.
    pub async fn read_execution_history(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ClientError> {
        check_id(instance_id)?;
        let records = self.provider.read_history(instance_id, execution_id).await?;
        records
            .iter()
            .map(|r| {
                codec::decode_event(r).map_err(|e| {
                    ClientError::Provider(ProviderError::permanent(
                        "read_execution_history",
                        format!(
                            "instance {instance_id} execution {execution_id} event {}: {e}",
                            r.event_id
                        ),
                    ))
                })
            })
            .collect()
    }

    /// The instance and all its descendants, root first.
    pub async fn get_instance_tree(&self, instance_id: &str) -> Result<Vec<String>, ClientError> {
        check_id(instance_id)?;
        Ok(self.provider.get_instance_tree(instance_id).await?)
    }

    /// Deletes an instance with its descendants; a running one needs `force`.
    pub async fn delete_instance(&self, instance_id: &str, force: bool) -> Result<DeleteResult, ClientError> {
        check_id(instance_id)?;
        Ok(self.provider.delete_instance(instance_id, force).await?)
    }

    /// Deletes terminal root instances matching the filter; an empty filter is refused.
    pub async fn delete_instance_bulk(&self, filter: &InstanceFilter) -> Result<DeleteResult, ClientError> {
        if filter.instance_ids.is_none() && filter.completed_before_ms.is_none() && filter.limit.is_none() {
            return Err(ClientError::InvalidInput(
                "delete_instance_bulk needs at least one filter criterion".into(),
            ));
        }
        Ok(self.provider.delete_instances_bulk(filter).await?)
    }

    pub async fn prune_executions(
        &self,
        instance_id: &str,
        options: &PruneOptions,
    ) -> Result<PruneResult, ClientError> {
        check_id(instance_id)?;
        Ok(self.provider.prune_executions(instance_id, options).await?)
    }

    pub async fn prune_executions_bulk(
        &self,
        filter: &InstanceFilter,
        options: &PruneOptions,
    ) -> Result<PruneResult, ClientError> {
        Ok(self.provider.prune_executions_bulk(filter, options).await?)
    }

    pub async fn get_system_metrics(&self) -> Result<SystemMetrics, ClientError> {
        Ok(self.provider.get_system_metrics().await?)
    }

    pub async fn get_queue_depths(&self) -> Result<QueueDepths, ClientError> {
        Ok(self.provider.get_queue_depths().await?)
    }

    /// Size figures of one instance, `None` for an unknown id.
    pub async fn get_orchestration_stats(
        &self,
        instance_id: &str,
    ) -> Result<Option<InstanceStats>, ClientError> {
        check_id(instance_id)?;
        Ok(self.provider.get_instance_stats(instance_id).await?)
    }
}

/// When a waiting client polls. Changes of this process wake it at once in any case; polling is for
/// changes made by other processes. When the provider reports those, polls are a safety net: from
/// [`SAFETY_NET_POLL`], backing off to the caller's `max_poll`. Otherwise poll every millisecond for
/// [`FAST_POLL_PERIOD`] (most turns of a waiting client's instance finish within milliseconds, and a
/// poll reads one row), then back off to `max_poll`.
#[derive(Debug, Clone, Copy)]
struct PollSchedule {
    interval: Duration,
    max: Duration,
    /// No backing off before this.
    fast_until: Instant,
}

impl PollSchedule {
    fn new(hears_other_processes: bool, max_poll: Duration, now: Instant) -> Self {
        let max = max_poll.max(Duration::from_millis(1));
        if hears_other_processes {
            return PollSchedule {
                interval: SAFETY_NET_POLL.min(max),
                max,
                fast_until: now,
            };
        }
        PollSchedule {
            interval: Duration::from_millis(1).min(max_poll),
            max,
            fast_until: now + FAST_POLL_PERIOD,
        }
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    /// After a wake-up at `now`.
    fn advance(&mut self, now: Instant) {
        if now >= self.fast_until {
            self.interval = (self.interval * 2).min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_reports_a_wait_polls_every_millisecond_at_first() {
        let start = Instant::now();
        let mut polls = PollSchedule::new(false, Duration::from_millis(50), start);
        assert_eq!(polls.interval(), Duration::from_millis(1));
        polls.advance(start + Duration::from_millis(10));
        assert_eq!(polls.interval(), Duration::from_millis(1), "backed off too early");
        for _ in 0..10 {
            polls.advance(start + FAST_POLL_PERIOD);
        }
        assert_eq!(polls.interval(), Duration::from_millis(50));
    }

    #[test]
    fn with_reports_a_wait_polls_only_as_a_safety_net() {
        let start = Instant::now();
        let mut polls = PollSchedule::new(true, Duration::from_millis(50), start);
        assert_eq!(polls.interval(), SAFETY_NET_POLL);
        polls.advance(start);
        assert_eq!(polls.interval(), Duration::from_millis(50));
        // A caller asking for quicker polls gets them.
        let polls = PollSchedule::new(true, Duration::from_millis(5), start);
        assert_eq!(polls.interval(), Duration::from_millis(5));
    }

    #[tokio::test]
    async fn a_provider_that_does_not_report_changes_keeps_fast_polling() {
        let provider = duroxide_sqlite::SqliteProvider::in_memory().expect("in-memory SQLite");
        let client = Client::new(Arc::new(provider));
        assert!(!client.hears_other_processes);
    }

    #[tokio::test]
    async fn reported_changes_wake_waiters_of_that_instance_only() {
        let hook = notify::hook();
        assert!(
            Arc::ptr_eq(&hook, &notify::hook()),
            "every client must hand over the same hook"
        );
        let watch = ChangeWatch::new("reported");
        let other = ChangeWatch::new("unrelated");
        let woken = watch.notify().notified();
        let not_woken = other.notify().notified();
        tokio::pin!(woken, not_woken);
        woken.as_mut().enable();
        not_woken.as_mut().enable();
        hook("reported");
        // `notify_waiters` wakes synchronously: one look at each future tells.
        assert!(
            is_ready(woken.as_mut()).await,
            "the waiter of the reported instance did not wake"
        );
        assert!(
            !is_ready(not_woken.as_mut()).await,
            "a waiter of another instance woke"
        );
    }

    fn finished_state() -> OrchestrationState {
        OrchestrationState::from_instance(
            InstanceStatus::Completed,
            Some("\"handed\"".into()),
            CustomStatus {
                status: Some("s".into()),
                version: 3,
            },
        )
    }

    fn memory() -> Arc<dyn Provider> {
        Arc::new(duroxide_sqlite::SqliteProvider::in_memory().expect("in-memory SQLite"))
    }

    /// Waits until `id` has a registered watch (the waiter began), so what is left next is for it.
    async fn until_watched(id: &str) {
        while !notify::is_watched(id) {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_waiter_takes_the_state_a_local_turn_left_without_reading_the_store() {
        // The store has no such instance: only the handed state can end this wait.
        let provider = memory();
        let client = Client::new(provider.clone());
        let waiter = tokio::spawn(async move {
            client
                .wait_for_orchestration("gone", Duration::from_secs(20))
                .await
        });
        until_watched("gone").await;
        notify::instance_finished(&provider, "gone", finished_state());
        assert_eq!(waiter.await.unwrap().unwrap(), finished_state());
    }

    #[tokio::test]
    async fn a_state_left_through_another_provider_or_before_the_wait_is_not_taken() {
        let provider = memory();
        let client = Client::new(provider.clone());
        // Through another provider object: the waiter reads its own store (no such instance) instead.
        let waiter = {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .wait_for_orchestration("other", Duration::from_millis(300))
                    .await
            })
        };
        until_watched("other").await;
        let other = memory();
        notify::instance_finished(&other, "other", finished_state());
        assert!(matches!(waiter.await.unwrap(), Err(ClientError::Timeout)));
        drop(other);
        // Left before the wait began (a watch kept it): a later wait does not take it.
        let early = ChangeWatch::new("before");
        notify::instance_finished(&provider, "before", finished_state());
        let late = client
            .wait_for_orchestration("before", Duration::from_millis(300))
            .await;
        assert!(matches!(late, Err(ClientError::Timeout)), "{late:?}");
        drop(early);
    }

    async fn is_ready(future: std::pin::Pin<&mut impl std::future::Future>) -> bool {
        let mut future = future;
        std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready())).await
    }
}
