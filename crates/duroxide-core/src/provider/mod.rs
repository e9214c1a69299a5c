//! The storage contract: the `Provider` trait that SQLite, PostgreSQL and third-party stores implement.
//!
//! # The contract in brief
//!
//! A provider **stores and returns what it is given**. Events and messages arrive as opaque JSON text
//! (`payload`) next to explicit routing fields (instance, visibility time, session, tag, activity
//! identity, custom status, KV changes); a provider never parses a payload to decide anything.
//!
//! * **Orchestrator queue, peek-lock per instance.** [`Provider::fetch_orchestration_item`] locks one
//!   instance that has visible messages and returns *all* its visible messages together with the
//!   current execution's history. While the lock's lease lasts, no other fetch may return that
//!   instance. Messages enqueued after the fetch stay in the queue for the next turn.
//! * **One atomic ack per turn.** [`Provider::ack_orchestration_item`] appends history, writes instance
//!   metadata, custom status and KV changes, enqueues worker items and orchestrator messages (timers are
//!   messages with a visibility time), removes cancelled worker items, deletes exactly the messages the
//!   fetch returned and releases the lock — all of it or none of it.
//! * **Abandon and renewal.** A turn that cannot finish is abandoned (optionally invisible for a delay);
//!   long turns renew their lease. A lock whose lease expired is gone: its ack fails with
//!   [`ProviderErrorKind::LockLost`] and changes nothing.
//! * **Attempts.** Every fetch increments the attempt count of what it returns; the runtime treats an
//!   item fetched more than `max_attempts` times as poison.
//! * **Worker queue.** Items are fetched one at a time under a lease, filtered by tag, and routed by
//!   session: an item whose session is owned by another live owner is never handed out. Acking an item
//!   deletes it and enqueues its completion in one transaction.
//! * **Instances exist before messages reach them.** Clients create instances explicitly
//!   ([`Provider::create_instance`]); messages to an instance that does not exist are refused
//!   ([`Provider::enqueue_message`]) or, when they come from an ack, dropped. Nothing addressed to a
//!   missing instance may ever block another instance's work.
//! * **Long-polling fetches.** A fetch that finds nothing waits up to `poll_timeout` and returns as soon
//!   as work becomes available (enqueued in this process, signalled by the database, or a timer coming
//!   due), so runtimes need no tight polling.
//!
//! # Detailed semantics (what the conformance suite checks)
//!
//! * `create_instance` creates the instance (status `Running`, `current_execution_id = 1`, name,
//!   version and parent from `creates`) **and execution 1** (status `Running`, no events), and enqueues
//!   the message, in one transaction.
//! * An instance is fetchable when it has at least one visible message (`visible_at_ms` unset or due)
//!   and no live lock. The fetch returns every visible message of that instance in enqueue order,
//!   increments each returned message's attempt count (`attempt` = the highest), and remembers exactly
//!   which messages it returned: the ack deletes those and no others.
//! * Lock tokens are unique across processes and hosts (random per lock, or a random per-process
//!   prefix of at least 64 bits followed by a per-process sequence).
//! * `ack_orchestration_item` with an unknown or expired token fails with `LockLost` and changes
//!   nothing. Otherwise, in one transaction: history records are inserted under
//!   `(instance, ack.execution_id, event_id)` — a record whose id already exists fails the whole ack
//!   (`Permanent`) and leaves nothing behind; if `ack.execution_id` is greater than the current one, the
//!   execution is created (`Running`) and made current, and the KV snapshot becomes the KV state as it
//!   was before this ack; `status`/`output` update the execution (a terminal status also sets
//!   `completed_at_ms`) and the instance (`status.instance_status()`, `output`); `name`/`version` update
//!   the instance when set; `custom_status` `Set` stores the value and increments the version;
//!   `kv_changes` apply to the current KV state (what clients read); worker items are inserted;
//!   `messages` are enqueued — one with `creates` creates its target instance (and its execution 1)
//!   unless it exists, in which case the message is dropped; one without `creates` whose target does
//!   not exist is dropped; `cancel_activities` deletes the matching worker items, locked or not; the
//!   fetched messages are deleted and the lock is released.
//! * `abandon_orchestration_item` releases the lock; attempt counts stay incremented; with a delay the
//!   fetched messages become visible only after it. Unknown token: `LockLost`.
//! * Worker fetch eligibility, in enqueue order: visible, not under a live lock, accepted by the tag
//!   filter, and either without a session, or with a session that `request.session` may use: the
//!   session is owned by `owner_id` with a live lease (the fetch extends the lease to now + `lease`), or
//!   it is unowned or its lease has expired and `may_claim_new` is true (the fetch claims it). An item
//!   whose session another owner holds under a live lease is skipped, never handed out. With
//!   `request.session = None` session items are skipped.
//! * `ack_work_item` deletes the item and enqueues the completion if its instance still exists
//!   (otherwise the completion is dropped). Unknown token, expired lease or deleted (cancelled) item:
//!   `LockLost`, nothing changed.
//! * `release_session` deletes the session's ownership if `owner_id` holds it; otherwise a no-op.
//! * A fetch woken by `wake_all` that finds no work returns `Ok(None)` at once.
//! * Management: `delete_instance` removes the instance and all its descendants with their
//!   executions, events, queued messages, worker items and KV; without `force`, any non-terminal
//!   instance in the tree gives `StillRunning` and nothing is deleted. `delete_instances_bulk` needs at
//!   least one filter criterion (`InvalidInput` otherwise) and only considers terminal roots (no parent);
//!   `completed_before_ms` compares with `updated_at_ms`. `prune_executions` needs `keep_last` or
//!   `completed_before_ms` (`InvalidInput` otherwise); both criteria must hold for an execution to go,
//!   and the current execution is never deleted. `QueueDepths.orchestrator_queue` counts visible
//!   messages, `timer_queue` messages not yet visible, `worker_queue` all worker items.
//!
//! * Clarifications: renewing an unknown, acked or expired instance lock gives `LockLost`;
//!   `ContinuedAsNew` is terminal for its execution (it sets `completed_at_ms`);
//!   `prune_executions_bulk` with an empty filter is `InvalidInput` like `delete_instances_bulk`
//!   (`limit` alone counts as a criterion); an owner whose session lease expired reclaims it like any
//!   unowned session (it needs `may_claim_new`); an idle fetch waits for its poll timeout and returns
//!   `Ok(None)` early only after a wake-up.
//!
//! Time in the contract is Unix epoch milliseconds. Lease durations are measured on the provider's own
//! clock (for PostgreSQL: the database's).

mod types;

pub use types::*;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// A durable store for instances, histories and queues. See the module documentation for the contract.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    // ---- orchestrator queue -------------------------------------------------------------------------

    /// Creates an instance (`message.creates` must be set) and enqueues its start message, unless an
    /// instance with that id exists, in which case nothing changes and `Ok(false)` is returned
    /// (idempotent start). A message without `creates` is `InvalidInput`.
    async fn create_instance(&self, message: NewMessage) -> Result<bool, ProviderError>;

    /// Enqueues a message for an existing instance (raise event, enqueue event, cancel).
    /// Fails with [`ProviderErrorKind::NotFound`] when the instance does not exist.
    async fn enqueue_message(&self, message: NewMessage) -> Result<(), ProviderError>;

    /// Locks the next instance with visible messages and returns them with its current history.
    /// Waits up to `poll_timeout` for work when there is none; `Ok(None)` means none arrived in time.
    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
    ) -> Result<Option<OrchestrationItem>, ProviderError>;

    /// [`fetch_orchestration_item`](Provider::fetch_orchestration_item), told which histories the
    /// caller already holds: when `cache` reports exactly the stored history's length for the fetched
    /// instance's current execution, the provider may leave the history out (and says so in
    /// [`CachedFetch::omitted_history_len`]), so that a turn of a cached instance costs the same
    /// whatever its history's length. Everything else is as in a plain fetch. Leaving it out is an
    /// optimisation: the default implementation always returns the whole history.
    async fn fetch_orchestration_item_cached(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        cache: Arc<dyn HistoryCache>,
    ) -> Result<Option<CachedFetch>, ProviderError> {
        let _ = cache;
        Ok(self
            .fetch_orchestration_item(lock_timeout, poll_timeout)
            .await?
            .map(|item| CachedFetch {
                item,
                omitted_history_len: None,
            }))
    }

    /// Commits one turn atomically and releases the instance lock (see [`TurnAck`]).
    async fn ack_orchestration_item(&self, lock_token: &str, ack: TurnAck) -> Result<(), ProviderError>;

    /// Releases the instance lock without consuming anything; with `delay`, the instance's messages
    /// stay invisible that long (backoff).
    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError>;

    /// Extends the lease of an instance lock from now.
    async fn renew_orchestration_item_lock(
        &self,
        lock_token: &str,
        extend_by: Duration,
    ) -> Result<(), ProviderError>;

    // ---- worker queue -------------------------------------------------------------------------------

    /// Locks the next activity this worker may run (tag filter, session routing) and returns it.
    /// Waits up to `poll_timeout` for work when there is none.
    async fn fetch_work_item(
        &self,
        request: &WorkerFetch,
        poll_timeout: Duration,
    ) -> Result<Option<WorkItemLease>, ProviderError>;

    /// Deletes the locked item and enqueues its completion (if any) in one transaction. Fails with
    /// `LockLost` (changing nothing) when the lease expired or the item was cancelled meanwhile.
    async fn ack_work_item(
        &self,
        lock_token: &str,
        completion: Option<NewMessage>,
    ) -> Result<(), ProviderError>;

    /// Releases the item's lock; with `delay`, it stays invisible that long.
    async fn abandon_work_item(&self, lock_token: &str, delay: Option<Duration>)
        -> Result<(), ProviderError>;

    /// Extends the item's lease. Fails with `LockLost` when it expired or the item was cancelled,
    /// which is how a worker in another process learns that its activity was cancelled.
    async fn renew_work_item_lock(&self, lock_token: &str, extend_by: Duration) -> Result<(), ProviderError>;

    /// Extends the leases of sessions this owner holds; returns how many were renewed.
    async fn renew_session_leases(
        &self,
        owner_id: &str,
        session_ids: &[String],
        extend_by: Duration,
    ) -> Result<usize, ProviderError>;

    /// Gives up this owner's claim on a session so another worker may take it at once.
    async fn release_session(&self, owner_id: &str, session_id: &str) -> Result<(), ProviderError>;

    // ---- reads for clients --------------------------------------------------------------------------

    /// Instance metadata, or `None` for an unknown id.
    async fn get_instance_info(&self, instance_id: &str) -> Result<Option<InstanceInfo>, ProviderError>;

    /// Custom status and its version without reading history (cheap; clients poll it).
    async fn get_custom_status(&self, instance_id: &str) -> Result<Option<CustomStatus>, ProviderError>;

    /// Instance metadata and custom status together, or `None` for an unknown id: what a client's
    /// status read and its waits need. Both live in the instance's row in the bundled providers,
    /// which read them with one statement; this default reads them one after the other.
    async fn get_instance_state(
        &self,
        instance_id: &str,
    ) -> Result<Option<(InstanceInfo, CustomStatus)>, ProviderError> {
        let Some(info) = self.get_instance_info(instance_id).await? else {
            return Ok(None);
        };
        let custom = self.get_custom_status(instance_id).await?.unwrap_or_default();
        Ok(Some((info, custom)))
    }

    /// The history of one execution, in event-id order.
    async fn read_history(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Vec<HistoryRecord>, ProviderError>;

    /// The current value of one KV key as clients see it (including the running execution's changes).
    async fn get_kv_value(&self, instance_id: &str, key: &str) -> Result<Option<String>, ProviderError>;

    /// Every KV entry of the instance as clients see it.
    async fn get_kv_entries(&self, instance_id: &str) -> Result<Vec<KvEntry>, ProviderError>;

    // ---- management ---------------------------------------------------------------------------------

    async fn list_instances(&self, status: Option<InstanceStatus>) -> Result<Vec<String>, ProviderError>;
    async fn list_executions(&self, instance_id: &str) -> Result<Vec<u64>, ProviderError>;
    async fn get_execution_info(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Option<ExecutionInfo>, ProviderError>;
    /// The instance and all its descendants (by parent link), root first.
    async fn get_instance_tree(&self, instance_id: &str) -> Result<Vec<String>, ProviderError>;
    /// Deletes an instance tree (all executions, events, messages, KV, worker items). A non-terminal
    /// instance needs `force`; otherwise `StillRunning`. Unknown ids give `NotFound`.
    async fn delete_instance(&self, instance_id: &str, force: bool) -> Result<DeleteResult, ProviderError>;
    /// Deletes terminal root instances matching the filter (with their trees).
    async fn delete_instances_bulk(&self, filter: &InstanceFilter) -> Result<DeleteResult, ProviderError>;
    /// Deletes old executions of one instance; never the current one.
    async fn prune_executions(
        &self,
        instance_id: &str,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError>;
    async fn prune_executions_bulk(
        &self,
        filter: &InstanceFilter,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError>;
    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError>;
    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError>;
    async fn get_instance_stats(&self, instance_id: &str) -> Result<Option<InstanceStats>, ProviderError>;

    /// Wakes any fetch of this provider object that is waiting, as if work had arrived. The runtime
    /// calls it when it shuts down so long-polls end at once.
    fn wake_all(&self);

    // ---- change reports for waiting clients ---------------------------------------------------------

    /// Asks the provider to call `on_change` with an instance id after another process (another
    /// provider object on the same store) committed a turn that changed what a waiting client reads:
    /// the instance's status (terminal, or continued as new) or its custom status. Returns whether
    /// the provider will do so; clients then poll rarely, as a safety net, instead of every few
    /// milliseconds.
    ///
    /// Optional and best effort: the default does nothing and returns `false` (the caller keeps
    /// polling). A provider that returns `true` may still miss a change (a dropped connection) or
    /// report one that did not happen; callers re-read the state either way. Changes committed
    /// through this provider object itself are not reported (the runtime wakes its own process's
    /// waiters). `on_change` runs on the provider's notification task: it must be quick and must not
    /// block. Registering the same hook again (`Arc::ptr_eq`) should not call it twice per change.
    fn watch_instance_changes(&self, on_change: InstanceChangeHook) -> bool {
        let _ = on_change;
        false
    }
}

/// Called with an instance id by a provider that reports changes
/// ([`Provider::watch_instance_changes`]).
pub type InstanceChangeHook = Arc<dyn Fn(&str) + Send + Sync>;
