//! The suite has teeth: a provider broken on purpose in one specific way fails the checks written for
//! that rule.
//!
//! Each test wraps a correct provider (SQLite, in memory) in [`Faulty`], which breaks exactly one rule
//! of the contract, runs the named checks against it and expects every one of them to fail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide_conformance::{async_trait, run_matching, Outcome, ProviderFactory};
use duroxide_core::provider::*;
use duroxide_sqlite::SqliteProvider;

/// One way to break the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Fetched messages come back newest first.
    ReversedMessages,
    /// Every fetch reports attempt 1.
    AttemptsNotCounted,
    /// An ack with a lost lock reports success (and changes nothing).
    LockLostReportedAsOk,
    /// `visible_at_ms` is dropped: timers fire at once.
    TimersIgnored,
    /// The KV snapshot is the current KV state instead of the execution's start state.
    SnapshotIsCurrentKv,
    /// Worker fetches ignore the tag filter.
    TagFilterIgnored,
    /// Worker fetches claim sessions even when `may_claim_new` is false.
    AlwaysClaimsSessions,
    /// `delete_instance` always forces.
    DeleteAlwaysForced,
    /// `wake_all` does nothing.
    WakeAllIgnored,
    /// Fetches never wait for work.
    NoLongPolling,
    /// `create_instance` claims it created an instance that already existed.
    CreateNotIdempotent,
    /// Renewing an instance lock succeeds without extending it.
    RenewDoesNothing,
    /// Fetches ignore the requested lock timeout and lock for a minute.
    LeaseIgnored,
    /// Abandon ignores its delay.
    AbandonDelayIgnored,
    /// `list_instances` ignores the status filter.
    StatusFilterIgnored,
    /// The custom status version never moves.
    CustomStatusVersionStuck,
    /// Each instance is handed out a second time when the queue looks empty.
    DoubleDelivery,
    /// Cancelled activities are not removed.
    CancelIgnored,
    /// `read_history` returns events newest first.
    HistoryReversed,
    /// Worker acks drop the completion.
    CompletionDropped,
    /// A refused ack leaves its KV changes and worker items behind (a non-atomic ack).
    PartialAckOnFailure,
}

struct Faulty {
    inner: SqliteProvider,
    fault: Fault,
    /// For `DoubleDelivery`: items already handed out once, to hand out again.
    delivered: Mutex<Vec<OrchestrationItem>>,
}

impl Faulty {
    fn on(&self, fault: Fault) -> bool {
        self.fault == fault
    }

    fn strip_timers(&self, mut message: NewMessage) -> NewMessage {
        if self.on(Fault::TimersIgnored) {
            message.visible_at_ms = None;
        }
        message
    }
}

#[async_trait]
impl Provider for Faulty {
    async fn create_instance(&self, message: NewMessage) -> Result<bool, ProviderError> {
        let created = self.inner.create_instance(self.strip_timers(message)).await?;
        Ok(created || self.on(Fault::CreateNotIdempotent))
    }

    async fn enqueue_message(&self, message: NewMessage) -> Result<(), ProviderError> {
        self.inner.enqueue_message(self.strip_timers(message)).await
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
    ) -> Result<Option<OrchestrationItem>, ProviderError> {
        let lock = if self.on(Fault::LeaseIgnored) {
            Duration::from_secs(60)
        } else {
            lock_timeout
        };
        let poll = if self.on(Fault::NoLongPolling) {
            Duration::ZERO
        } else {
            poll_timeout
        };
        let Some(mut item) = self.inner.fetch_orchestration_item(lock, poll).await? else {
            if self.on(Fault::DoubleDelivery) {
                return Ok(self.delivered.lock().expect("not poisoned").pop());
            }
            return Ok(None);
        };
        match self.fault {
            Fault::ReversedMessages => item.messages.reverse(),
            Fault::AttemptsNotCounted => item.attempt = 1,
            Fault::SnapshotIsCurrentKv => {
                item.kv_snapshot = self.inner.get_kv_entries(&item.instance_id).await?
            }
            Fault::DoubleDelivery => self.delivered.lock().expect("not poisoned").push(item.clone()),
            _ => {}
        }
        Ok(Some(item))
    }

    async fn ack_orchestration_item(&self, lock_token: &str, mut ack: TurnAck) -> Result<(), ProviderError> {
        ack.messages = ack.messages.into_iter().map(|m| self.strip_timers(m)).collect();
        if self.on(Fault::CancelIgnored) {
            ack.cancel_activities.clear();
        }
        let partial = ack.clone();
        let result = self.inner.ack_orchestration_item(lock_token, ack).await;
        match result {
            Err(e) if e.kind == ProviderErrorKind::LockLost && self.on(Fault::LockLostReportedAsOk) => Ok(()),
            Err(e) if e.kind == ProviderErrorKind::Permanent && self.on(Fault::PartialAckOnFailure) => {
                // Leave the turn's KV changes and worker items behind, as a provider that wrote them
                // before meeting the duplicate event id would: abandon, refetch, ack only those.
                self.inner.abandon_orchestration_item(lock_token, None).await?;
                let item = self
                    .inner
                    .fetch_orchestration_item(Duration::from_secs(60), Duration::ZERO)
                    .await?;
                let item = item.expect("the abandoned instance is fetchable again");
                let leaked = TurnAck {
                    execution_id: item.instance.current_execution_id,
                    kv_changes: partial.kv_changes,
                    worker_items: partial.worker_items,
                    ..TurnAck::default()
                };
                self.inner
                    .ack_orchestration_item(&item.lock_token, leaked)
                    .await?;
                Err(e)
            }
            other => other,
        }
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        let delay = if self.on(Fault::AbandonDelayIgnored) {
            None
        } else {
            delay
        };
        self.inner.abandon_orchestration_item(lock_token, delay).await
    }

    async fn renew_orchestration_item_lock(
        &self,
        lock_token: &str,
        extend_by: Duration,
    ) -> Result<(), ProviderError> {
        if self.on(Fault::RenewDoesNothing) {
            return Ok(());
        }
        self.inner
            .renew_orchestration_item_lock(lock_token, extend_by)
            .await
    }

    async fn fetch_work_item(
        &self,
        request: &WorkerFetch,
        poll_timeout: Duration,
    ) -> Result<Option<WorkItemLease>, ProviderError> {
        let mut request = request.clone();
        if self.on(Fault::TagFilterIgnored) {
            request.tag_filter = TagFilter::Any;
        }
        if let (true, Some(session)) = (self.on(Fault::AlwaysClaimsSessions), request.session.as_mut()) {
            session.may_claim_new = true;
        }
        let poll = if self.on(Fault::NoLongPolling) {
            Duration::ZERO
        } else {
            poll_timeout
        };
        self.inner.fetch_work_item(&request, poll).await
    }

    async fn ack_work_item(
        &self,
        lock_token: &str,
        completion: Option<NewMessage>,
    ) -> Result<(), ProviderError> {
        let completion = if self.on(Fault::CompletionDropped) {
            None
        } else {
            completion
        };
        self.inner.ack_work_item(lock_token, completion).await
    }

    async fn abandon_work_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        self.inner.abandon_work_item(lock_token, delay).await
    }

    async fn renew_work_item_lock(&self, lock_token: &str, extend_by: Duration) -> Result<(), ProviderError> {
        self.inner.renew_work_item_lock(lock_token, extend_by).await
    }

    async fn renew_session_leases(
        &self,
        owner_id: &str,
        session_ids: &[String],
        extend_by: Duration,
    ) -> Result<usize, ProviderError> {
        self.inner
            .renew_session_leases(owner_id, session_ids, extend_by)
            .await
    }

    async fn release_session(&self, owner_id: &str, session_id: &str) -> Result<(), ProviderError> {
        self.inner.release_session(owner_id, session_id).await
    }

    async fn get_instance_info(&self, instance_id: &str) -> Result<Option<InstanceInfo>, ProviderError> {
        self.inner.get_instance_info(instance_id).await
    }

    async fn get_custom_status(&self, instance_id: &str) -> Result<Option<CustomStatus>, ProviderError> {
        let mut status = self.inner.get_custom_status(instance_id).await?;
        if let (true, Some(s)) = (self.on(Fault::CustomStatusVersionStuck), status.as_mut()) {
            s.version = 0;
        }
        Ok(status)
    }

    async fn read_history(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Vec<HistoryRecord>, ProviderError> {
        let mut history = self.inner.read_history(instance_id, execution_id).await?;
        if self.on(Fault::HistoryReversed) {
            history.reverse();
        }
        Ok(history)
    }

    async fn get_kv_value(&self, instance_id: &str, key: &str) -> Result<Option<String>, ProviderError> {
        self.inner.get_kv_value(instance_id, key).await
    }

    async fn get_kv_entries(&self, instance_id: &str) -> Result<Vec<KvEntry>, ProviderError> {
        self.inner.get_kv_entries(instance_id).await
    }

    async fn list_instances(&self, status: Option<InstanceStatus>) -> Result<Vec<String>, ProviderError> {
        let status = if self.on(Fault::StatusFilterIgnored) {
            None
        } else {
            status
        };
        self.inner.list_instances(status).await
    }

    async fn list_executions(&self, instance_id: &str) -> Result<Vec<u64>, ProviderError> {
        self.inner.list_executions(instance_id).await
    }

    async fn get_execution_info(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Option<ExecutionInfo>, ProviderError> {
        self.inner.get_execution_info(instance_id, execution_id).await
    }

    async fn get_instance_tree(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        self.inner.get_instance_tree(instance_id).await
    }

    async fn delete_instance(&self, instance_id: &str, force: bool) -> Result<DeleteResult, ProviderError> {
        self.inner
            .delete_instance(instance_id, force || self.on(Fault::DeleteAlwaysForced))
            .await
    }

    async fn delete_instances_bulk(&self, filter: &InstanceFilter) -> Result<DeleteResult, ProviderError> {
        self.inner.delete_instances_bulk(filter).await
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        self.inner.prune_executions(instance_id, options).await
    }

    async fn prune_executions_bulk(
        &self,
        filter: &InstanceFilter,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        self.inner.prune_executions_bulk(filter, options).await
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        self.inner.get_system_metrics().await
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        self.inner.get_queue_depths().await
    }

    async fn get_instance_stats(&self, instance_id: &str) -> Result<Option<InstanceStats>, ProviderError> {
        self.inner.get_instance_stats(instance_id).await
    }

    fn wake_all(&self) {
        if !self.on(Fault::WakeAllIgnored) {
            self.inner.wake_all();
        }
    }
}

struct FaultyFactory(Fault);

#[async_trait]
impl ProviderFactory for FaultyFactory {
    async fn create(&self) -> Arc<dyn Provider> {
        Arc::new(Faulty {
            inner: SqliteProvider::in_memory().expect("in-memory SQLite"),
            fault: self.0,
            delivered: Mutex::new(Vec::new()),
        })
    }
}

/// Runs the named checks against a provider with `fault` and expects each to fail.
async fn caught(fault: Fault, checks: &[&str]) {
    let report = run_matching(&FaultyFactory(fault), |c| checks.contains(&c.id().as_str())).await;
    assert_eq!(
        report.results.len(),
        checks.len(),
        "unknown check names in {checks:?}"
    );
    for result in &report.results {
        assert!(
            matches!(result.outcome, Outcome::Failed(_)),
            "{fault:?} was not caught by {}: {:?}",
            result.id,
            result.outcome
        );
    }
}

macro_rules! fault_tests {
    ($($test:ident: $fault:ident => [$($check:literal),+ $(,)?];)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                caught(Fault::$fault, &[$($check),+]).await;
            }
        )*

        /// Control: without a fault every check named above passes, so each failure above is the
        /// fault's doing.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_same_checks_pass_without_faults() {
            let named: &[&str] = &[$($($check),+),*];
            let report = run_matching(&Correct, |c| named.contains(&c.id().as_str())).await;
            report.assert_passed();
            assert!(report.passed() > 0);
        }
    };
}

struct Correct;

#[async_trait]
impl ProviderFactory for Correct {
    async fn create(&self) -> Arc<dyn Provider> {
        Arc::new(SqliteProvider::in_memory().expect("in-memory SQLite"))
    }
}

fault_tests! {
    reversed_messages: ReversedMessages => [
        "orchestrator_queue::messages_are_delivered_in_enqueue_order",
        "events::early_events_are_buffered_behind_the_start",
    ];
    attempts_not_counted: AttemptsNotCounted => [
        "attempts::abandon_and_refetch_counts_attempts",
        "attempts::lease_expiry_counts_an_attempt",
    ];
    lock_lost_reported_as_ok: LockLostReportedAsOk => [
        "peek_lock::second_ack_is_lock_lost",
        "lock_expiry::ack_after_expiry_is_lock_lost",
        "atomic_ack::ack_with_wrong_token_leaves_nothing",
    ];
    timers_ignored: TimersIgnored => [
        "timers::future_message_is_invisible",
        "timers::timer_becomes_visible_when_due",
        "timers::delayed_start_creates_but_waits",
    ];
    snapshot_is_current_kv: SnapshotIsCurrentKv => [
        "kv::current_execution_changes_are_not_in_the_snapshot",
        "kv::starting_ack_changes_stay_out_of_the_new_snapshot",
        "kv::snapshot_is_frozen_for_the_execution",
    ];
    tag_filter_ignored: TagFilterIgnored => [
        "tags::default_only_admits_untagged_items",
        "tags::none_admits_nothing",
        "sessions::session_items_obey_the_tag_filter",
    ];
    always_claims_sessions: AlwaysClaimsSessions => [
        "sessions::may_claim_new_false_claims_nothing",
        "sessions::expired_session_needs_may_claim_new_even_for_its_old_owner",
    ];
    delete_always_forced: DeleteAlwaysForced => [
        "management::delete_running_without_force_is_still_running",
        "management::running_descendant_needs_force",
    ];
    wake_all_ignored: WakeAllIgnored => [
        "wakeups::wake_all_ends_a_waiting_fetch",
    ];
    no_long_polling: NoLongPolling => [
        "wakeups::idle_fetch_waits_for_its_poll_timeout",
        "wakeups::enqueue_message_wakes_a_waiting_fetch",
    ];
    create_not_idempotent: CreateNotIdempotent => [
        "orchestrator_queue::create_instance_is_idempotent",
    ];
    renew_does_nothing: RenewDoesNothing => [
        "lock_expiry::renew_extends_the_instance_lease",
    ];
    lease_ignored: LeaseIgnored => [
        "lock_expiry::expired_instance_lock_is_fetched_again",
        "attempts::lease_expiry_counts_an_attempt",
    ];
    abandon_delay_ignored: AbandonDelayIgnored => [
        "lock_expiry::abandon_with_delay_hides_messages_for_the_delay",
    ];
    status_filter_ignored: StatusFilterIgnored => [
        "management::list_instances_filters_by_status",
    ];
    custom_status_version_stuck: CustomStatusVersionStuck => [
        "custom_status::set_stores_the_value_and_increments_the_version",
        "custom_status::version_counts_every_change",
    ];
    double_delivery: DoubleDelivery => [
        "peek_lock::locked_instance_is_not_fetched_again",
        "instance_locks::concurrent_fetchers_never_share_an_instance",
    ];
    cancel_ignored: CancelIgnored => [
        "worker_queue::cancelled_work_item_ack_is_lock_lost",
        "atomic_ack::cancel_activities_removes_only_matching_items",
    ];
    history_reversed: HistoryReversed => [
        "management::read_history_returns_events_in_id_order",
        "atomic_ack::ack_appends_history",
    ];
    completion_dropped: CompletionDropped => [
        "worker_queue::ack_work_item_enqueues_the_completion",
        "wakeups::work_completion_wakes_a_waiting_fetch",
    ];
    partial_ack_on_failure: PartialAckOnFailure => [
        "atomic_ack::duplicate_event_id_fails_and_leaves_nothing",
        "kv::refused_ack_applies_no_kv_change",
    ];
}
