//! Fault injection for reliability tests: a [`Provider`] wrapper that fails, delays and loses the
//! replies of calls on a seeded schedule, and a [`TurnMonitor`] that proves no instance (or worker
//! item) was handed to a second holder while a first still held it under a live lease.
//!
//! # Faults
//!
//! [`FaultyProvider`] wraps any `Arc<dyn Provider>`. For every call to an operation named in
//! [`FaultConfig::ops`] it draws, from a seeded generator, whether to
//!
//! * **delay** the call (before it reaches the store) by up to [`FaultConfig::max_delay`];
//! * fail it with a **retryable** error before it reaches the store (nothing changed);
//! * fail it with a **permanent** (non-retryable) error before it reaches the store (nothing changed);
//! * **lose the reply**: forward the call, let it commit, then return a retryable error anyway — the
//!   caller must cope with not knowing that its call succeeded.
//!
//! Counters say how many faults of each kind were injected ([`FaultStats`]). Work-item calls are
//! attributed to the activity they concern, so a test can tell which activities a fault touched
//! ([`FaultyProvider::touched_activities`]): only those may legitimately run more than once. So are
//! the results an orchestration ack records in its history: a runtime that ran those activities in
//! process, without work items, runs them again when that ack fails.
//!
//! The seed fixes the sequence of decisions, one independent stream per operation. Which call gets
//! which decision still depends on how concurrent tasks interleave, so a seed reproduces the mix and
//! rate of faults exactly and the precise schedule usually; print it with every failure.
//!
//! # The exclusive-turn monitor
//!
//! [`TurnMonitor`] records, per resource (an instance's orchestration lock, or one worker item),
//! when a fetch handed it out (the call's start and end), renewals, and when the holder acked or
//! abandoned it. It flags:
//!
//! * **overlap**: a second fetch returned the resource at a time when the first holder had neither
//!   started to release it nor could its lease have run out (the lease is counted from the *start*
//!   of the fetch or renewal call, the earliest moment the store could have stamped it, so a flag is
//!   a definite violation, never a timing artefact);
//! * **stale commit**: a holder's ack or abandon succeeded although it began after another fetch had
//!   taken the resource over (the store must answer `LockLost` then).
//!
//! Times are wall-clock microseconds since the Unix epoch, so records from several processes on one
//! machine compare. A monitor can append every record to a journal file
//! ([`TurnMonitor::with_journal`]); a test that SIGKILLs processes reads all their journals back into
//! one monitor afterwards ([`TurnMonitor::from_journals`]). A fetch whose holder was killed simply never
//! releases: the next fetch of that resource must wait for the lease.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use duroxide_core::codec;
use duroxide_core::provider::{
    ActivityRef, CustomStatus, DeleteResult, ExecutionInfo, HistoryRecord, InstanceChangeHook,
    InstanceFilter, InstanceInfo, InstanceStats, InstanceStatus, KvEntry, NewMessage, OrchestrationItem,
    Provider, ProviderError, ProviderErrorKind, PruneOptions, PruneResult, QueueDepths, SystemMetrics,
    TurnAck, WorkItemLease, WorkerFetch,
};

// ---- randomness -------------------------------------------------------------------------------------

/// A small, fast, seedable generator (SplitMix64). Good enough for test schedules and workloads; not
/// for anything that needs unpredictability.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A uniform value in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// Wall-clock microseconds since the Unix epoch (comparable across processes on one machine).
pub fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the monitor's findings from the others.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- configuration ----------------------------------------------------------------------------------

/// A provider operation, as named by the [`Provider`] trait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    CreateInstance,
    EnqueueMessage,
    FetchOrchestrationItem,
    AckOrchestrationItem,
    AbandonOrchestrationItem,
    RenewOrchestrationItemLock,
    FetchWorkItem,
    AckWorkItem,
    AbandonWorkItem,
    RenewWorkItemLock,
    RenewSessionLeases,
    ReleaseSession,
    /// Every read and management call (instance info, custom status, history, KV, lists, deletes,
    /// prunes, metrics).
    ReadOrManage,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 13] = [
        Op::CreateInstance,
        Op::EnqueueMessage,
        Op::FetchOrchestrationItem,
        Op::AckOrchestrationItem,
        Op::AbandonOrchestrationItem,
        Op::RenewOrchestrationItemLock,
        Op::FetchWorkItem,
        Op::AckWorkItem,
        Op::AbandonWorkItem,
        Op::RenewWorkItemLock,
        Op::RenewSessionLeases,
        Op::ReleaseSession,
        Op::ReadOrManage,
    ];

    /// What a runtime's dispatchers call: both queues' fetch, ack, abandon and renew, and sessions.
    /// Client calls are left alone so that a test's own driving (starts, events, waits) stays exact.
    pub const DISPATCH: [Op; 10] = [
        Op::FetchOrchestrationItem,
        Op::AckOrchestrationItem,
        Op::AbandonOrchestrationItem,
        Op::RenewOrchestrationItemLock,
        Op::FetchWorkItem,
        Op::AckWorkItem,
        Op::AbandonWorkItem,
        Op::RenewWorkItemLock,
        Op::RenewSessionLeases,
        Op::ReleaseSession,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Op::CreateInstance => "create_instance",
            Op::EnqueueMessage => "enqueue_message",
            Op::FetchOrchestrationItem => "fetch_orchestration_item",
            Op::AckOrchestrationItem => "ack_orchestration_item",
            Op::AbandonOrchestrationItem => "abandon_orchestration_item",
            Op::RenewOrchestrationItemLock => "renew_orchestration_item_lock",
            Op::FetchWorkItem => "fetch_work_item",
            Op::AckWorkItem => "ack_work_item",
            Op::AbandonWorkItem => "abandon_work_item",
            Op::RenewWorkItemLock => "renew_work_item_lock",
            Op::RenewSessionLeases => "renew_session_leases",
            Op::ReleaseSession => "release_session",
            Op::ReadOrManage => "read_or_manage",
        }
    }
}

/// Fault rates (probabilities per call, each in `[0, 1]`) and which operations they apply to.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Fail with `Retryable` before the store is reached.
    pub retryable_rate: f64,
    /// Fail with `Permanent` before the store is reached.
    pub permanent_rate: f64,
    /// Forward the call, then report a `Retryable` error whatever the store answered.
    pub lost_reply_rate: f64,
    /// Sleep before forwarding (independent of the other faults).
    pub delay_rate: f64,
    /// Longest injected delay; each delay is uniform in `0..=max_delay`.
    pub max_delay: Duration,
    /// Operations faults apply to; others pass straight through.
    pub ops: Vec<Op>,
}

impl FaultConfig {
    /// No faults at all (a transparent wrapper, still feeding a monitor).
    pub fn none() -> Self {
        FaultConfig {
            retryable_rate: 0.0,
            permanent_rate: 0.0,
            lost_reply_rate: 0.0,
            delay_rate: 0.0,
            max_delay: Duration::ZERO,
            ops: Op::DISPATCH.to_vec(),
        }
    }

    /// A moderate mix on the dispatcher operations: 4 % retryable, 1 % permanent, 3 % lost replies,
    /// 5 % delays of up to 30 ms.
    pub fn moderate() -> Self {
        FaultConfig {
            retryable_rate: 0.04,
            permanent_rate: 0.01,
            lost_reply_rate: 0.03,
            delay_rate: 0.05,
            max_delay: Duration::from_millis(30),
            ops: Op::DISPATCH.to_vec(),
        }
    }
}

// ---- counters ---------------------------------------------------------------------------------------

/// How many faults of each kind were injected, in all and per operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FaultStats {
    /// Calls that went through the wrapper.
    pub calls: u64,
    pub retryable: u64,
    pub permanent: u64,
    /// Lost replies of calls the store answered with success (the effect happened, the caller was
    /// told it failed).
    pub lost_reply: u64,
    pub delayed: u64,
    /// Per operation: (retryable, permanent, lost replies, delays).
    pub per_op: BTreeMap<Op, [u64; 4]>,
}

impl FaultStats {
    /// Faults that made a call fail (delays excluded).
    pub fn failures(&self) -> u64 {
        self.retryable + self.permanent + self.lost_reply
    }

    /// Sums two snapshots (for several wrappers in one test).
    pub fn merged(mut self, other: &FaultStats) -> FaultStats {
        self.calls += other.calls;
        self.retryable += other.retryable;
        self.permanent += other.permanent;
        self.lost_reply += other.lost_reply;
        self.delayed += other.delayed;
        for (op, counts) in &other.per_op {
            let mine = self.per_op.entry(*op).or_default();
            for (m, o) in mine.iter_mut().zip(counts) {
                *m += o;
            }
        }
        self
    }
}

impl fmt::Display for FaultStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} calls: {} retryable, {} permanent, {} lost replies, {} delays",
            self.calls, self.retryable, self.permanent, self.lost_reply, self.delayed
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    // [op][kind]
    per_op: [[AtomicU64; 4]; Op::ALL.len()],
}

const RETRYABLE: usize = 0;
const PERMANENT: usize = 1;
const LOST_REPLY: usize = 2;
const DELAYED: usize = 3;

// ---- the wrapper ------------------------------------------------------------------------------------

/// What to do with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Forward,
    Retryable,
    Permanent,
    LoseReply,
}

/// Where a call is when a [`CallHook`] is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPhase {
    /// The call is about to reach the store (no fault stopped it).
    BeforeStore,
    /// The store answered with success (for fetches: handed something out); the caller has not yet
    /// seen the reply.
    AfterCommit,
}

/// What a [`CallHook`] wants done with the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    Continue,
    /// Never return: the call hangs where it is (for a test that SIGKILLs the process right there).
    Freeze,
}

/// Consulted at both phases of every call (see [`FaultyProvider::with_hook`]).
pub type CallHook = Arc<dyn Fn(Op, CallPhase) -> HookAction + Send + Sync>;

/// A provider that injects faults into another. See the module documentation.
pub struct FaultyProvider {
    inner: Arc<dyn Provider>,
    config: FaultConfig,
    seed: u64,
    /// One stream per operation, so the decisions for one operation do not shift when another one is
    /// called more or less often.
    streams: Mutex<Vec<SplitMix64>>,
    counters: Counters,
    enabled: AtomicBool,
    monitor: Option<Arc<TurnMonitor>>,
    hook: Option<CallHook>,
    /// Worker lock token → the activity it locks, to attribute faults to activities; forgotten once
    /// released.
    work_tokens: Mutex<HashMap<String, ActivityRef>>,
    /// The instance of each orchestration lock handed out and not yet released.
    orch_tokens: Mutex<HashMap<String, String>>,
    touched: Mutex<HashSet<ActivityRef>>,
}

impl fmt::Debug for FaultyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyProvider")
            .field("seed", &self.seed)
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl FaultyProvider {
    /// Wraps `inner`; the decisions follow from `seed`.
    pub fn new(inner: Arc<dyn Provider>, config: FaultConfig, seed: u64) -> Self {
        let streams = Op::ALL
            .iter()
            .map(|op| SplitMix64::new(seed ^ (0xA076_1D64_78BD_642F_u64.wrapping_mul(op.index() as u64 + 1))))
            .collect();
        FaultyProvider {
            inner,
            config,
            seed,
            streams: Mutex::new(streams),
            counters: Counters::default(),
            enabled: AtomicBool::new(true),
            monitor: None,
            hook: None,
            work_tokens: Mutex::new(HashMap::new()),
            orch_tokens: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashSet::new()),
        }
    }

    /// Reports every hand-out, renewal and release to `monitor`.
    pub fn with_monitor(mut self, monitor: Arc<TurnMonitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// Consults `hook` before each call reaches the store and after it succeeded there, so a test can
    /// freeze a call at an exact point (before an ack, after a commit) and kill the process there.
    pub fn with_hook(mut self, hook: CallHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Runs the hook; a `Freeze` never returns.
    async fn checkpoint(&self, op: Op, phase: CallPhase) {
        if let Some(hook) = &self.hook {
            if hook(op, phase) == HookAction::Freeze {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn inner(&self) -> &Arc<dyn Provider> {
        &self.inner
    }

    /// Turns injection on or off (the monitor keeps recording either way).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::SeqCst);
    }

    pub fn stats(&self) -> FaultStats {
        let mut stats = FaultStats {
            calls: self.counters.calls.load(Ordering::Relaxed),
            ..FaultStats::default()
        };
        for op in Op::ALL {
            let counts: [u64; 4] =
                std::array::from_fn(|k| self.counters.per_op[op.index()][k].load(Ordering::Relaxed));
            stats.retryable += counts[RETRYABLE];
            stats.permanent += counts[PERMANENT];
            stats.lost_reply += counts[LOST_REPLY];
            stats.delayed += counts[DELAYED];
            if counts.iter().any(|&c| c > 0) {
                stats.per_op.insert(op, counts);
            }
        }
        stats
    }

    /// Activities whose worker-item calls a fault touched (delayed, failed or lost a reply): only
    /// these may run more than once in a test where nothing else goes wrong.
    pub fn touched_activities(&self) -> HashSet<ActivityRef> {
        lock(&self.touched).clone()
    }

    fn count(&self, op: Op, kind: usize) {
        self.counters.per_op[op.index()][kind].fetch_add(1, Ordering::Relaxed);
    }

    /// Draws this call's fate and sleeps for an injected delay. Returns the plan and whether any fault
    /// (delay included) applies.
    async fn decide(&self, op: Op) -> (Plan, bool) {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        if !self.enabled.load(Ordering::SeqCst) || !self.config.ops.contains(&op) {
            return (Plan::Forward, false);
        }
        let c = &self.config;
        let (delay, plan) = {
            let mut streams = lock(&self.streams);
            let rng = &mut streams[op.index()];
            let delay = rng.chance(c.delay_rate).then(|| {
                let max = c.max_delay.as_micros() as u64;
                Duration::from_micros(rng.below(max + 1))
            });
            let roll = rng.unit();
            let plan = if roll < c.retryable_rate {
                Plan::Retryable
            } else if roll < c.retryable_rate + c.permanent_rate {
                Plan::Permanent
            } else if roll < c.retryable_rate + c.permanent_rate + c.lost_reply_rate {
                Plan::LoseReply
            } else {
                Plan::Forward
            };
            (delay, plan)
        };
        if let Some(delay) = delay {
            self.count(op, DELAYED);
            tokio::time::sleep(delay).await;
        }
        match plan {
            Plan::Retryable => self.count(op, RETRYABLE),
            Plan::Permanent => self.count(op, PERMANENT),
            // Counted once the store has answered with success (see `lost`).
            Plan::LoseReply | Plan::Forward => {}
        }
        (plan, delay.is_some() || plan != Plan::Forward)
    }

    fn injected(&self, op: Op, plan: Plan) -> ProviderError {
        let kind = if plan == Plan::Permanent {
            ProviderErrorKind::Permanent
        } else {
            ProviderErrorKind::Retryable
        };
        ProviderError::new(
            kind,
            op.name(),
            format!(
                "injected {kind:?} fault (seed {}) before the store was reached",
                self.seed
            ),
        )
    }

    /// The error a lost reply turns a successful result into (counted here).
    fn lost(&self, op: Op) -> ProviderError {
        self.count(op, LOST_REPLY);
        ProviderError::retryable(
            op.name(),
            format!(
                "injected lost reply (seed {}): the call committed but its reply was dropped",
                self.seed
            ),
        )
    }

    /// The plain path: faults, then the call, then perhaps a lost reply.
    async fn pass<T, Fut>(&self, op: Op, call: Fut) -> Result<T, ProviderError>
    where
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let (plan, _) = self.decide(op).await;
        if matches!(plan, Plan::Retryable | Plan::Permanent) {
            return Err(self.injected(op, plan));
        }
        self.checkpoint(op, CallPhase::BeforeStore).await;
        let value = call.await?;
        self.checkpoint(op, CallPhase::AfterCommit).await;
        match plan {
            Plan::LoseReply => Err(self.lost(op)),
            _ => Ok(value),
        }
    }

    fn touch_token(&self, token: &str) {
        if let Some(activity) = lock(&self.work_tokens).get(token) {
            lock(&self.touched).insert(activity.clone());
        }
    }

    fn record(&self, record: TurnRecord) {
        if let Some(monitor) = &self.monitor {
            monitor.record(record);
        }
    }

    /// Shared path of ack and abandon (both queues): they release the lock on success.
    async fn release<Fut>(&self, op: Op, token: &str, call: Fut) -> Result<(), ProviderError>
    where
        Fut: std::future::Future<Output = Result<(), ProviderError>>,
    {
        self.release_recording(op, token, &[], call).await
    }

    /// [`Self::release`] of a call that records the results of `recorded`: a fault touches them.
    async fn release_recording<Fut>(
        &self,
        op: Op,
        token: &str,
        recorded: &[ActivityRef],
        call: Fut,
    ) -> Result<(), ProviderError>
    where
        Fut: std::future::Future<Output = Result<(), ProviderError>>,
    {
        let (plan, faulted) = self.decide(op).await;
        if faulted {
            self.touch_token(token);
            lock(&self.touched).extend(recorded.iter().cloned());
        }
        if matches!(plan, Plan::Retryable | Plan::Permanent) {
            return Err(self.injected(op, plan));
        }
        self.checkpoint(op, CallPhase::BeforeStore).await;
        self.record(TurnRecord::ReleaseBegin {
            token: token.to_string(),
            at_us: epoch_us(),
        });
        let result = call.await;
        let outcome = match &result {
            Ok(()) => ReleaseOutcome::Released,
            Err(e) if e.kind == ProviderErrorKind::LockLost => ReleaseOutcome::NotHeld,
            Err(_) => ReleaseOutcome::Failed,
        };
        self.record(TurnRecord::ReleaseEnd {
            token: token.to_string(),
            at_us: epoch_us(),
            outcome,
        });
        if result.is_ok() {
            self.checkpoint(op, CallPhase::AfterCommit).await;
        }
        match (plan, result) {
            (Plan::LoseReply, Ok(())) => Err(self.lost(op)),
            (_, Ok(())) => {
                // The caller saw its release succeed, so it never uses this token again. (After a
                // lost reply it retries with the same token, which must still be attributed.)
                self.forget_token(token);
                Ok(())
            }
            (_, result) => result,
        }
    }

    fn forget_token(&self, token: &str) {
        lock(&self.work_tokens).remove(token);
        lock(&self.orch_tokens).remove(token);
    }

    /// Shared path of both renewals.
    async fn renew<Fut>(
        &self,
        op: Op,
        token: &str,
        extend_by: Duration,
        call: Fut,
    ) -> Result<(), ProviderError>
    where
        Fut: std::future::Future<Output = Result<(), ProviderError>>,
    {
        let (plan, faulted) = self.decide(op).await;
        if faulted {
            self.touch_token(token);
        }
        if matches!(plan, Plan::Retryable | Plan::Permanent) {
            return Err(self.injected(op, plan));
        }
        self.checkpoint(op, CallPhase::BeforeStore).await;
        let start_us = epoch_us();
        let result = call.await;
        if result.is_ok() {
            self.record(TurnRecord::Renewed {
                token: token.to_string(),
                call_start_us: start_us,
                extend_us: extend_by.as_micros() as u64,
            });
        }
        match (plan, result) {
            (Plan::LoseReply, Ok(())) => Err(self.lost(op)),
            (_, result) => result,
        }
    }
}

/// The monitor's resource key of a worker item.
pub fn work_resource(activity: &ActivityRef) -> String {
    format!(
        "work:{}#{}#{}",
        activity.instance_id, activity.execution_id, activity.event_id
    )
}

/// The monitor's resource key of an instance's orchestration lock.
pub fn instance_resource(instance_id: &str) -> String {
    format!("orch:{instance_id}")
}

#[async_trait]
impl Provider for FaultyProvider {
    async fn create_instance(&self, message: NewMessage) -> Result<bool, ProviderError> {
        self.pass(Op::CreateInstance, self.inner.create_instance(message))
            .await
    }

    async fn enqueue_message(&self, message: NewMessage) -> Result<(), ProviderError> {
        self.pass(Op::EnqueueMessage, self.inner.enqueue_message(message))
            .await
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
    ) -> Result<Option<OrchestrationItem>, ProviderError> {
        let op = Op::FetchOrchestrationItem;
        let (plan, _) = self.decide(op).await;
        if matches!(plan, Plan::Retryable | Plan::Permanent) {
            return Err(self.injected(op, plan));
        }
        self.checkpoint(op, CallPhase::BeforeStore).await;
        let start_us = epoch_us();
        let item = self
            .inner
            .fetch_orchestration_item(lock_timeout, poll_timeout)
            .await?;
        if let Some(item) = &item {
            lock(&self.orch_tokens).insert(item.lock_token.clone(), item.instance_id.clone());
            self.record(TurnRecord::Fetched {
                resource: instance_resource(&item.instance_id),
                token: item.lock_token.clone(),
                call_start_us: start_us,
                call_end_us: epoch_us(),
                lease_us: lock_timeout.as_micros() as u64,
            });
            self.checkpoint(op, CallPhase::AfterCommit).await;
        }
        match plan {
            // The instance stays locked until its lease runs out; nobody will ack it.
            Plan::LoseReply if item.is_some() => Err(self.lost(op)),
            _ => Ok(item),
        }
    }

    async fn ack_orchestration_item(&self, lock_token: &str, ack: TurnAck) -> Result<(), ProviderError> {
        // A runtime may run activities in process and commit their results with the turn that
        // takes them, never storing their work items: a fault on that ack makes them run again.
        let instance_id = lock(&self.orch_tokens).get(lock_token).cloned();
        let recorded = instance_id.map_or_else(Vec::new, |id| recorded_completions(&id, &ack));
        self.release_recording(
            Op::AckOrchestrationItem,
            lock_token,
            &recorded,
            self.inner.ack_orchestration_item(lock_token, ack),
        )
        .await
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        self.release(
            Op::AbandonOrchestrationItem,
            lock_token,
            self.inner.abandon_orchestration_item(lock_token, delay),
        )
        .await
    }

    async fn renew_orchestration_item_lock(
        &self,
        lock_token: &str,
        extend_by: Duration,
    ) -> Result<(), ProviderError> {
        self.renew(
            Op::RenewOrchestrationItemLock,
            lock_token,
            extend_by,
            self.inner.renew_orchestration_item_lock(lock_token, extend_by),
        )
        .await
    }

    async fn fetch_work_item(
        &self,
        request: &WorkerFetch,
        poll_timeout: Duration,
    ) -> Result<Option<WorkItemLease>, ProviderError> {
        let op = Op::FetchWorkItem;
        let (plan, _) = self.decide(op).await;
        if matches!(plan, Plan::Retryable | Plan::Permanent) {
            return Err(self.injected(op, plan));
        }
        self.checkpoint(op, CallPhase::BeforeStore).await;
        let start_us = epoch_us();
        let lease = self.inner.fetch_work_item(request, poll_timeout).await?;
        if let Some(lease) = &lease {
            lock(&self.work_tokens).insert(lease.lock_token.clone(), lease.activity.clone());
            self.record(TurnRecord::Fetched {
                resource: work_resource(&lease.activity),
                token: lease.lock_token.clone(),
                call_start_us: start_us,
                call_end_us: epoch_us(),
                lease_us: request.lock_timeout.as_micros() as u64,
            });
            self.checkpoint(op, CallPhase::AfterCommit).await;
        }
        match (plan, lease) {
            (Plan::LoseReply, Some(lease)) => {
                // The item stays locked until its lease runs out, then runs (again) elsewhere.
                lock(&self.touched).insert(lease.activity);
                Err(self.lost(op))
            }
            (_, lease) => Ok(lease),
        }
    }

    async fn ack_work_item(
        &self,
        lock_token: &str,
        completion: Option<NewMessage>,
    ) -> Result<(), ProviderError> {
        self.release(
            Op::AckWorkItem,
            lock_token,
            self.inner.ack_work_item(lock_token, completion),
        )
        .await
    }

    async fn abandon_work_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        // An abandoned activity runs again by design: that is a second execution caused by the
        // runtime's handling of a fault, so the activity counts as touched.
        self.touch_token(lock_token);
        self.release(
            Op::AbandonWorkItem,
            lock_token,
            self.inner.abandon_work_item(lock_token, delay),
        )
        .await
    }

    async fn renew_work_item_lock(&self, lock_token: &str, extend_by: Duration) -> Result<(), ProviderError> {
        self.renew(
            Op::RenewWorkItemLock,
            lock_token,
            extend_by,
            self.inner.renew_work_item_lock(lock_token, extend_by),
        )
        .await
    }

    async fn renew_session_leases(
        &self,
        owner_id: &str,
        session_ids: &[String],
        extend_by: Duration,
    ) -> Result<usize, ProviderError> {
        self.pass(
            Op::RenewSessionLeases,
            self.inner.renew_session_leases(owner_id, session_ids, extend_by),
        )
        .await
    }

    async fn release_session(&self, owner_id: &str, session_id: &str) -> Result<(), ProviderError> {
        self.pass(
            Op::ReleaseSession,
            self.inner.release_session(owner_id, session_id),
        )
        .await
    }

    async fn get_instance_info(&self, instance_id: &str) -> Result<Option<InstanceInfo>, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.get_instance_info(instance_id))
            .await
    }

    async fn get_custom_status(&self, instance_id: &str) -> Result<Option<CustomStatus>, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.get_custom_status(instance_id))
            .await
    }

    async fn get_instance_state(
        &self,
        instance_id: &str,
    ) -> Result<Option<(InstanceInfo, CustomStatus)>, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.get_instance_state(instance_id))
            .await
    }

    async fn read_history(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Vec<HistoryRecord>, ProviderError> {
        self.pass(
            Op::ReadOrManage,
            self.inner.read_history(instance_id, execution_id),
        )
        .await
    }

    async fn get_kv_value(&self, instance_id: &str, key: &str) -> Result<Option<String>, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.get_kv_value(instance_id, key))
            .await
    }

    async fn get_kv_entries(&self, instance_id: &str) -> Result<Vec<KvEntry>, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.get_kv_entries(instance_id))
            .await
    }

    async fn list_instances(&self, status: Option<InstanceStatus>) -> Result<Vec<String>, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.list_instances(status))
            .await
    }

    async fn list_executions(&self, instance_id: &str) -> Result<Vec<u64>, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.list_executions(instance_id))
            .await
    }

    async fn get_execution_info(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Option<ExecutionInfo>, ProviderError> {
        self.pass(
            Op::ReadOrManage,
            self.inner.get_execution_info(instance_id, execution_id),
        )
        .await
    }

    async fn get_instance_tree(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.get_instance_tree(instance_id))
            .await
    }

    async fn delete_instance(&self, instance_id: &str, force: bool) -> Result<DeleteResult, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.delete_instance(instance_id, force))
            .await
    }

    async fn delete_instances_bulk(&self, filter: &InstanceFilter) -> Result<DeleteResult, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.delete_instances_bulk(filter))
            .await
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        self.pass(
            Op::ReadOrManage,
            self.inner.prune_executions(instance_id, options),
        )
        .await
    }

    async fn prune_executions_bulk(
        &self,
        filter: &InstanceFilter,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        self.pass(
            Op::ReadOrManage,
            self.inner.prune_executions_bulk(filter, options),
        )
        .await
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.get_system_metrics()).await
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.get_queue_depths()).await
    }

    async fn get_instance_stats(&self, instance_id: &str) -> Result<Option<InstanceStats>, ProviderError> {
        self.pass(Op::ReadOrManage, self.inner.get_instance_stats(instance_id))
            .await
    }

    fn wake_all(&self) {
        self.inner.wake_all();
    }

    /// Forwarded: a wrapper must not hide that its store reports changes.
    fn watch_instance_changes(&self, on_change: InstanceChangeHook) -> bool {
        self.inner.watch_instance_changes(on_change)
    }
}

// ---- the monitor ------------------------------------------------------------------------------------

/// How a release (ack or abandon) ended in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The store accepted it: the lock is gone.
    Released,
    /// The store answered `LockLost`: the caller no longer held the lock.
    NotHeld,
    /// Another error: whether the lock went is unknown, so the monitor assumes it may have.
    Failed,
}

/// One observation fed to a [`TurnMonitor`]. Times are epoch microseconds ([`epoch_us`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnRecord {
    /// A fetch handed `resource` out under `token`; the call ran from `call_start_us` to `call_end_us`
    /// and asked for a lease of `lease_us`.
    Fetched {
        resource: String,
        token: String,
        call_start_us: u64,
        call_end_us: u64,
        lease_us: u64,
    },
    /// A renewal of `token` succeeded; it extends the lease from (at the earliest) the call's start.
    Renewed {
        token: String,
        call_start_us: u64,
        extend_us: u64,
    },
    /// An ack or abandon of `token` is about to reach the store.
    ReleaseBegin { token: String, at_us: u64 },
    /// The store answered that ack or abandon.
    ReleaseEnd {
        token: String,
        at_us: u64,
        outcome: ReleaseOutcome,
    },
}

impl TurnRecord {
    /// The time the record is ordered by when journals of several processes are merged.
    fn order_us(&self) -> u64 {
        match self {
            TurnRecord::Fetched { call_end_us, .. } => *call_end_us,
            TurnRecord::Renewed { call_start_us, .. } => *call_start_us,
            TurnRecord::ReleaseBegin { at_us, .. } | TurnRecord::ReleaseEnd { at_us, .. } => *at_us,
        }
    }

    fn to_line(&self) -> String {
        match self {
            TurnRecord::Fetched {
                resource,
                token,
                call_start_us,
                call_end_us,
                lease_us,
            } => format!(
                "F\t{}\t{}\t{call_start_us}\t{call_end_us}\t{lease_us}",
                hex(resource),
                hex(token)
            ),
            TurnRecord::Renewed {
                token,
                call_start_us,
                extend_us,
            } => format!("R\t{}\t{call_start_us}\t{extend_us}", hex(token)),
            TurnRecord::ReleaseBegin { token, at_us } => format!("B\t{}\t{at_us}", hex(token)),
            TurnRecord::ReleaseEnd {
                token,
                at_us,
                outcome,
            } => {
                let o = match outcome {
                    ReleaseOutcome::Released => "R",
                    ReleaseOutcome::NotHeld => "N",
                    ReleaseOutcome::Failed => "F",
                };
                format!("E\t{}\t{at_us}\t{o}", hex(token))
            }
        }
    }

    /// Parses a journal line; `None` for a torn or foreign line (a process killed mid-write).
    fn from_line(line: &str) -> Option<TurnRecord> {
        let f: Vec<&str> = line.split('\t').collect();
        let n = |i: usize| f.get(i)?.parse::<u64>().ok();
        let s = |i: usize| unhex(f.get(i)?);
        match *f.first()? {
            "F" if f.len() == 6 => Some(TurnRecord::Fetched {
                resource: s(1)?,
                token: s(2)?,
                call_start_us: n(3)?,
                call_end_us: n(4)?,
                lease_us: n(5)?,
            }),
            "R" if f.len() == 4 => Some(TurnRecord::Renewed {
                token: s(1)?,
                call_start_us: n(2)?,
                extend_us: n(3)?,
            }),
            "B" if f.len() == 3 => Some(TurnRecord::ReleaseBegin {
                token: s(1)?,
                at_us: n(2)?,
            }),
            "E" if f.len() == 4 => Some(TurnRecord::ReleaseEnd {
                token: s(1)?,
                at_us: n(2)?,
                outcome: match f[3] {
                    "R" => ReleaseOutcome::Released,
                    "N" => ReleaseOutcome::NotHeld,
                    "F" => ReleaseOutcome::Failed,
                    _ => return None,
                },
            }),
            _ => None,
        }
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Something the monitor proved went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `resource` was handed out under `second` while `first` still held it.
    Overlap {
        resource: String,
        first: String,
        second: String,
        /// When the first fetch started, and the earliest its lease could have run out.
        first_fetched_us: u64,
        first_lease_until_us: u64,
        /// When the second fetch returned.
        second_fetched_us: u64,
    },
    /// `token`'s ack or abandon succeeded although it began after `taken_by` took the resource over.
    StaleCommit {
        resource: String,
        token: String,
        taken_by: String,
        began_us: u64,
        taken_us: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Overlap {
                resource,
                first,
                second,
                first_fetched_us,
                first_lease_until_us,
                second_fetched_us,
            } => write!(
                f,
                "{resource} handed out twice: lock {first} (fetched at {first_fetched_us} µs, lease until at least \
                 {first_lease_until_us} µs, not released) and lock {second} (fetched by {second_fetched_us} µs, \
                 {} ms inside the lease)",
                (first_lease_until_us - second_fetched_us) / 1000
            ),
            Violation::StaleCommit {
                resource,
                token,
                taken_by,
                began_us,
                taken_us,
            } => write!(
                f,
                "{resource}: lock {token} committed a release begun at {began_us} µs although lock {taken_by} \
                 had taken the resource over by {taken_us} µs"
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct Hold {
    resource: String,
    fetch_start_us: u64,
    fetch_end_us: u64,
    /// The earliest moment the lease could have run out (fetch or renewal start + lease).
    lease_floor_us: u64,
    /// When a release started (after which the lock may be gone).
    release_begun_us: Option<u64>,
    /// The store confirmed the lock is gone (released, or `LockLost`).
    closed: bool,
}

#[derive(Debug, Default)]
struct MonitorState {
    holds: HashMap<String, Hold>,
    /// Resource → token of its latest hand-out.
    holder: HashMap<String, String>,
    handouts: u64,
    violations: Vec<Violation>,
}

/// Checks that no resource is held by two lock holders at once. See the module documentation.
#[derive(Debug)]
pub struct TurnMonitor {
    state: Mutex<MonitorState>,
    /// Tolerance for clock granularity (the store stamps leases at millisecond precision).
    slack_us: u64,
    journal: Option<Mutex<File>>,
}

impl Default for TurnMonitor {
    fn default() -> Self {
        TurnMonitor {
            state: Mutex::new(MonitorState::default()),
            slack_us: 20_000,
            journal: None,
        }
    }
}

impl TurnMonitor {
    pub fn new() -> Arc<TurnMonitor> {
        Arc::new(TurnMonitor::default())
    }

    /// A monitor that also appends every record to `path` (created if missing), one line each.
    pub fn with_journal(path: &Path) -> io::Result<Arc<TurnMonitor>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Arc::new(TurnMonitor {
            journal: Some(Mutex::new(file)),
            ..TurnMonitor::default()
        }))
    }

    /// A monitor fed with the records of several journals, merged in time order. Torn lines (a
    /// process killed while writing) are skipped.
    pub fn from_journals<P: AsRef<Path>>(paths: &[P]) -> io::Result<TurnMonitor> {
        let mut records = Vec::new();
        for path in paths {
            let file = match File::open(path.as_ref()) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in io::BufReader::new(file).lines() {
                if let Some(record) = TurnRecord::from_line(&line?) {
                    records.push(record);
                }
            }
        }
        records.sort_by_key(TurnRecord::order_us);
        let monitor = TurnMonitor::default();
        for record in records {
            monitor.apply(record);
        }
        Ok(monitor)
    }

    /// Feeds one observation.
    pub fn record(&self, record: TurnRecord) {
        if let Some(journal) = &self.journal {
            // One write per line, so concurrent writers and a kill never interleave half lines.
            let line = format!("{}\n", record.to_line());
            let _ = lock(journal).write_all(line.as_bytes());
        }
        self.apply(record);
    }

    fn apply(&self, record: TurnRecord) {
        let mut st = lock(&self.state);
        match record {
            TurnRecord::Fetched {
                resource,
                token,
                call_start_us,
                call_end_us,
                lease_us,
            } => {
                st.handouts += 1;
                if let Some(previous) = st.holder.get(&resource).cloned() {
                    if let Some(hold) = st.holds.get(&previous) {
                        let possibly_released = hold.closed || hold.release_begun_us.is_some();
                        if !possibly_released && call_end_us + self.slack_us < hold.lease_floor_us {
                            let violation = Violation::Overlap {
                                resource: resource.clone(),
                                first: previous.clone(),
                                second: token.clone(),
                                first_fetched_us: hold.fetch_start_us,
                                first_lease_until_us: hold.lease_floor_us,
                                second_fetched_us: call_end_us,
                            };
                            st.violations.push(violation);
                        }
                    }
                }
                st.holder.insert(resource.clone(), token.clone());
                st.holds.insert(
                    token,
                    Hold {
                        resource,
                        fetch_start_us: call_start_us,
                        fetch_end_us: call_end_us,
                        lease_floor_us: call_start_us + lease_us,
                        release_begun_us: None,
                        closed: false,
                    },
                );
            }
            TurnRecord::Renewed {
                token,
                call_start_us,
                extend_us,
            } => {
                if let Some(hold) = st.holds.get_mut(&token) {
                    hold.lease_floor_us = hold.lease_floor_us.max(call_start_us + extend_us);
                }
            }
            TurnRecord::ReleaseBegin { token, at_us } => {
                if let Some(hold) = st.holds.get_mut(&token) {
                    hold.release_begun_us.get_or_insert(at_us);
                }
            }
            TurnRecord::ReleaseEnd { token, outcome, .. } => {
                let Some(hold) = st.holds.get(&token).cloned() else {
                    return;
                };
                if outcome == ReleaseOutcome::Released {
                    // A release that only began after another holder took over must not succeed.
                    let current = st.holder.get(&hold.resource).cloned();
                    if let (Some(current), Some(began)) = (current, hold.release_begun_us) {
                        if current != token {
                            if let Some(taker) = st.holds.get(&current) {
                                if taker.fetch_end_us + self.slack_us < began {
                                    let violation = Violation::StaleCommit {
                                        resource: hold.resource.clone(),
                                        token: token.clone(),
                                        taken_by: current.clone(),
                                        began_us: began,
                                        taken_us: taker.fetch_end_us,
                                    };
                                    st.violations.push(violation);
                                }
                            }
                        }
                    }
                }
                if let Some(hold) = st.holds.get_mut(&token) {
                    match outcome {
                        ReleaseOutcome::Released | ReleaseOutcome::NotHeld => hold.closed = true,
                        // Unknown: keep `release_begun_us`, which already treats the lock as maybe gone.
                        ReleaseOutcome::Failed => {}
                    }
                }
            }
        }
    }

    /// Everything found so far.
    pub fn violations(&self) -> Vec<Violation> {
        lock(&self.state).violations.clone()
    }

    /// How many hand-outs (fetches that returned something) were observed.
    pub fn handouts(&self) -> u64 {
        lock(&self.state).handouts
    }

    /// Panics listing every violation, if there is any.
    pub fn assert_clean(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "the exclusive-turn monitor found {} violation(s):\n  {}",
            violations.len(),
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}

/// The activities whose results a turn's ack records in its history.
fn recorded_completions(instance_id: &str, ack: &TurnAck) -> Vec<ActivityRef> {
    ack.history
        .iter()
        .filter(|record| matches!(record.kind.as_str(), "ActivityCompleted" | "ActivityFailed"))
        .filter_map(|record| codec::decode_event(record).ok()?.source_event_id)
        .map(|event_id| ActivityRef {
            instance_id: instance_id.to_string(),
            execution_id: ack.execution_id,
            event_id,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(resource: &str, token: &str, start: u64, end: u64, lease: u64) -> TurnRecord {
        TurnRecord::Fetched {
            resource: resource.into(),
            token: token.into(),
            call_start_us: start,
            call_end_us: end,
            lease_us: lease,
        }
    }

    fn begin(token: &str, at: u64) -> TurnRecord {
        TurnRecord::ReleaseBegin {
            token: token.into(),
            at_us: at,
        }
    }

    fn end(token: &str, at: u64, outcome: ReleaseOutcome) -> TurnRecord {
        TurnRecord::ReleaseEnd {
            token: token.into(),
            at_us: at,
            outcome,
        }
    }

    #[test]
    fn a_second_hand_out_inside_the_lease_is_an_overlap() {
        let m = TurnMonitor::default();
        m.record(fetched("orch:a", "t1", 0, 1_000, 1_000_000));
        m.record(fetched("orch:a", "t2", 500_000, 500_100, 1_000_000));
        assert!(matches!(m.violations()[..], [Violation::Overlap { .. }]));
    }

    #[test]
    fn a_hand_out_after_release_or_expiry_is_fine() {
        let m = TurnMonitor::default();
        m.record(fetched("orch:a", "t1", 0, 1_000, 1_000_000));
        m.record(begin("t1", 2_000));
        m.record(end("t1", 3_000, ReleaseOutcome::Released));
        m.record(fetched("orch:a", "t2", 4_000, 5_000, 1_000_000));
        // Killed holder: never released, but the lease ran out.
        m.record(fetched("orch:a", "t3", 2_000_000, 2_000_100, 1_000_000));
        m.assert_clean();
        assert_eq!(m.handouts(), 3);
    }

    #[test]
    fn renewals_extend_the_protected_window() {
        let m = TurnMonitor::default();
        m.record(fetched("orch:a", "t1", 0, 1_000, 1_000_000));
        m.record(TurnRecord::Renewed {
            token: "t1".into(),
            call_start_us: 900_000,
            extend_us: 1_000_000,
        });
        m.record(fetched("orch:a", "t2", 1_500_000, 1_500_100, 1_000_000));
        assert_eq!(m.violations().len(), 1);
    }

    #[test]
    fn a_release_begun_after_a_takeover_must_not_succeed() {
        let m = TurnMonitor::default();
        m.record(fetched("orch:a", "t1", 0, 1_000, 1_000));
        m.record(fetched("orch:a", "t2", 100_000, 100_100, 1_000_000));
        m.record(begin("t1", 200_000));
        m.record(end("t1", 200_100, ReleaseOutcome::Released));
        assert!(matches!(m.violations()[..], [Violation::StaleCommit { .. }]));
        let m = TurnMonitor::default();
        m.record(fetched("orch:a", "t1", 0, 1_000, 1_000));
        m.record(fetched("orch:a", "t2", 100_000, 100_100, 1_000_000));
        m.record(begin("t1", 200_000));
        m.record(end("t1", 200_100, ReleaseOutcome::NotHeld));
        m.assert_clean();
    }

    #[test]
    fn journals_round_trip_and_merge_in_time_order() {
        let dir = std::env::temp_dir().join(format!("duroxide-faults-{}", epoch_us()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.journal"), dir.join("b.journal"));
        // Process A fetched and was killed; process B fetched inside A's lease.
        TurnMonitor::with_journal(&a)
            .unwrap()
            .record(fetched("orch:x\ty", "tok\n1", 0, 1_000, 1_000_000));
        let mb = TurnMonitor::with_journal(&b).unwrap();
        mb.record(fetched("orch:x\ty", "tok2", 10_000, 10_500, 1_000_000));
        drop(mb);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&b)
            .unwrap()
            .write_all(b"F\t0102")
            .unwrap();
        let merged = TurnMonitor::from_journals(&[&b, &a]).unwrap();
        assert_eq!(merged.handouts(), 2);
        assert!(
            matches!(merged.violations()[..], [Violation::Overlap { ref resource, .. }] if resource == "orch:x\ty")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn released_locks_are_forgotten() {
        use crate::support::{create, fetch, fetch_work, seed_work, work_item, worker, P};
        let inner = duroxide_sqlite::SqliteProvider::in_memory().unwrap();
        let faulty = Arc::new(FaultyProvider::new(Arc::new(inner), FaultConfig::none(), 1));
        let p: P = faulty.clone();
        // A turn acked, an activity acked, a turn abandoned: none of their tokens is used again.
        seed_work(&p, "acked", vec![work_item("acked", 2)]).await.unwrap();
        let lease = fetch_work(&p, &worker()).await.unwrap();
        p.ack_work_item(&lease.lock_token, None).await.unwrap();
        create(&p, "abandoned").await.unwrap();
        let item = fetch(&p).await.unwrap();
        p.abandon_orchestration_item(&item.lock_token, None)
            .await
            .unwrap();
        assert!(lock(&faulty.work_tokens).is_empty(), "work tokens kept");
        assert!(lock(&faulty.orch_tokens).is_empty(), "orchestration tokens kept");
    }

    #[test]
    fn the_generator_is_seeded() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(
            (0..5).map(|_| a.next_u64()).collect::<Vec<_>>(),
            (0..5).map(|_| b.next_u64()).collect::<Vec<_>>()
        );
        assert!((0..1000).all(|_| a.below(10) < 10));
        assert!(!a.chance(0.0));
    }
}
