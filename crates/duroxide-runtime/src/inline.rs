//! Short activities run by the orchestration dispatcher itself, before the turn that scheduled them
//! commits.
//!
//! A turn whose only effect is scheduling activities changes nothing anyone else reads
//! ([`TurnAck::only_schedules_activities`]). The dispatcher keeps the instance locked, runs those
//! activities, runs the next turn on their results with the cached engine, and commits both turns
//! as one ack ([`TurnAck::then`]); it goes on like that while each turn qualifies. That takes:
//! activities this runtime can run (untagged, session-less, registered here, accepted by its tag
//! filter, worker capacity free) that have been quick so far, and an orchestration that waits for
//! nothing else (a timer, event or child arriving meanwhile must not be taken after results that
//! came later). The activities' work items are never stored, fetched or completed: a chain of short
//! activities costs one commit instead of three round trips per activity.
//!
//! - **Crashes.** Nothing of the chain is stored until its ack commits, and the messages the turn
//!   was fetched with stay queued until then. Whoever holds the instance next replays the stored
//!   history and schedules the activities again; activities run at least once anyway.
//! - **Slow activities.** An activity runs inline only while its recent runs took at most
//!   [`SHORT`]. One still running after `inline_activity_wait` is not run again: the turns so far
//!   commit with its work item as usual, and the worker that fetches that item takes the running
//!   execution's result ([`Detached`]) instead of starting another.
//! - **Bounds.** A chain commits after [`MAX_TURNS`] turns or [`MAX_CHAIN`], so an instance's
//!   progress and the messages that reach it (events, cancellation) wait at most that long.
//!   Activities take the same worker permits as the worker dispatcher's, so together they never
//!   exceed `worker_concurrency`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use duroxide_core::codec;
use duroxide_core::engine::ReplayEngine;
use duroxide_core::message::ActivityWork;
use duroxide_core::provider::{ActivityRef, NewWorkItem, TurnAck};
use duroxide_core::turn::{continue_turn, TurnReport};
use duroxide_core::ErrorDetails;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::activity::ActivityFuture;
use crate::cancel::CancelSignal;
use crate::dispatch_activities::invoke;
use crate::dispatch_orchestrations::turn_options;
use crate::metrics::Metrics;
use crate::runtime::Shared;

/// An activity runs inline only while its recent runs took at most this long.
pub(crate) const SHORT: Duration = Duration::from_millis(2);
/// Most turns committed together.
pub(crate) const MAX_TURNS: usize = 64;
/// Longest a chain of inline turns keeps the instance before committing.
pub(crate) const MAX_CHAIN: Duration = Duration::from_millis(100);
/// How long a detached result waits for the worker that fetches its item, in case this process's
/// workers never do (another process took the item, or the ack that stores it failed).
const DETACHED_KEPT: Duration = Duration::from_secs(120);

/// What an activity returns: its result, or the error recorded as its failure.
type Outcome = Result<String, String>;

/// Inline state shared by the runtime's dispatchers.
#[derive(Debug, Default)]
pub(crate) struct Inline {
    /// Smoothed run time per activity name, in microseconds.
    times: Mutex<HashMap<String, u64>>,
    /// Inline executions that outlived `inline_activity_wait`, by the work item the worker dispatcher will fetch.
    detached: Mutex<HashMap<ActivityRef, Detached>>,
}

/// An inline execution the worker dispatcher takes over: its result when it ends, and the signal
/// that cancels it.
#[derive(Debug)]
pub(crate) struct Detached {
    pub result: oneshot::Receiver<Outcome>,
    pub cancel: CancelSignal,
    id: u64,
}

impl Inline {
    /// Records how long a run of `name` took (from either dispatcher).
    pub fn record_time(&self, name: &str, took: Duration) {
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        match times.get_mut(name) {
            // Weighted toward recent runs: a slow run stops inlining at once (3/4 of it counts),
            // and a few quick ones start it again.
            Some(average) => *average = (*average + 3 * micros) / 4,
            None => {
                times.insert(name.to_string(), micros);
            }
        }
    }

    /// Whether runs of `name` have been short. An activity never seen to run is not: its first run
    /// goes through the worker queue, so a long activity never holds up a dispatcher slot.
    fn is_short(&self, name: &str) -> bool {
        let times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        times
            .get(name)
            .is_some_and(|&micros| micros <= SHORT.as_micros() as u64)
    }

    /// The running or finished inline execution of this work item, if this process has one.
    pub fn take_detached(&self, activity: &ActivityRef) -> Option<Detached> {
        self.detached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(activity)
    }

    fn put_detached(&self, activity: ActivityRef, detached: Detached) {
        self.detached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(activity, detached);
    }

    fn forget_detached(&self, activity: &ActivityRef, id: u64) {
        let mut detached = self.detached.lock().unwrap_or_else(|p| p.into_inner());
        if detached.get(activity).is_some_and(|d| d.id == id) {
            detached.remove(activity);
        }
    }
}

/// A turn decided and not yet committed: its ack and engine, and the reports of every turn in it.
pub(crate) struct Decided {
    pub ack: TurnAck,
    pub engine: Option<ReplayEngine>,
    pub reports: Vec<TurnReport>,
}

/// Runs the activities of `decided`'s turn inline and the turns after it, while they qualify (see
/// the module doc); returns the turns to commit as one.
pub(crate) async fn run_chain(shared: &Arc<Shared>, instance_id: &str, mut decided: Decided) -> Decided {
    let began = Instant::now();
    // Well inside the instance's lock, which nothing renews meanwhile.
    let quarter_lock = shared.options.orchestrator_lock_timeout / 4;
    let wait = shared.options.inline_activity_wait.min(quarter_lock);
    let chain_limit = MAX_CHAIN.min(quarter_lock);
    let mut turns = 1;
    while turns < MAX_TURNS && began.elapsed() < chain_limit && !shared.stopping() {
        let Some(engine) = decided.engine.take() else {
            break;
        };
        let Some((works, permit)) = runnable(shared, &decided.ack, &engine) else {
            decided.engine = Some(engine);
            break;
        };
        let items = &decided.ack.worker_items;
        let Some(ran) = run_all(shared, works, permit, items, wait).await else {
            // Still running: commit with the work items, which the workers take over. The engine
            // has run nothing past what this ack commits, so it stays usable.
            decided.engine = Some(engine);
            break;
        };
        let messages = ran
            .iter()
            .map(|run| {
                run.work
                    .completion(run.outcome().clone().map_err(ErrorDetails::application))
            })
            .collect();
        let options = turn_options(shared);
        let continued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            continue_turn(instance_id, engine, messages, &options)
        }));
        let Ok(Some((next, engine, report))) = continued else {
            // The orchestration code panicked (or the engine could not run). Commit what ran before
            // and let the next turn run the usual way, which fails the instance if the code panics
            // again; the activities' results wait for the workers that fetch their items.
            tracing::debug!(target: "duroxide::runtime", instance_id, "a turn after inline activities did not run; committing the turns before it");
            detach(shared, items, ran, None);
            break;
        };
        for run in &ran {
            match run.outcome() {
                Ok(_) => Metrics::inc(&shared.metrics.activity_success),
                Err(_) => Metrics::inc(&shared.metrics.activity_app_errors),
            }
        }
        Metrics::add(&shared.metrics.activity_inline_runs, ran.len() as u64);
        decided.ack.worker_items.clear();
        decided.ack = std::mem::take(&mut decided.ack).then(next);
        decided.engine = engine;
        decided.reports.push(report);
        turns += 1;
    }
    decided
}

/// The decoded activities of a turn that may run inline, with the worker permits they take.
/// The cheap checks come first: most turns schedule nothing, and a fan-out more than the free
/// worker capacity.
fn runnable(
    shared: &Arc<Shared>,
    ack: &TurnAck,
    engine: &ReplayEngine,
) -> Option<(Vec<ActivityWork>, OwnedSemaphorePermit)> {
    if shared.options.inline_activity_wait.is_zero()
        || !ack.only_schedules_activities()
        || !shared.options.worker_tag_filter.accepts(None)
        || ack.worker_items.len() > shared.activity_permits.available_permits()
    {
        return None;
    }
    // Something else it waits for (a timer, an event, a child) may arrive meanwhile, and must not
    // be taken after results that came later.
    if !engine.waits_only_for_activities() {
        return None;
    }
    let mut works = Vec::with_capacity(ack.worker_items.len());
    for item in &ack.worker_items {
        if item.session_id.is_some() || item.tag.is_some() {
            return None;
        }
        let work = codec::decode_activity(&item.payload).ok()?;
        if shared.activities.get(&work.name).is_none() || !shared.inline.is_short(&work.name) {
            return None;
        }
        works.push(work);
    }
    let permit = shared
        .activity_permits
        .clone()
        .try_acquire_many_owned(u32::try_from(works.len()).ok()?)
        .ok()?;
    Some((works, permit))
}

/// Runs the activities (the work of `items`, in order); all of them, ended, when they end within
/// `wait`, else `None` after handing them to the worker dispatcher ([`Detached`]).
async fn run_all(
    shared: &Arc<Shared>,
    works: Vec<ActivityWork>,
    permit: OwnedSemaphorePermit,
    items: &[NewWorkItem],
    wait: Duration,
) -> Option<Vec<Running>> {
    let mut running: Vec<Running> = works
        .into_iter()
        .map(|work| Running::start(shared, work))
        .collect();
    // Once the runtime is stopping, no worker will fetch a detached item: wait for the activities
    // (as a worker slot waits for its activity) until the hard stop.
    let waited = tokio::select! {
        () = JoinAll(&mut running) => true,
        () = tokio::time::sleep(wait), if !shared.stopping() => false,
        () = shared.stop.cancelled() => false,
    };
    let all_done = waited
        || (shared.stopping()
            && tokio::select! {
                () = JoinAll(&mut running) => true,
                () = shared.hard_stop.cancelled() => false,
            });
    if !all_done {
        detach(shared, items, running, Some(permit));
        return None;
    }
    drop(permit);
    for run in &running {
        if let Some((_, took)) = &run.outcome {
            shared.inline.record_time(&run.work.name, *took);
        }
    }
    Some(running)
}

/// Hands unfinished inline executions to whichever worker fetches their items.
/// `permit` holds the worker capacity of those still running.
fn detach(
    shared: &Arc<Shared>,
    items: &[NewWorkItem],
    running: Vec<Running>,
    permit: Option<OwnedSemaphorePermit>,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let permit = Arc::new(permit);
    for (item, run) in items.iter().zip(running) {
        let (send, result) = oneshot::channel();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let cancel = run.cancel.clone();
        shared
            .inline
            .put_detached(item.activity.clone(), Detached { result, cancel, id });
        let (shared, activity, permit) = (shared.clone(), item.activity.clone(), permit.clone());
        let future = match run.outcome {
            Some((outcome, _)) => {
                let _ = send.send(outcome);
                None
            }
            None => {
                // Until a worker takes it over, a cancellation committed here reaches it like any
                // other running activity.
                shared
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(activity.clone(), run.cancel.clone());
                Some((run.future, send))
            }
        };
        tokio::spawn(async move {
            if let Some((future, send)) = future {
                let outcome = tokio::select! {
                    outcome = future => outcome,
                    () = shared.hard_stop.cancelled() => return,
                };
                shared.inline.record_time(&run.work.name, run.started.elapsed());
                drop(permit);
                shared
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&activity);
                let _ = send.send(outcome);
            }
            tokio::select! {
                () = tokio::time::sleep(DETACHED_KEPT) => {}
                () = shared.hard_stop.cancelled() => {}
            }
            shared.inline.forget_detached(&activity, id);
        });
    }
}

/// One inline execution.
struct Running {
    work: Arc<ActivityWork>,
    started: Instant,
    future: ActivityFuture,
    /// The outcome and how long the run took, once it ended.
    outcome: Option<(Outcome, Duration)>,
    cancel: CancelSignal,
}

impl Running {
    /// The outcome of a run that ended.
    fn outcome(&self) -> &Outcome {
        &self.outcome.as_ref().expect("the run ended").0
    }

    fn start(shared: &Arc<Shared>, work: ActivityWork) -> Running {
        let handler = shared
            .activities
            .get(&work.name)
            .expect("runnable checked the name");
        let cancel = CancelSignal::default();
        let work = Arc::new(work);
        Running {
            future: invoke(shared, handler, work.clone(), 1, cancel.clone()),
            work,
            started: Instant::now(),
            outcome: None,
            cancel,
        }
    }
}

/// Polls every unfinished execution until all have ended (each keeps its outcome).
struct JoinAll<'a>(&'a mut [Running]);

impl Future for JoinAll<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut pending = false;
        for run in self.0.iter_mut() {
            if run.outcome.is_some() {
                continue;
            }
            match run.future.as_mut().poll(cx) {
                Poll::Ready(outcome) => run.outcome = Some((outcome, run.started.elapsed())),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}
