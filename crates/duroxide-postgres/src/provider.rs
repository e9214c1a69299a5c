//! `PostgresProvider`: connecting, and the `Provider` contract on a connection pool.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use duroxide_core::provider::{
    CachedFetch, CustomStatus, DeleteResult, ExecutionInfo, HistoryCache, HistoryRecord, InstanceChangeHook,
    InstanceFilter, InstanceInfo, InstanceStats, InstanceStatus, KvEntry, NewMessage, OrchestrationItem,
    Provider, ProviderError, ProviderErrorKind, PruneOptions, PruneResult, QueueDepths, SystemMetrics,
    TurnAck, WorkItemLease, WorkerFetch,
};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::batch::{Committer, Sent};
use crate::coalesce::{Batch, Coalescer, Fetch, Release};
use crate::connection::Target;
use crate::db::Db;
use crate::durability::Durability;
use crate::error::ConnectError;
use crate::handoff::{self, Handoffs, Promised, Waiter};
use crate::held_turns::{Deferral, HeldTurns};
use crate::listener::Listener;
use crate::lock_token::Owner;
use crate::maintenance::{self, Maintenance};
use crate::mux::Conn;
use crate::mux::Mux;
use crate::schema::{Schema, DEFAULT_SCHEMA};
use crate::turn_ack::{AckEffects, LeaseRequest};
use crate::unsettled::{Held, Unsettled};
use crate::wakeups::{Polled, Queue, Rest, Routed, Wake, Wakeups, Write};
use crate::{
    lock_token, management, migrations, orchestrator_queue, reads, retention, turn_ack, worker_queue,
};

/// The key of the one orchestrator fetch request there is (orchestrator fetches have no filter).
const ORCHESTRATOR_KEY: &str = "orchestrator";

/// Longest a fetch whose poll ended waits for the item an ack in flight is handing it.
const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// Most instances a fetch query leases beyond its looks, for the stock (see [`TURN_STOCK_PER_FETCH`]).
const MAX_PREFETCH: usize = 16;

/// How long results for an instance keep deferring after a turn's ack that left messages waiting
/// (see `held_turns`): about a fetch query's time under load. A result deferred in that time
/// waits at most this long when no fetch of this object locks the instance again.
const LINGER: Duration = Duration::from_millis(20);

/// Stocked turns per orchestration fetch (see `handoff`). Under load, activity acks keep a stock of
/// one per fetch full of the instances their results go to, so fetch queries found no place to
/// lease extra instances in and took queued instances (new ones, mostly) one query each; with two,
/// a query brings several (chain3 on PostgreSQL: fetch queries 2,090 → 462 per 2,000 instances,
/// +10 to 13% orchestrations/s). With 8 (and up to 16 leased per query, [`MAX_PREFETCH`]) a query
/// brings more still: Python chain3 on PostgreSQL, 500 instances, queries 637 → 357 and, in 4
/// interleaved rounds of 3 runs, 824–844 → 956–1,043 orchestrations/s on average (4 and 8 came
/// between; 16 and 32 did no better than 8 and 16). A stocked instance still waits at most
/// [`handoff::stock_ttl`] before it goes back for any process to fetch.
const TURN_STOCK_PER_FETCH: usize = 8;

/// Most work items a fetch query leases beyond its looks, for the stock, and the stock's size per
/// worker fetch. Turn acks hand idle fetches the items they create, but a turn that schedules more
/// than there are idle fetches (a fan-out) leaves the rest queued, and each worker slot then paid a
/// query of its own after every activity. Leasing a few more per query lets the next slots take
/// theirs from the stock (Python fan-out on PostgreSQL, medians of 6 runs: 8 and 2 per fetch gave
/// 5,100 to 5,800 activities/s, 16 and 4 gave 5,900 to 6,200).
const MAX_WORK_PREFETCH: usize = 16;
const WORK_STOCK_PER_FETCH: usize = 4;

/// How to connect, beyond the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    schema: String,
    max_connections: usize,
    shared_connections: usize,
    ack_connections: usize,
    durability: Durability,
}

impl Default for PostgresOptions {
    /// Schema [`DEFAULT_SCHEMA`], at most 16 pooled, 2 shared and 2 ack connections (plus one
    /// listener connection), [`Durability::Normal`]. Connections open when first needed.
    fn default() -> Self {
        PostgresOptions {
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: 16,
            shared_connections: 2,
            ack_connections: 2,
            durability: Durability::Normal,
        }
    }
}

impl PostgresOptions {
    /// The schema that holds the provider's tables (created if missing). Several applications or
    /// tenants can share one database in different schemas.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Most pooled connections this provider object opens (at least 1). Operations that need a
    /// transaction of their own or scan whole tables (deletes, pruning, listings) take one each.
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// Most shared connections this provider object opens (at least 1). Fetches, creates, abandons
    /// and client reads are single statements; concurrent ones share these connections and are
    /// pipelined (sent back to back), which costs the server far less than a round trip each. One
    /// opens at first use, more only while all open ones are busy. About the number of the server's
    /// cores is right: statements run one after another on a connection.
    pub fn with_shared_connections(mut self, shared_connections: usize) -> Self {
        self.shared_connections = shared_connections.max(1);
        self
    }

    /// Most connections this provider object commits acks on (at least 1). Concurrent acks share
    /// a transaction there (group commit: one WAL flush for all of them), one batch in flight per
    /// connection.
    pub fn with_ack_connections(mut self, ack_connections: usize) -> Self {
        self.ack_connections = ack_connections.max(1);
        self
    }

    /// Which acks wait for their WAL flush before they return: by default only those whose changes a
    /// client or another instance can see ([`Durability::Normal`]); [`Durability::Full`] for all.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}

/// Counters of one provider object, for diagnostics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Round trips through the pool: statements executed, transaction control, and statements
    /// prepared on a connection for the first time.
    pub round_trips: u64,
    /// NOTIFY statements sent on the listener connection (coalesced announcements to other processes,
    /// and the listener's hello and pings).
    pub notifications_sent: u64,
    /// Whether this object's announcements go out: another provider object listens on the schema's
    /// channel, or this one started listening moments ago. One that is alone sends no NOTIFY for
    /// its writes.
    pub notifying: bool,
    /// Announcements not sent because no other provider object listened.
    pub announcements_unsent: u64,
    /// Whether the listener connection is up (other processes' writes are heard at once).
    pub listening: bool,
    /// Vacuums of the queue tables this object ran (see [`PostgresProvider`]'s crate documentation).
    pub vacuums: u64,
    /// Work items a turn's ack stored already leased to one of this object's idle worker fetches,
    /// which then needed no query (see the crate documentation).
    pub work_items_handed: u64,
    /// Instances an activity's ack locked along with the completion it stored, for one of this
    /// object's idle orchestration fetches or for the next one (see the crate documentation).
    pub turns_handed: u64,
    /// Batches of group-committed acks that failed as a whole because one ack's statement failed
    /// (an ack that fails anyway, such as a turn recorded twice), whose acks then ran one by one. A
    /// batch of healthy acks never fails.
    pub batch_reruns: u64,
    /// Activity results stored for an instance while this object held it locked for a turn, which
    /// woke no fetch then (it would have found the instance locked) but when the turn ended.
    pub results_deferred: u64,
    /// Items this object's fetches found only at the two-second recheck, with no announcement since
    /// the last look that left nothing fetchable and no stored due time before it: work whose
    /// wake-up was lost (a bug: it waited up to two seconds). Work that came due (timers, delays,
    /// expired leases) is found at its due time and not counted.
    pub found_by_recheck: u64,
    /// Fetches of this object waiting for work right now, between looks (untagged worker fetches and
    /// orchestration fetches; those an ack may hand an item, see the crate documentation).
    pub idle_fetches: usize,
}

/// A duroxide [`Provider`] on PostgreSQL. Cheap to clone: clones share one pool, one listener
/// connection and one set of wake-ups.
///
/// Any number of provider objects, in any number of processes, may share one schema: instance locks
/// and work item leases live in the database and are timed by its clock, and LISTEN/NOTIFY wakes
/// waiting fetches everywhere when work arrives.
#[derive(Clone)]
pub struct PostgresProvider {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// Concurrent fetches share queries (see `coalesce`).
    orchestration_fetches: Arc<Coalescer<CachedFetch>>,
    work_fetches: Arc<Coalescer<WorkItemLease>>,
    /// Idle fetches that take work straight from acks (see `handoff`).
    work_handoffs: Handoffs<WorkItemLease>,
    turn_handoffs: Handoffs<CachedFetch>,
    /// Instances this object holds locked for a turn (see `held_turns`).
    held_turns: HeldTurns,
    /// Leases of acks whose reply was lost, handed back when the ack is repeated.
    unsettled: Unsettled,
    maintenance: Arc<Maintenance>,
    wakeups: Arc<Wakeups>,
    listener: Listener,
    target: String,
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("server", &self.inner.target)
            .field("schema", &self.inner.db.schema().name())
            .finish_non_exhaustive()
    }
}

impl PostgresProvider {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or a libpq
    /// key=value string) and uses the schema [`DEFAULT_SCHEMA`], creating or migrating it as needed.
    ///
    /// Fails with a [`ConnectError`] naming what is wrong (bad URL, unreachable server, rejected
    /// credentials, schema from a newer version), having created nothing.
    pub async fn connect(url: &str) -> Result<PostgresProvider, ConnectError> {
        PostgresProvider::connect_with(url, PostgresOptions::default()).await
    }

    /// Like [`connect`](Self::connect), with the provider's tables in `schema`: ASCII letters, digits
    /// and `_`, at most 63 bytes, not starting with a digit or `pg_`. The name is always quoted, so
    /// it is case-sensitive.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<PostgresProvider, ConnectError> {
        PostgresProvider::connect_with(url, PostgresOptions::default().with_schema(schema)).await
    }

    /// Like [`connect`](Self::connect), with every option.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresProvider, ConnectError> {
        let schema = Schema::new(&options.schema).map_err(|reason| ConnectError::InvalidSchema {
            schema: options.schema.clone(),
            reason,
        })?;
        let target = Target::parse(url)?;
        migrations::run(&target, &schema).await?;
        let owner = Owner::random();
        let target = target.naming_owner(&owner);
        let pool = target.pool(options.max_connections)?;
        let mux = Mux::new(target.clone(), options.shared_connections);
        let committer = Committer::new(
            Mux::new(target.clone(), options.ack_connections),
            options.ack_connections,
        );
        let wakeups = Arc::new(Wakeups::default());
        let listener = Listener::start(target.clone(), schema.channel(), wakeups.clone()).await?;
        Ok(PostgresProvider {
            inner: Arc::new(Inner {
                db: Db::new(pool, mux, committer, schema, options.durability, owner),
                orchestration_fetches: Arc::default(),
                work_fetches: Arc::default(),
                work_handoffs: Handoffs::new(WORK_STOCK_PER_FETCH),
                turn_handoffs: Handoffs::new(TURN_STOCK_PER_FETCH),
                held_turns: HeldTurns::default(),
                unsettled: Unsettled::default(),
                maintenance: Arc::default(),
                wakeups,
                listener,
                target: target.description,
            }),
        })
    }

    /// The schema this provider uses.
    pub fn schema(&self) -> &str {
        self.inner.db.schema().name()
    }

    /// Counters of this object (shared by its clones).
    pub fn stats(&self) -> ProviderStats {
        ProviderStats {
            round_trips: self.inner.db.round_trips(),
            notifications_sent: self.inner.listener.notifications_sent(),
            notifying: self.inner.listener.notifying(),
            announcements_unsent: self.inner.listener.announcements_unsent(),
            listening: self.inner.wakeups.is_listening(),
            vacuums: self.inner.maintenance.vacuums(),
            work_items_handed: self.inner.work_handoffs.handed(),
            turns_handed: self.inner.turn_handoffs.handed(),
            results_deferred: self.inner.held_turns.deferred(),
            batch_reruns: self.inner.db.batch_reruns(),
            found_by_recheck: self.inner.wakeups.found_by_recheck(),
            idle_fetches: self.inner.work_handoffs.idle() + self.inner.turn_handoffs.idle(),
        }
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Work became fetchable on `queue`: wake this object's fetches now, and tell other processes.
    fn announce(&self, queue: Queue, wake: Wake) {
        self.inner.wakeups.work_arrived(queue, wake);
        self.inner.listener.announce(queue, wake);
    }

    /// A stored orchestrator message: local fetches look for it now or, when it is for later, at its
    /// due time (see `wakeups`); other processes hear of it.
    fn announce_message(&self, message: &NewMessage) {
        match split_by_due(std::slice::from_ref(message)) {
            (_, Some(due)) => {
                self.inner.wakeups.due_at(Queue::Orchestrator, due.into());
                self.inner.listener.announce(Queue::Orchestrator, Wake::Some(1));
            }
            _ => self.announce(Queue::Orchestrator, Wake::Some(1)),
        }
    }

    /// Hands back a leased work item nobody will run (its fetch went away): fetchable again at once.
    fn release_work(&self, lease: WorkItemLease) {
        self.hand_back(Queue::Worker, move |provider| async move {
            worker_queue::release(provider.db(), &lease.lock_token)
                .await
                .map(|()| 1)
        });
    }

    /// After an ack with `token` got an answer (or an error that says it did not run), hands back what
    /// earlier attempts of it that failed with a lost reply leased (see `unsettled`); after another
    /// such failure, keeps remembering them.
    fn settle_earlier(&self, token: &str, earlier: Vec<(Uuid, Held)>, outcome: Result<(), &ProviderError>) {
        if outcome.is_err_and(|err| err.kind == ProviderErrorKind::Retryable) {
            self.inner.unsettled.restore(token, earlier);
            return;
        }
        for (secret, held) in earlier {
            match held {
                Held::WorkItems { instance_id } => {
                    self.hand_back(Queue::Worker, move |provider| async move {
                        worker_queue::release_unsettled(provider.db(), &instance_id, secret).await
                    });
                }
                Held::Turn { instance_id } => {
                    let token = lock_token::token(secret, &instance_id);
                    self.hand_back(Queue::Orchestrator, move |provider| async move {
                        orchestrator_queue::release(provider.db(), &token)
                            .await
                            .map(|()| 1)
                    });
                }
            }
        }
    }

    /// Runs `operation` on the item with `token` (an ack or an abandon), then settles what earlier
    /// attempts of its ack that lost their reply leased.
    async fn settling<T>(
        &self,
        token: &str,
        operation: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let earlier = self.inner.unsettled.take(token);
        let result = operation.await;
        self.settle_earlier(token, earlier, result.as_ref().map(|_| ()));
        result
    }

    /// Remembers what an ack that failed with `err` may have leased under `secret` (see `unsettled`).
    fn remember_if_unsettled(&self, token: &str, err: &ProviderError, secret: Uuid, held: Held) {
        if err.kind == ProviderErrorKind::Retryable {
            self.inner.unsettled.remember(token, secret, held);
        }
    }

    /// Hands back a locked instance nobody will run a turn of (its fetch went away).
    fn release_turn(&self, turn: CachedFetch) {
        let item = turn.item;
        self.hand_back(Queue::Orchestrator, move |provider| async move {
            let released = orchestrator_queue::release(provider.db(), &item.lock_token).await;
            // Results deferred to this lock are announced even when it was lost meanwhile.
            let deferred = provider.end_held_turn(&item.instance_id, &item.lock_token);
            match released {
                Err(err) if !deferred => Err(err),
                _ => Ok(1),
            }
        });
    }

    /// The turn locked under `lock_token` will be held until `until` (see `held_turns`).
    fn hold_turn(&self, turn: &CachedFetch, until: Instant) {
        let item = &turn.item;
        self.inner
            .held_turns
            .hold(&item.instance_id, &item.lock_token, until);
    }

    /// The lock under `lock_token` ended and a fetch is woken for the instance's waiting messages:
    /// results for it keep deferring for [`LINGER`], then are announced unless a new lock took them
    /// over (see `held_turns`).
    fn linger_held_turn(&self, instance_id: &str, lock_token: &str) {
        let until = Instant::now() + LINGER;
        self.inner.held_turns.linger(instance_id, lock_token, until);
        self.end_held_turn_at(instance_id.to_owned(), lock_token.to_owned(), until);
    }

    /// Ends the lock under `token` at `until`, should nothing have ended it by then, and announces
    /// the results deferred to it.
    fn end_held_turn_at(&self, instance_id: String, token: String, until: Instant) {
        let provider = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            if provider.end_held_turn(&instance_id, &token) {
                provider.announce(Queue::Orchestrator, Wake::Some(1));
            }
        });
    }

    /// The lock under `lock_token` ended: whether results were deferred to it (the caller announces).
    fn end_held_turn(&self, instance_id: &str, lock_token: &str) -> bool {
        self.inner.held_turns.end(instance_id, lock_token)
    }

    /// A completion for `instance_id` was committed and no fetch has heard of it: it is announced now,
    /// or when the turn this object holds of the instance ends (see `held_turns`).
    fn announce_completion(&self, instance_id: &str) {
        match self.inner.held_turns.defer(instance_id) {
            Deferral::NotHeld => self.announce(Queue::Orchestrator, Wake::Some(1)),
            Deferral::Deferred => {}
            // Should the turn be dropped without an ack, its lease running out ends the lock.
            Deferral::Watch { token, until } => self.end_held_turn_at(instance_id.to_owned(), token, until),
        }
    }

    /// One orchestration fetch query for `looks` waiting looks. It also leases as many more
    /// instances as the stock has places for, which go there: when instances queue up, one query
    /// serves the next few fetches too.
    async fn fetch_turns(
        &self,
        lock_timeout: Duration,
        via: Option<Arc<Conn>>,
        looks: usize,
    ) -> Result<Batch<CachedFetch>, ProviderError> {
        let leased = query_with_stock(
            &self.inner.turn_handoffs,
            MAX_PREFETCH,
            lock_timeout,
            looks,
            |lease, places| orchestrator_queue::fetch(self.db(), lease, via, looks + places),
        )
        .await?;
        let until = leased.leased_from + leased.lease;
        leased
            .batch
            .items
            .iter()
            .chain(&leased.extra)
            .for_each(|turn| self.hold_turn(turn, until));
        for turn in leased.extra {
            let taker = TurnTaker {
                waiter: None,
                lock: lock_timeout,
                leased_from: leased.leased_from,
            };
            self.hand_turn(taker, turn);
        }
        Ok(leased.batch)
    }

    /// An orchestration fetch whose turn has its whole history, unless `cache` holds exactly the
    /// stored one: a turn this object's own ack preceded comes without its history from the
    /// database (migration 6), which is read here when `cache` does not hold it.
    async fn fetch_turn_for(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        cache: Option<&dyn HistoryCache>,
    ) -> Result<Option<CachedFetch>, ProviderError> {
        let Some(mut turn) = self.fetch_turn(lock_timeout, poll_timeout).await? else {
            return Ok(None);
        };
        let Some(stored_len) = turn.omitted_history_len else {
            return Ok(Some(turn));
        };
        let item = &turn.item;
        let execution_id = item.instance.current_execution_id;
        if cache.and_then(|c| c.cached_history_len(&item.instance_id, execution_id)) == Some(stored_len) {
            return Ok(Some(turn));
        }
        // The instance stays locked to this turn, so its history cannot change meanwhile.
        match reads::history(self.db(), &item.instance_id, execution_id).await {
            Ok(history) => {
                turn.item.history = history;
                turn.omitted_history_len = None;
                Ok(Some(turn))
            }
            Err(err) => {
                self.release_turn(turn);
                Err(err)
            }
        }
    }

    /// A long poll for a turn: fetched, or handed over by an operation of this object.
    async fn fetch_turn(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
    ) -> Result<Option<CachedFetch>, ProviderError> {
        let fetch: Fetch<CachedFetch> = {
            let provider = self.clone();
            Arc::new(move |via, max| {
                let provider = provider.clone();
                Box::pin(async move { provider.fetch_turns(lock_timeout, via, max).await })
            })
        };
        let release: Release<CachedFetch> = {
            let provider = self.clone();
            Arc::new(move |turn: CachedFetch| provider.release_turn(turn))
        };
        let group = lock_timeout.as_millis().to_string();
        let handoffs = Some((&self.inner.turn_handoffs, lock_timeout));
        self.fetch_or_take(
            Queue::Orchestrator,
            ORCHESTRATOR_KEY,
            poll_timeout,
            handoffs,
            |via| {
                self.inner
                    .orchestration_fetches
                    .look(group.clone(), via, fetch.clone(), release.clone())
            },
            release.clone(),
        )
        .await
    }

    /// One work fetch query for `looks` waiting looks of `request`. A request that takes untagged
    /// items also leases up to [`MAX_WORK_PREFETCH`] more plain ones (untagged, session-less: any
    /// such fetch may run them), as the stock has places, and stocks them.
    async fn fetch_work(
        &self,
        request: &WorkerFetch,
        via: Option<Arc<Conn>>,
        looks: usize,
    ) -> Result<Batch<WorkItemLease>, ProviderError> {
        let max_extra = if worker_queue::takes_untagged(request) {
            MAX_WORK_PREFETCH
        } else {
            0
        };
        let lock = request.lock_timeout;
        let leased = query_with_stock(
            &self.inner.work_handoffs,
            max_extra,
            lock,
            looks,
            |lease, places| {
                let leasing = WorkerFetch {
                    lock_timeout: lease,
                    ..request.clone()
                };
                async move { worker_queue::fetch(self.db(), &leasing, via, looks, places).await }
            },
        )
        .await?;
        for item in leased.extra {
            self.stock(
                Queue::Worker,
                |inner| &inner.work_handoffs,
                item,
                (lock, leased.leased_from),
                PostgresProvider::release_work,
            );
        }
        Ok(leased.batch)
    }

    /// Fills a place promised in the stock of `handoffs` with `item`, leased from `leased` (the
    /// fetches' lock timeout, and when the lease began), and wakes a fetch of `queue` for it; the
    /// item goes back through `give_back` if no fetch took it in time (`handoff::stock_ttl`).
    fn stock<T: Send + 'static>(
        &self,
        queue: Queue,
        handoffs: fn(&Inner) -> &Handoffs<T>,
        item: T,
        (lock, leased_from): (Duration, Instant),
        give_back: fn(&PostgresProvider, T),
    ) {
        let id = handoffs(&self.inner).stock_item(item, lock, leased_from);
        self.inner.wakeups.work_arrived(queue, Wake::Some(1));
        let provider = self.clone();
        let expires = leased_from + handoff::stock_ttl(lock);
        tokio::spawn(async move {
            tokio::time::sleep_until(expires.into()).await;
            if let Some(item) = handoffs(&provider.inner).take_unwanted(id) {
                give_back(&provider, item);
            }
        });
    }

    /// Who will get a turn an operation is about to lock: an idle orchestration fetch of this object,
    /// or else a place in the stock (see `handoff`); `None` when neither is free.
    fn reserve_turn_taker(&self) -> Option<TurnTaker> {
        let handoffs = &self.inner.turn_handoffs;
        let leased_from = Instant::now();
        let (takers, lock) = handoffs.reserve(1, None);
        match takers.into_iter().next() {
            Some(waiter) => Some(TurnTaker {
                waiter: Some(waiter),
                lock,
                leased_from,
            }),
            None => handoffs.reserve_stock().map(|lock| TurnTaker {
                waiter: None,
                lock,
                leased_from,
            }),
        }
    }

    /// The promise `taker` stands for, given back should the operation's future be dropped before
    /// its statement answered.
    fn promised_turn(&self, taker: Option<&TurnTaker>) -> Promised<'_, CachedFetch> {
        let handoffs = &self.inner.turn_handoffs;
        match taker.map(|t| &t.waiter) {
            Some(Some(waiter)) => Promised::new(handoffs, std::slice::from_ref(waiter), 0),
            Some(None) => Promised::new(handoffs, &[], 1),
            None => Promised::new(handoffs, &[], 0),
        }
    }

    /// The operation locked nothing after all.
    fn give_back_turn_taker(&self, taker: Option<TurnTaker>) {
        match taker.map(|t| t.waiter) {
            None => {}
            Some(Some(waiter)) => waiter.unreserve(),
            Some(None) => self.inner.turn_handoffs.unreserve_stock(),
        }
    }

    /// After an operation that asked to lock a turn for `taker`: hands the turn it locked over, or
    /// gives the taker back. Whether a turn was handed (if not, fetches must hear of the work).
    fn hand_turn_or_give_back(&self, taker: Option<TurnTaker>, turn: Option<CachedFetch>) -> bool {
        match (taker, turn) {
            (Some(taker), Some(turn)) => {
                self.hold_turn(&turn, taker.leased_from + taker.lease());
                self.hand_turn(taker, turn);
                true
            }
            (taker, turn) => {
                self.give_back_turn_taker(taker);
                // (A turn is locked only for a taker; should one come without, it goes back.)
                if let Some(turn) = turn {
                    self.release_turn(turn);
                }
                false
            }
        }
    }

    /// Gives a locked turn to its taker. A stocked turn wakes a fetch for it and goes back if no
    /// fetch took it in time (`handoff::stock_ttl`).
    fn hand_turn(&self, taker: TurnTaker, turn: CachedFetch) {
        let handoffs = &self.inner.turn_handoffs;
        let waiter = taker.waiter.or_else(|| {
            // A fetch may have gone idle since the place was promised: it takes the turn at once.
            let waiter = handoffs.reserve(1, Some(taker.lock)).0.pop()?;
            handoffs.unreserve_stock();
            Some(waiter)
        });
        let Some(waiter) = waiter else {
            self.stock(
                Queue::Orchestrator,
                |inner| &inner.turn_handoffs,
                turn,
                (taker.lock, taker.leased_from),
                PostgresProvider::release_turn,
            );
            return;
        };
        if let Some(turn) = handoffs.deliver(&waiter, turn) {
            self.release_turn(turn);
        }
    }

    /// Runs `abandon` in the background; once it handed items back (how many it returns), fetches
    /// hear of them.
    fn hand_back<F, Fut>(&self, queue: Queue, abandon: F)
    where
        F: FnOnce(PostgresProvider) -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, ProviderError>> + Send,
    {
        let provider = self.clone();
        tokio::spawn(async move {
            if let Ok(n @ 1..) = abandon(provider.clone()).await {
                provider.announce(queue, Wake::items(usize::try_from(n).unwrap_or(usize::MAX)));
            }
        });
    }

    /// A long poll of `queue` with `look`; with `handoffs`, the fetch also takes an item an ack hands
    /// it while it is idle (see `handoff`), whichever comes first.
    async fn fetch_or_take<T, F, Fut>(
        &self,
        queue: Queue,
        key: &str,
        poll_timeout: Duration,
        handoffs: Option<(&Handoffs<T>, Duration)>,
        mut look: F,
        release: Release<T>,
    ) -> Result<Option<T>, ProviderError>
    where
        T: Send + 'static,
        F: FnMut(Option<Arc<Conn>>) -> Fut,
        Fut: Future<Output = Result<Polled<T>, ProviderError>>,
    {
        let wakeups = &self.inner.wakeups;
        let Some((handoffs, lock_timeout)) = handoffs else {
            return wakeups
                .long_poll(queue, key, poll_timeout, |via| {
                    look(via.map(|routed| routed.conn))
                })
                .await;
        };
        if let Some(item) = handoffs.take_stocked(lock_timeout) {
            return Ok(Some(item));
        }
        let (waiter, handed) = handoffs.register(lock_timeout);
        let mut registration = Registration {
            handoffs,
            waiter: waiter.clone(),
            handed,
            release,
        };
        // A look this fetch was woken for but does not make goes to another fetch, on the same
        // connection when it was routed after an ack (see `Wakeups::work_sent`): dropped, the work
        // it was for would wait for the next recheck.
        let pass_on = |via: Option<Routed>| match via {
            Some(routed) => wakeups.pass_on(queue, &routed),
            None => wakeups.work_arrived(queue, Wake::Some(1)),
        };
        let polled = wakeups.long_poll(queue, key, poll_timeout, |via| {
            let found = look(via.as_ref().map(|routed| routed.conn.clone()));
            let routed = via;
            let waiter = waiter.clone();
            async move {
                if !waiter.begin_look().await {
                    // Woken for queued work while an ack was handing this fetch an item: this
                    // fetch ends with its handed item (the select below).
                    pass_on(routed);
                    return std::future::pending().await;
                }
                // Woken for an item an ack stocked while this fetch was busy, or for other work
                // while there is one: the stocked item is taken, the look passed on.
                if let Some(item) = handoffs.take_stocked(lock_timeout) {
                    waiter.end_look();
                    pass_on(routed);
                    return Ok(Polled::Found {
                        item,
                        rest: Rest::Unknown,
                    });
                }
                let found = found.await;
                waiter.end_look();
                found
            }
        });
        tokio::pin!(polled);
        // The poll goes first: a look that waited for this fetch's promised item passes its wake-up
        // on before the item is taken (taken first, the wake-up would go with the dropped poll).
        let found = tokio::select! {
            biased;
            found = &mut polled => found,
            Ok(item) = &mut registration.handed => return Ok(Some(item)),
        };
        if !matches!(found, Ok(None)) {
            return found;
        }
        // The poll ended while an ack in flight was handing this fetch an item: wait for it rather
        // than have it handed back and fetched again (for a while, a backstop: an ack dropped
        // mid-way gives its promise back, and an item delivered after the fetch ended goes back).
        let settled = tokio::time::timeout(SETTLE_LIMIT, waiter.settle()).await;
        if settled.unwrap_or(false) {
            if let Ok(item) = registration.handed.try_recv() {
                return Ok(Some(item));
            }
        }
        // A query of another fetch that ran alongside this one's may have leased the last queued
        // items, beyond its own looks, for the stock: this fetch takes one rather than come back
        // empty while they wait there.
        Ok(handoffs.take_stocked(lock_timeout))
    }

    /// Counts rows deleted from the queue tables, vacuuming them in the background when enough were.
    fn deleted(&self, rows: u64) {
        if self.inner.maintenance.deleted(rows) {
            let inner = self.inner.clone();
            tokio::spawn(async move { maintenance::vacuum(&inner.db, &inner.maintenance).await });
        }
    }

    /// A hook for an ack: once it is sent, wakes local fetches for the `orchestrator` and `worker`
    /// items it will make fetchable, with their looks routed after its commit (`Wakeups::work_sent`).
    /// The caller passes the returned write to `Wakeups::write_returned` once the ack returned.
    fn announce_when_sent(&self, orchestrator: usize, worker: usize) -> (Sent, Write) {
        let wakeups = self.inner.wakeups.clone();
        let write = Write::default();
        let announced = write.clone();
        let sent: Sent = Box::new(move |conn| {
            if worker > 0 {
                wakeups.work_sent(Queue::Worker, Wake::items(worker), conn, &announced);
            }
            if orchestrator > 0 {
                wakeups.work_sent(Queue::Orchestrator, Wake::items(orchestrator), conn, &announced);
            }
        });
        (sent, write)
    }

    /// After an ack whose expected items were announced when it was sent: local fetches hear of
    /// the rest, other processes of everything.
    fn announce_effects(&self, effects: AckEffects, sent_orchestrator: usize) {
        if effects.unknown {
            self.announce(Queue::Orchestrator, Wake::All);
            self.announce(Queue::Worker, Wake::All);
            return;
        }
        let more = effects
            .orchestrator
            .saturating_sub(u32::try_from(sent_orchestrator).unwrap_or(u32::MAX));
        if more > 0 {
            self.inner
                .wakeups
                .work_arrived(Queue::Orchestrator, Wake::Some(more));
        }
        if effects.orchestrator > 0 {
            self.inner
                .listener
                .announce(Queue::Orchestrator, Wake::Some(effects.orchestrator));
        }
        if effects.worker > 0 {
            self.inner
                .listener
                .announce(Queue::Worker, Wake::Some(effects.worker));
        }
    }
}

/// How many of `messages` are visible at once, and when the first of the others becomes visible
/// (a local instant, a millisecond after its `visible_at_ms` on this host's clock, the clock the
/// runtime stamped it with).
fn split_by_due(messages: &[NewMessage]) -> (usize, Option<Instant>) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let later = messages
        .iter()
        .filter_map(|m| m.visible_at_ms)
        .filter(|&at| at > now_ms)
        .min();
    let immediate = messages
        .iter()
        .filter(|m| m.visible_at_ms.is_none_or(|at| at <= now_ms))
        .count();
    let due = later.map(|at| Instant::now() + Duration::from_millis(at - now_ms + 1));
    (immediate, due)
}

/// What a fetch query that also leased items for the stock brought (see [`query_with_stock`]).
struct StockingQuery<T> {
    /// The waiting fetches' items.
    batch: Batch<T>,
    /// Items for the stock, each in a place promised to it.
    extra: Vec<T>,
    /// No later than the lease began (taken before the query was sent).
    leased_from: Instant,
    /// What every item of the query is leased for.
    lease: Duration,
}

/// Runs a fetch query for `looks` waiting fetches that also leases up to `max_extra` more items
/// for the stock of `handoffs`, as it has places (see `handoff`). `query(lease, places)` leases
/// every item for `lease` (longer when there are places, for the stock) and returns the looks'
/// items first. Places the query did not fill are given back.
async fn query_with_stock<T, F, Fut>(
    handoffs: &Handoffs<T>,
    max_extra: usize,
    lock_timeout: Duration,
    looks: usize,
    query: F,
) -> Result<StockingQuery<T>, ProviderError>
where
    F: FnOnce(Duration, usize) -> Fut,
    Fut: Future<Output = Result<Batch<T>, ProviderError>>,
{
    let places = handoffs.reserve_stock_places(max_extra);
    let leased_from = Instant::now();
    let lease = if places > 0 {
        handoff::stock_lease(lock_timeout)
    } else {
        lock_timeout
    };
    let promised = Promised::new(handoffs, &[], places);
    let fetched = query(lease, places).await;
    promised.settled();
    let mut batch = match fetched {
        Ok(batch) => batch,
        Err(err) => {
            (0..places).for_each(|_| handoffs.unreserve_stock());
            return Err(err);
        }
    };
    let extra = batch.items.split_off(looks.min(batch.items.len()));
    (extra.len()..places).for_each(|_| handoffs.unreserve_stock());
    Ok(StockingQuery {
        batch,
        extra,
        leased_from,
        lease,
    })
}

/// Who gets a turn an operation locks (see `PostgresProvider::reserve_turn_taker`).
struct TurnTaker {
    /// An idle fetch; `None`: the stock.
    waiter: Option<Arc<Waiter<CachedFetch>>>,
    /// The fetches' lock timeout.
    lock: Duration,
    /// Taken before the statement that locks the turn is sent.
    leased_from: Instant,
}

impl TurnTaker {
    /// What to lock the turn for: a stocked turn may wait a while before a fetch takes it.
    fn lease(&self) -> Duration {
        match self.waiter {
            Some(_) => self.lock,
            None => handoff::stock_lease(self.lock),
        }
    }
}

/// A fetch registered for handed items (see `handoff`); when it ends, it stops waiting there, and an
/// item handed to it that it did not take goes back.
struct Registration<'a, T> {
    handoffs: &'a Handoffs<T>,
    waiter: Arc<Waiter<T>>,
    handed: oneshot::Receiver<T>,
    release: Release<T>,
}

impl<T> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        self.handoffs.unregister(&self.waiter);
        self.handed.close();
        if let Ok(item) = self.handed.try_recv() {
            (self.release)(item);
        }
    }
}

#[async_trait]
impl Provider for PostgresProvider {
    async fn create_instance(&self, message: NewMessage) -> Result<bool, ProviderError> {
        // A client sharing this object with a runtime: the new instance goes locked to an idle
        // orchestration fetch or the stock (see `handoff`), unless it starts later.
        let taker = message
            .visible_at_ms
            .is_none()
            .then(|| self.reserve_turn_taker())
            .flatten();
        let lease = taker.as_ref().map(TurnTaker::lease);
        let promised = self.promised_turn(taker.as_ref());
        let created = orchestrator_queue::create_instance(self.db(), &message, lease).await;
        promised.settled();
        let (created, turn) = match created {
            Ok(done) => done,
            Err(err) => {
                self.give_back_turn_taker(taker);
                return Err(err);
            }
        };
        if !self.hand_turn_or_give_back(taker, turn) && created {
            self.announce_message(&message);
        }
        Ok(created)
    }

    async fn enqueue_message(&self, message: NewMessage) -> Result<(), ProviderError> {
        orchestrator_queue::enqueue_message(self.db(), &message).await?;
        self.announce_message(&message);
        Ok(())
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
    ) -> Result<Option<OrchestrationItem>, ProviderError> {
        let turn = self.fetch_turn_for(lock_timeout, poll_timeout, None).await?;
        Ok(turn.map(|turn| turn.item))
    }

    async fn fetch_orchestration_item_cached(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        cache: Arc<dyn HistoryCache>,
    ) -> Result<Option<CachedFetch>, ProviderError> {
        self.fetch_turn_for(lock_timeout, poll_timeout, Some(&*cache))
            .await
    }

    async fn ack_orchestration_item(&self, lock_token: &str, ack: TurnAck) -> Result<(), ProviderError> {
        // Idle worker fetches of this object get the turn's new work items directly (see `handoff`).
        let handable = ack.worker_items.iter().filter(|w| turn_ack::handable(w)).count();
        let (takers, lock) = self.inner.work_handoffs.reserve(handable, None);
        let lease = (!takers.is_empty()).then_some(LeaseRequest {
            count: takers.len(),
            lock,
            secret: self.db().new_secret(),
        });
        let messages = ack.messages.len();
        // Messages for later (timers) wake no fetch now: they give a due hint once committed.
        let (immediate, later) = split_by_due(&ack.messages);
        let (sent, write) = self.announce_when_sent(immediate, ack.worker_items.len() - takers.len());
        let promised = Promised::new(&self.inner.work_handoffs, &takers, 0);
        let acked = self
            .settling(
                lock_token,
                turn_ack::ack(self.db(), lock_token, &ack, Some(sent), lease),
            )
            .await;
        self.inner.wakeups.write_returned(&write);
        promised.settled();
        let instance_id = lock_token::parse(lock_token).map(|(_, instance_id)| instance_id);
        let (effects, leases) = match acked {
            Ok(done) => done,
            Err(err) => {
                // The lock ends with the ack, whatever its outcome (see `held_turns`).
                if instance_id.is_some_and(|id| self.end_held_turn(id, lock_token)) {
                    self.announce(Queue::Orchestrator, Wake::Some(1));
                }
                takers.iter().for_each(|taker| taker.unreserve());
                if let (Some(lease), Some(instance_id)) = (lease, instance_id) {
                    let held = Held::WorkItems {
                        instance_id: instance_id.to_owned(),
                    };
                    self.remember_if_unsettled(lock_token, &err, lease.secret, held);
                }
                return Err(err);
            }
        };
        let mut takers = takers.into_iter();
        for lease in leases {
            let undelivered = match takers.next() {
                Some(taker) => self.inner.work_handoffs.deliver(&taker, lease),
                None => Some(lease),
            };
            if let Some(lease) = undelivered {
                self.release_work(lease);
            }
        }
        takers.for_each(|taker| taker.unreserve());
        if let Some(due) = later {
            self.inner.wakeups.due_at(Queue::Orchestrator, due.into());
        }
        // Messages that arrived during the turn are counted in the ack's effects when it saw them
        // (more items than the turn's messages) and announced below, after it returned, so after
        // any result deferred to the lock committed; the fetch that wakes is likely to lock the
        // instance again, so results keep deferring for a moment. Otherwise deferred results are
        // announced here.
        if let Some(instance_id) = instance_id {
            let waiting = !effects.unknown && effects.orchestrator as usize > messages;
            if waiting {
                self.linger_held_turn(instance_id, lock_token);
            } else if self.end_held_turn(instance_id, lock_token) {
                self.announce(Queue::Orchestrator, Wake::Some(1));
            }
        }
        self.announce_effects(effects, messages);
        // Clients in other processes wait on the status and custom status (most turns change neither).
        if ack.changes_status() {
            // The token names the instance (a token it could not parse would have failed the ack).
            if let Some(instance_id) = instance_id {
                self.inner.listener.announce_instance(instance_id);
            }
        }
        // At least the turn's message, and the cancelled work items.
        self.deleted(1 + ack.cancel_activities.len() as u64);
        Ok(())
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        // A runtime that gives up on an ack abandons its turn: that settles earlier attempts too.
        let abandoned = self
            .settling(
                lock_token,
                orchestrator_queue::abandon(self.db(), lock_token, delay),
            )
            .await;
        // Waiting fetches must look again: at once (no delay) or to learn the new due time. That
        // also announces results deferred to the lock, which ends here (see `held_turns`).
        let deferred = lock_token::parse(lock_token)
            .is_some_and(|(_, instance_id)| self.end_held_turn(instance_id, lock_token));
        if abandoned.is_ok() || deferred {
            self.announce(Queue::Orchestrator, Wake::All);
        }
        abandoned?;
        Ok(())
    }

    async fn renew_orchestration_item_lock(
        &self,
        lock_token: &str,
        extend_by: Duration,
    ) -> Result<(), ProviderError> {
        orchestrator_queue::renew(self.db(), lock_token, extend_by).await
    }

    async fn fetch_work_item(
        &self,
        request: &WorkerFetch,
        poll_timeout: Duration,
    ) -> Result<Option<WorkItemLease>, ProviderError> {
        if !worker_queue::admits_anything(request) {
            // Nothing can ever match; wait out the poll (or a wake_all) so callers do not spin.
            return self
                .inner
                .wakeups
                .long_poll(Queue::Worker, "admits nothing", poll_timeout, |_| async {
                    Ok(crate::wakeups::Polled::Empty { due: None })
                })
                .await;
        }
        let key = worker_queue::request_key(request);
        let fetch: Fetch<WorkItemLease> = {
            let (provider, request) = (self.clone(), request.clone());
            Arc::new(move |via, max| {
                let (provider, request) = (provider.clone(), request.clone());
                Box::pin(async move { provider.fetch_work(&request, via, max).await })
            })
        };
        let release: Release<WorkItemLease> = {
            let provider = self.clone();
            Arc::new(move |lease: WorkItemLease| provider.release_work(lease))
        };
        let group = worker_queue::batch_key(request);
        let handoffs = worker_queue::takes_untagged(request)
            .then_some((&self.inner.work_handoffs, request.lock_timeout));
        self.fetch_or_take(
            Queue::Worker,
            &key,
            poll_timeout,
            handoffs,
            |via| {
                self.inner
                    .work_fetches
                    .look(group.clone(), via, fetch.clone(), release.clone())
            },
            release.clone(),
        )
        .await
    }

    async fn ack_work_item(
        &self,
        lock_token: &str,
        completion: Option<NewMessage>,
    ) -> Result<(), ProviderError> {
        // An idle orchestration fetch of this object (or the stock) gets the instance the completion
        // goes to, when no turn of it runs (see `handoff`). Only plain messages qualify.
        let taker = completion
            .as_ref()
            .filter(|c| worker_queue::is_plain(c))
            .and_then(|_| self.reserve_turn_taker());
        // Local fetches hear of the completion when the ack is sent unless it may find the instance
        // locked: when leasing, only if the ack could not lock it (a turn of it runs, or a fetch
        // holds it for a moment); when this object holds a turn of it, only when that turn ends
        // (see `held_turns`). Either way they would have found it locked.
        let held = completion
            .as_ref()
            .is_some_and(|c| self.inner.held_turns.holds(&c.instance_id));
        let (sent, write) = (completion.is_some() && taker.is_none() && !held)
            .then(|| self.announce_when_sent(1, 0))
            .unzip();
        let lease = taker
            .as_ref()
            .map(|taker| (taker.lease(), self.db().new_secret()));
        let leasing = taker.is_some();
        let promised = self.promised_turn(taker.as_ref());
        let acked = self
            .settling(
                lock_token,
                worker_queue::ack(self.db(), lock_token, completion.as_ref(), sent, lease),
            )
            .await;
        if let Some(write) = &write {
            self.inner.wakeups.write_returned(write);
        }
        promised.settled();
        let acked = match acked {
            Ok(acked) => acked,
            Err(err) => {
                self.give_back_turn_taker(taker);
                if let (Some((_, secret)), Some(completion)) = (lease, &completion) {
                    let held = Held::Turn {
                        instance_id: completion.instance_id.clone(),
                    };
                    self.remember_if_unsettled(lock_token, &err, secret, held);
                }
                return Err(err);
            }
        };
        self.deleted(1);
        if !self.hand_turn_or_give_back(taker, acked.turn) && acked.enqueued {
            match &completion {
                // A turn of the instance runs (or a fetch held it a moment): local fetches were not
                // told when the ack was sent.
                Some(completion) if leasing || held => self.announce_completion(&completion.instance_id),
                _ => self.inner.listener.announce(Queue::Orchestrator, Wake::Some(1)),
            }
        }
        Ok(())
    }

    async fn abandon_work_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        let abandoned = self
            .settling(lock_token, worker_queue::abandon(self.db(), lock_token, delay))
            .await;
        abandoned?;
        // As for orchestrations: at once, or to learn the new due time.
        self.announce(Queue::Worker, Wake::All);
        Ok(())
    }

    async fn renew_work_item_lock(&self, lock_token: &str, extend_by: Duration) -> Result<(), ProviderError> {
        worker_queue::renew(self.db(), lock_token, extend_by).await
    }

    async fn renew_session_leases(
        &self,
        owner_id: &str,
        session_ids: &[String],
        extend_by: Duration,
    ) -> Result<usize, ProviderError> {
        if session_ids.is_empty() {
            return Ok(0);
        }
        worker_queue::renew_sessions(self.db(), owner_id, session_ids, extend_by).await
    }

    async fn release_session(&self, owner_id: &str, session_id: &str) -> Result<(), ProviderError> {
        if worker_queue::release_session(self.db(), owner_id, session_id).await? {
            // Items of this session waiting for their owner may now go to any worker.
            self.announce(Queue::Worker, Wake::All);
        }
        Ok(())
    }

    async fn get_instance_info(&self, instance_id: &str) -> Result<Option<InstanceInfo>, ProviderError> {
        reads::instance_info(self.db(), instance_id).await
    }

    async fn get_custom_status(&self, instance_id: &str) -> Result<Option<CustomStatus>, ProviderError> {
        reads::custom_status(self.db(), instance_id).await
    }

    async fn get_instance_state(
        &self,
        instance_id: &str,
    ) -> Result<Option<(InstanceInfo, CustomStatus)>, ProviderError> {
        reads::instance_state(self.db(), instance_id).await
    }

    async fn read_history(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Vec<HistoryRecord>, ProviderError> {
        reads::history(self.db(), instance_id, execution_id).await
    }

    async fn get_kv_value(&self, instance_id: &str, key: &str) -> Result<Option<String>, ProviderError> {
        reads::kv_value(self.db(), instance_id, key).await
    }

    async fn get_kv_entries(&self, instance_id: &str) -> Result<Vec<KvEntry>, ProviderError> {
        reads::kv_entries(self.db(), instance_id).await
    }

    async fn list_instances(&self, status: Option<InstanceStatus>) -> Result<Vec<String>, ProviderError> {
        management::list_instances(self.db(), status).await
    }

    async fn list_executions(&self, instance_id: &str) -> Result<Vec<u64>, ProviderError> {
        management::list_executions(self.db(), instance_id).await
    }

    async fn get_execution_info(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Option<ExecutionInfo>, ProviderError> {
        management::execution_info(self.db(), instance_id, execution_id).await
    }

    async fn get_instance_tree(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        management::get_instance_tree(self.db(), instance_id).await
    }

    async fn delete_instance(&self, instance_id: &str, force: bool) -> Result<DeleteResult, ProviderError> {
        retention::delete_instance(self.db(), instance_id, force).await
    }

    async fn delete_instances_bulk(&self, filter: &InstanceFilter) -> Result<DeleteResult, ProviderError> {
        retention::delete_instances_bulk(self.db(), filter).await
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        retention::prune_executions(self.db(), instance_id, options).await
    }

    async fn prune_executions_bulk(
        &self,
        filter: &InstanceFilter,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        retention::prune_executions_bulk(self.db(), filter, options).await
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        management::system_metrics(self.db()).await
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        management::queue_depths(self.db()).await
    }

    async fn get_instance_stats(&self, instance_id: &str) -> Result<Option<InstanceStats>, ProviderError> {
        management::instance_stats(self.db(), instance_id).await
    }

    /// Also hands back stocked turns and work items: the runtime calls this when it stops fetching.
    fn wake_all(&self) {
        self.inner.wakeups.wake_all();
        // (A runtime dropped outside any async runtime cannot hand them back; their leases expire.)
        if tokio::runtime::Handle::try_current().is_ok() {
            for turn in self.inner.turn_handoffs.take_all_stocked() {
                self.release_turn(turn);
            }
            for lease in self.inner.work_handoffs.take_all_stocked() {
                self.release_work(lease);
            }
        }
    }

    /// Other provider objects announce such changes on the listener's channel after their commit;
    /// this object calls `on_change` for each id it hears (see `listener` in the source).
    fn watch_instance_changes(&self, on_change: InstanceChangeHook) -> bool {
        self.inner.listener.watch_instances(on_change);
        true
    }
}
