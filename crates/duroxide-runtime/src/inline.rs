//! Short activities run by the orchestration dispatcher itself, before the turn that scheduled them
//! commits.
//!
//! A turn whose only effect is scheduling activities changes nothing anyone else reads
//! ([`TurnAck::only_schedules_activities`]). The dispatcher keeps the instance locked, runs those
//! activities, runs the next turn on their results with the cached engine, and commits both turns
//! as one ack ([`TurnAck::then`]); it goes on like that while each turn qualifies. That takes:
//! activities this runtime can run (untagged, session-less, registered here, accepted by its tag
//! filter) that have been quick so far, free worker capacity, and an orchestration that waits for
//! nothing else (a timer, event or child arriving meanwhile must not be taken after results that
//! came later). The activities' work items are never stored, fetched or completed: a chain of short
//! activities costs one commit instead of three round trips per activity, and a fan-out of them
//! one commit in all. A fan-out wider than the free capacity runs as a wave, as many at a time as
//! there are free permits, each run that ends making room for the next.
//!
//! - **Crashes.** Nothing of the chain is stored until its ack commits, and the messages the turn
//!   was fetched with stay queued until then. Whoever holds the instance next replays the stored
//!   history and schedules the activities again; activities run at least once anyway.
//! - **Slow activities.** An activity runs inline only while its recent runs took at most
//!   [`SHORT`]. One still running after `inline_activity_wait` cuts its wave: the next turn runs on
//!   the results that came in, and the turns so far commit with the other activities' work items as
//!   usual. Those not started run from the queue; the worker that fetches the item of one still
//!   running takes that execution's result ([`Detached`]) instead of starting another, and one the
//!   next turn no longer wants (it lost a race) is cancelled.
//! - **Bounds.** A chain commits after [`MAX_TURNS`] turns or [`MAX_CHAIN`] (no run starts after
//!   it), so an instance's progress and the messages that reach it (events, cancellation) wait at
//!   most about that long.
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
use duroxide_core::provider::{ActivityRef, TurnAck};
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
    let chain_end = began + MAX_CHAIN.min(quarter_lock);
    let mut turns = 1;
    while turns < MAX_TURNS && Instant::now() < chain_end && !shared.stopping() {
        let Some(engine) = decided.engine.take() else {
            break;
        };
        let Some((works, permit)) = runnable(shared, &decided.ack, &engine) else {
            decided.engine = Some(engine);
            break;
        };
        let items: Vec<ActivityRef> = decided
            .ack
            .worker_items
            .iter()
            .map(|item| item.activity.clone())
            .collect();
        let wave = run_wave(shared, works, permit, wait, chain_end).await;
        if wave.ended.is_empty() {
            // Nothing ended in time: commit with the work items, which the workers take over. The
            // engine has run nothing past what this ack commits, so it stays usable.
            detach(shared, &items, wave.running, wave.permit);
            decided.engine = Some(engine);
            break;
        }
        let messages = wave
            .ended
            .iter()
            .map(|(_, run)| {
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
            detach(shared, &items, wave.ended, None);
            detach(shared, &items, wave.running, wave.permit);
            break;
        };
        count(shared, &wave.ended);
        drop_ended(&mut decided.ack, &wave.ended);
        decided.ack = std::mem::take(&mut decided.ack).then(next);
        decided.engine = engine;
        decided.reports.push(report);
        turns += 1;
        if wave.cut {
            settle_cut(shared, &decided.ack, &items, wave.running, wave.permit);
            break;
        }
    }
    decided
}

/// Counts the runs that ended as activity outcomes, and as inline runs.
fn count(shared: &Shared, ended: &[(usize, Running)]) {
    for (_, run) in ended {
        match run.outcome() {
            Ok(_) => Metrics::inc(&shared.metrics.activity_success),
            Err(_) => Metrics::inc(&shared.metrics.activity_app_errors),
        }
    }
    Metrics::add(&shared.metrics.activity_inline_runs, ended.len() as u64);
}

/// Removes the items of the runs that ended from the turn's ack: their results are committed with
/// the next turn, so they are never stored. (The rest are, unless the next turn cancels them:
/// [`TurnAck::then`] drops those.)
fn drop_ended(ack: &mut TurnAck, ended: &[(usize, Running)]) {
    let mut is_ended = vec![false; ack.worker_items.len()];
    for (at, _) in ended {
        is_ended[*at] = true;
    }
    let mut at = 0;
    ack.worker_items.retain(|_| {
        at += 1;
        !is_ended[at - 1]
    });
}

/// After a cut wave's turns merged into `ack`: each run still going is taken over by the worker
/// that fetches its item. One whose item the next turn cancelled is never stored, so no worker
/// will: it is cancelled here.
fn settle_cut(
    shared: &Arc<Shared>,
    ack: &TurnAck,
    items: &[ActivityRef],
    running: Vec<(usize, Running)>,
    permit: Option<OwnedSemaphorePermit>,
) {
    for (at, run) in &running {
        if !ack.worker_items.iter().any(|item| item.activity == items[*at]) {
            run.cancel.cancel();
        }
    }
    detach(shared, items, running, permit);
}

/// The decoded activities of a turn that may run inline, with the worker permits they may take
/// (as many as are free, up to one each).
fn runnable(
    shared: &Arc<Shared>,
    ack: &TurnAck,
    engine: &ReplayEngine,
) -> Option<(Vec<ActivityWork>, OwnedSemaphorePermit)> {
    if shared.options.inline_activity_wait.is_zero()
        || !ack.only_schedules_activities()
        || !shared.options.worker_tag_filter.accepts(None)
        || shared.activity_permits.available_permits() == 0
    {
        return None;
    }
    // Something else it waits for (a timer, an event, a child) may arrive meanwhile, and must not
    // be taken after results that came later.
    if !engine.waits_only_for_activities() {
        return None;
    }
    if ack
        .worker_items
        .iter()
        .any(|item| item.session_id.is_some() || item.tag.is_some())
    {
        return None;
    }
    let mut works = Vec::with_capacity(ack.worker_items.len());
    for item in &ack.worker_items {
        let work = codec::decode_activity(&item.payload).ok()?;
        if shared.activities.get(&work.name).is_none() || !shared.inline.is_short(&work.name) {
            return None;
        }
        works.push(work);
    }
    let wanted = works.len().min(shared.activity_permits.available_permits());
    let permit = shared
        .activity_permits
        .clone()
        .try_acquire_many_owned(u32::try_from(wanted).ok()?)
        .ok()?;
    Some((works, permit))
}

/// How a turn's inline runs went. Runs are named by their position among the turn's work items.
struct Wave {
    /// The runs that ended, in work item order.
    ended: Vec<(usize, Running)>,
    /// The runs still going when the wave was cut.
    running: Vec<(usize, Running)>,
    /// Whether some runs did not end (still going, or never started): their items must be stored.
    cut: bool,
    /// The worker capacity the running ones hold (one permit each).
    permit: Option<OwnedSemaphorePermit>,
}

/// Runs the activities (the work of the turn's items, in order), as many at a time as `permit`
/// allows, starting the next as one ends. The wave is cut when a run outlives `wait`: the runs
/// still going and those not started are left to the worker queue. None starts after
/// `chain_end`, nor once the runtime is stopping; then the runs going are waited for (as a worker
/// slot waits for its activity) until the hard stop.
async fn run_wave(
    shared: &Arc<Shared>,
    works: Vec<ActivityWork>,
    mut permit: OwnedSemaphorePermit,
    wait: Duration,
    chain_end: Instant,
) -> Wave {
    let total = works.len();
    let width = permit.num_permits();
    let mut unstarted = works.into_iter().enumerate();
    let mut going: Vec<(usize, Running)> = Vec::with_capacity(width);
    let mut ended: Vec<(usize, Running)> = Vec::with_capacity(total);
    let mut cut = false;
    loop {
        if !shared.stopping() && Instant::now() < chain_end {
            while going.len() < width {
                let Some((at, work)) = unstarted.next() else {
                    break;
                };
                going.push((at, Running::start(shared, work)));
            }
        }
        if going.is_empty() {
            break;
        }
        let deadline = going
            .iter()
            .map(|(_, run)| run.started + wait)
            .min()
            .expect("some run is going");
        let progressed = if shared.stopping() {
            tokio::select! {
                () = AnyEnds(&mut going) => true,
                () = shared.hard_stop.cancelled() => false,
            }
        } else {
            tokio::select! {
                () = AnyEnds(&mut going) => true,
                () = tokio::time::sleep_until(deadline.into()) => false,
                // Stopping: wait again, without the deadline.
                () = shared.stop.cancelled() => continue,
            }
        };
        if !progressed {
            cut = true;
            break;
        }
        let (done, still): (Vec<_>, Vec<_>) = going.into_iter().partition(|(_, run)| run.outcome.is_some());
        going = still;
        for (_, run) in &done {
            if let Some((_, took)) = &run.outcome {
                shared.inline.record_time(&run.work.name, *took);
            }
        }
        ended.extend(done);
    }
    cut |= unstarted.len() > 0;
    ended.sort_by_key(|(at, _)| *at);
    // Keep one permit per run still going, for its detached execution; free the rest.
    let permit = permit.split(going.len());
    Wave {
        ended,
        running: going,
        cut,
        permit,
    }
}

/// Hands inline executions to whichever worker fetches their items (`items[at]` for each run):
/// a finished one's result, or the running one itself, with `permit` (one each) holding its worker
/// capacity until it ends.
fn detach(
    shared: &Arc<Shared>,
    items: &[ActivityRef],
    runs: Vec<(usize, Running)>,
    mut permit: Option<OwnedSemaphorePermit>,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    for (at, run) in runs {
        let activity = items[at].clone();
        let (send, result) = oneshot::channel();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let cancel = run.cancel.clone();
        shared
            .inline
            .put_detached(activity.clone(), Detached { result, cancel, id });
        let shared = shared.clone();
        let future = match run.outcome {
            Some((outcome, _)) => {
                let _ = send.send(outcome);
                None
            }
            None => {
                // Until a worker takes it over, a cancellation committed here reaches it like any
                // other running activity.
                shared.track_running(activity.clone(), run.cancel.clone());
                let own = permit.as_mut().and_then(|p| p.split(1));
                Some((run.future, send, own))
            }
        };
        tokio::spawn(async move {
            if let Some((future, send, permit)) = future {
                let outcome = tokio::select! {
                    outcome = future => outcome,
                    () = shared.hard_stop.cancelled() => return,
                };
                shared.inline.record_time(&run.work.name, run.started.elapsed());
                drop(permit);
                shared.untrack_running(&activity);
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

/// Polls every unfinished execution (each keeps its outcome); ready once at least one has ended.
struct AnyEnds<'a>(&'a mut [(usize, Running)]);

impl Future for AnyEnds<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut any = false;
        for (_, run) in self.0.iter_mut() {
            if run.outcome.is_some() {
                any = true;
                continue;
            }
            if let Poll::Ready(outcome) = run.future.as_mut().poll(cx) {
                run.outcome = Some((outcome, run.started.elapsed()));
                any = true;
            }
        }
        if any {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
