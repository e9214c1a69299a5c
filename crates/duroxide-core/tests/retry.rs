//! Retry policies as durable logic: attempts, last error, backoff timers, per-attempt and total
//! timeouts, and replay of every retry history without new actions.
//!
//! Activities that fail the first k times run on the simulated host. Timeouts need an activity that
//! does not finish before its timer, which the simulated host never allows (it runs every ready
//! activity before its clock moves), so those tests drive a bare engine and choose what arrives when.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use duroxide_core::provider::InstanceStatus;
use duroxide_core::testing::{SimHost, SimResult};
use duroxide_core::{
    Action, Backoff, Event, EventKind, OrchestrationContext, OrchestrationHandler, OrchestrationRegistry,
    OrchestratorMessage, ReplayEngine, RetryPolicy, TurnOutput, TurnStatus,
};

const SECOND: u64 = 1_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `Retry`: calls `Flaky` with its input under `policy` (on session `s1` when `on_session`).
fn retry_handler(policy: RetryPolicy, on_session: bool) -> Arc<dyn OrchestrationHandler> {
    Arc::new(move |ctx: OrchestrationContext, input: String| {
        let policy = policy.clone();
        async move {
            if on_session {
                ctx.schedule_activity_with_retry_on_session("Flaky", input, &policy, "s1")
                    .await
            } else {
                ctx.schedule_activity_with_retry("Flaky", input, &policy).await
            }
        }
    })
}

/// What one retry run left behind.
#[derive(Debug)]
struct RetryRun {
    result: SimResult,
    history: Vec<Event>,
    /// How many times the host ran `Flaky`.
    calls: u32,
    started_at: u64,
}

/// Runs `Retry` on the simulated host with a `Flaky` that fails its first `failures` calls (with
/// `failure {n}`) and then answers `ok on call {n}`.
///
/// The run is made twice, with and without the instance cache: every turn of the second is a full
/// replay in a fresh engine, so identical histories show the retry loop replays deterministically.
/// Every turn boundary of the history must also replay silently (no actions, no new events).
fn run_retry(policy: &RetryPolicy, failures: u32, on_session: bool) -> RetryRun {
    let runs: Vec<RetryRun> = [true, false]
        .into_iter()
        .map(|cache| run_once(policy, failures, on_session, cache))
        .collect();
    assert_eq!(runs[0].result, runs[1].result);
    assert_eq!(runs[0].history, runs[1].history);
    assert_eq!(runs[0].calls, runs[1].calls);
    runs.into_iter().next().expect("two runs")
}

fn run_once(policy: &RetryPolicy, failures: u32, on_session: bool, cache: bool) -> RetryRun {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let handler = retry_handler(policy.clone(), on_session);
    let mut r = OrchestrationRegistry::new();
    r.register_arc("Retry", "1.0.0", handler.clone())
        .expect("registers");
    let mut host = SimHost::new(r).activity("Flaky", move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= failures {
            Err(format!("failure {n}"))
        } else {
            Ok(format!("ok on call {n}"))
        }
    });
    if !cache {
        host = host.without_cache();
    }
    let started_at = host.now_ms();
    host.start("r", "Retry", "payload");
    let mut boundaries = BTreeSet::new();
    loop {
        let turns = host.turns;
        if !host.step() {
            break;
        }
        if host.turns != turns {
            let len = host.instance("r").map_or(0, |i| i.executions[0].len());
            boundaries.insert(len);
        }
    }
    let history = host.history("r");
    for len in boundaries {
        let prefix = &history[..len];
        if prefix.last().is_some_and(|e| e.kind.is_terminal()) {
            continue;
        }
        let mut engine = ReplayEngine::new("r", 1, handler.clone(), "1.0.0", Vec::new());
        let out = engine.replay(prefix);
        assert_eq!(out.status, TurnStatus::Running, "replay of {len} events");
        assert!(
            out.actions.is_empty(),
            "replay of {len} events: {:?}",
            out.actions
        );
        assert!(
            out.new_events.is_empty(),
            "replay of {len} events: {:?}",
            out.new_events
        );
    }
    RetryRun {
        result: host.result("r").expect("started"),
        history,
        calls: calls.load(Ordering::SeqCst),
        started_at,
    }
}

fn count(history: &[Event], kind: &str) -> usize {
    history.iter().filter(|e| e.kind.name() == kind).count()
}

/// (timestamp, fire_at) of every timer the history created.
fn timers(history: &[Event]) -> Vec<(u64, u64)> {
    history
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TimerCreated { fire_at_ms } => Some((e.timestamp_ms, fire_at_ms)),
            _ => None,
        })
        .collect()
}

fn completed(output: &str) -> SimResult {
    SimResult {
        status: InstanceStatus::Completed,
        output: Some(output.to_string()),
    }
}

fn failed(output: &str) -> SimResult {
    SimResult {
        status: InstanceStatus::Failed,
        output: Some(output.to_string()),
    }
}

// ---- attempts and errors -------------------------------------------------------------------------------

#[test]
fn succeeds_on_the_attempt_after_the_last_failure() {
    let policy = RetryPolicy::new(5).with_backoff(Backoff::fixed());
    for k in 0..5 {
        let run = run_retry(&policy, k, false);
        assert_eq!(run.result, completed(&format!("ok on call {}", k + 1)), "k = {k}");
        assert_eq!(run.calls, k + 1, "no attempt after the success");
        assert_eq!(count(&run.history, "ActivityScheduled"), k as usize + 1);
        assert_eq!(count(&run.history, "ActivityFailed"), k as usize);
        assert_eq!(count(&run.history, "ActivityCompleted"), 1);
        assert_eq!(
            count(&run.history, "TimerCreated"),
            k as usize,
            "one backoff per failure"
        );
    }
}

#[test]
fn exhausting_max_attempts_returns_the_last_error() {
    let policy = RetryPolicy::new(3).with_backoff(Backoff::fixed());
    let run = run_retry(&policy, u32::MAX, false);
    assert_eq!(run.result, failed("failure 3"));
    assert_eq!(run.calls, 3);
    assert_eq!(count(&run.history, "ActivityFailed"), 3);
    assert_eq!(
        count(&run.history, "TimerCreated"),
        2,
        "no backoff after the last attempt"
    );
}

#[test]
fn one_attempt_means_no_retry() {
    let run = run_retry(&RetryPolicy::new(1), u32::MAX, false);
    assert_eq!(run.result, failed("failure 1"));
    assert_eq!(run.calls, 1);
    assert!(timers(&run.history).is_empty());
}

#[test]
fn default_policy_is_three_attempts_with_exponential_backoff() {
    let run = run_retry(&RetryPolicy::default(), u32::MAX, false);
    assert_eq!(run.result, failed("failure 3"));
    let delays: Vec<u64> = timers(&run.history).iter().map(|(at, fire)| fire - at).collect();
    assert_eq!(delays, [100, 200]);
}

#[test]
fn an_invalid_policy_fails_without_scheduling_anything() {
    let run = run_retry(&RetryPolicy::new(0), 0, false);
    assert_eq!(
        run.result,
        failed("invalid retry policy for Flaky: max_attempts must be at least 1")
    );
    assert_eq!(run.calls, 0);
    assert_eq!(count(&run.history, "ActivityScheduled"), 0);
}

#[test]
fn every_attempt_runs_on_the_session() {
    let policy = RetryPolicy::new(3).with_backoff(Backoff::None);
    let run = run_retry(&policy, 2, true);
    assert_eq!(run.result, completed("ok on call 3"));
    let sessions: Vec<Option<&str>> = run
        .history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ActivityScheduled { session_id, .. } => Some(session_id.as_deref()),
            _ => None,
        })
        .collect();
    assert_eq!(sessions, [Some("s1"); 3]);
}

// ---- backoff ---------------------------------------------------------------------------------------------

#[test]
fn each_backoff_shows_its_delays_as_timers_in_history() {
    let cases: [(Backoff, &[u64]); 6] = [
        (Backoff::None, &[]),
        (Backoff::fixed(), &[100, 100, 100, 100]),
        (Backoff::Fixed { delay: ms(2_500) }, &[2_500, 2_500, 2_500, 2_500]),
        (
            Backoff::Linear {
                base: ms(100),
                max: ms(250),
            },
            &[100, 200, 250, 250],
        ),
        (Backoff::exponential(), &[100, 200, 400, 800]),
        (
            Backoff::Exponential {
                base: ms(SECOND),
                multiplier: 3,
                max: ms(5 * SECOND),
            },
            &[1_000, 3_000, 5_000, 5_000],
        ),
    ];
    for (backoff, expected) in cases {
        let policy = RetryPolicy::new(5).with_backoff(backoff.clone());
        let run = run_retry(&policy, u32::MAX, false);
        assert_eq!(run.result, failed("failure 5"), "{backoff:?}");
        let timers = timers(&run.history);
        // Each backoff timer is created when its attempt fails and fires `delay` later.
        let delays: Vec<u64> = timers.iter().map(|(at, fire)| fire - at).collect();
        assert_eq!(delays, expected, "{backoff:?}");
        // Activities take no virtual time here, so consecutive fire times are one delay apart too.
        let gaps: Vec<u64> = timers.windows(2).map(|w| w[1].1 - w[0].1).collect();
        assert_eq!(gaps, expected.get(1..).unwrap_or(&[]), "{backoff:?}");
        let end = run.history.last().expect("terminal event").timestamp_ms;
        assert_eq!(end - run.started_at, expected.iter().sum::<u64>(), "{backoff:?}");
    }
}

// ---- timeouts --------------------------------------------------------------------------------------------

#[test]
fn a_per_attempt_timeout_that_is_not_reached_changes_nothing() {
    let policy = RetryPolicy::new(3)
        .with_backoff(Backoff::None)
        .with_timeout(ms(5 * SECOND));
    let run = run_retry(&policy, 1, false);
    assert_eq!(run.result, completed("ok on call 2"));
    // One timeout timer per attempt; neither fired into history before the activity answered.
    assert_eq!(count(&run.history, "TimerCreated"), 2);
    assert_eq!(count(&run.history, "TimerFired"), 0);
}

#[test]
fn total_timeout_stops_retrying() {
    let policy = RetryPolicy::new(10)
        .with_backoff(Backoff::Fixed { delay: ms(SECOND) })
        .with_total_timeout(ms(3_500));
    let run = run_retry(&policy, u32::MAX, false);
    // Attempts at +0 s, +1 s, +2 s, +3 s; a fifth would start at +4 s, past the 3.5 s budget.
    assert_eq!(
        run.result,
        failed("failure 4 (total retry timeout reached after attempt 4)")
    );
    assert_eq!(run.calls, 4);
    let scheduled: Vec<u64> = run
        .history
        .iter()
        .filter(|e| e.kind.name() == "ActivityScheduled")
        .map(|e| e.timestamp_ms - run.started_at)
        .collect();
    assert_eq!(scheduled, [0, 1_000, 2_000, 3_000]);
    // Each attempt is bounded by what is left of the budget.
    let limits: Vec<u64> = timers(&run.history)
        .iter()
        .filter(|(at, fire)| fire - at != SECOND)
        .map(|(at, fire)| fire - at)
        .collect();
    assert_eq!(limits, [3_500, 2_500, 1_500, 500]);
}

/// A bare engine running one execution, with the history it produced and where each turn began, so a
/// test decides exactly which completion arrives when.
struct Driver {
    handler: Arc<dyn OrchestrationHandler>,
    engine: ReplayEngine,
    history: Vec<Event>,
    /// For each turn: history length before it, its messages and its time.
    turns: Vec<(usize, Vec<OrchestratorMessage>, u64)>,
}

impl Driver {
    fn start(handler: Arc<dyn OrchestrationHandler>, now_ms: u64) -> (Self, TurnOutput) {
        let engine = ReplayEngine::new("d", 1, handler.clone(), "1.0.0", Vec::new());
        let mut driver = Driver {
            handler,
            engine,
            history: Vec::new(),
            turns: Vec::new(),
        };
        let start = OrchestratorMessage::StartOrchestration {
            name: "Retry".into(),
            version: None,
            input: "payload".into(),
            parent: None,
        };
        let out = driver.turn(vec![start], now_ms);
        (driver, out)
    }

    fn turn(&mut self, messages: Vec<OrchestratorMessage>, now_ms: u64) -> TurnOutput {
        self.turns.push((self.history.len(), messages.clone(), now_ms));
        let out = self.engine.run_turn(messages, now_ms, 1).expect("turn runs");
        self.history.extend(out.new_events.iter().cloned());
        out
    }

    /// Every turn, replayed by a fresh engine up to its start and then run again, gives the same new
    /// events; the replay itself is silent.
    fn assert_deterministic(&self) {
        for (len, messages, now_ms) in &self.turns {
            let mut engine = ReplayEngine::new("d", 1, self.handler.clone(), "1.0.0", Vec::new());
            if *len > 0 {
                let replayed = engine.replay(&self.history[..*len]);
                assert_eq!(replayed.status, TurnStatus::Running, "replay of {len} events");
                assert!(replayed.actions.is_empty(), "{:?}", replayed.actions);
                assert!(replayed.new_events.is_empty(), "{:?}", replayed.new_events);
            }
            let out = engine.run_turn(messages.clone(), *now_ms, 1).expect("turn runs");
            let end = len + out.new_events.len();
            assert_eq!(out.new_events, self.history[*len..end], "turn after {len} events");
        }
    }
}

/// The activity and timer an attempt scheduled: (activity event id, timer event id, fire time).
fn attempt(out: &TurnOutput) -> (u64, u64, u64) {
    let activity = out.actions.iter().find_map(|a| match a {
        Action::ScheduleActivity(w) if w.name == "Flaky" => Some(w.event_id),
        _ => None,
    });
    let timer = out.actions.iter().find_map(|a| match a {
        Action::StartTimer { event_id, fire_at_ms } => Some((*event_id, *fire_at_ms)),
        _ => None,
    });
    match (activity, timer) {
        (Some(a), Some((t, at))) => (a, t, at),
        _ => panic!(
            "expected an attempt with its timeout timer, got {:?}",
            out.actions
        ),
    }
}

fn timer_fired(event_id: u64, fire_at_ms: u64) -> OrchestratorMessage {
    OrchestratorMessage::TimerFired {
        execution_id: 1,
        event_id,
        fire_at_ms,
    }
}

fn only_timer(out: &TurnOutput) -> (u64, u64) {
    match out
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::CancelActivity { .. }))
        .collect::<Vec<_>>()[..]
    {
        [Action::StartTimer { event_id, fire_at_ms }] => (*event_id, *fire_at_ms),
        _ => panic!("expected one backoff timer, got {:?}", out.actions),
    }
}

#[test]
fn an_attempt_that_outlives_its_timeout_fails_and_is_cancelled() {
    let t0 = 1_000_000;
    let policy = RetryPolicy::new(3)
        .with_backoff(Backoff::Fixed { delay: ms(SECOND) })
        .with_timeout(ms(5 * SECOND));
    let (mut d, first) = Driver::start(retry_handler(policy, false), t0);
    let (activity1, timeout1, fire1) = attempt(&first);
    assert_eq!(fire1, t0 + 5 * SECOND);

    // The activity never answers; its timeout fires: the attempt fails and its activity is cancelled.
    let out = d.turn(vec![timer_fired(timeout1, fire1)], fire1);
    assert_eq!(out.status, TurnStatus::Running);
    assert!(out
        .actions
        .contains(&Action::CancelActivity { event_id: activity1 }));
    let (backoff, backoff_at) = only_timer(&out);
    assert_eq!(backoff_at, fire1 + SECOND);

    let out = d.turn(vec![timer_fired(backoff, backoff_at)], backoff_at);
    let (activity2, _, fire2) = attempt(&out);
    assert_eq!(fire2, backoff_at + 5 * SECOND);

    // The first attempt's late answer is discarded; the second attempt's answer wins.
    let late = OrchestratorMessage::ActivityCompleted {
        execution_id: 1,
        event_id: activity1,
        result: "late".into(),
    };
    let on_time = OrchestratorMessage::ActivityCompleted {
        execution_id: 1,
        event_id: activity2,
        result: "second".into(),
    };
    let out = d.turn(vec![late, on_time], backoff_at + 10);
    assert_eq!(out.discarded.len(), 1, "{:?}", out.discarded);
    assert_eq!(
        out.status,
        TurnStatus::Completed {
            output: "second".into()
        }
    );
    d.assert_deterministic();
}

#[test]
fn when_every_attempt_times_out_the_error_says_so() {
    let t0 = 1_000_000;
    let policy = RetryPolicy::new(2)
        .with_backoff(Backoff::None)
        .with_timeout(ms(5 * SECOND));
    let (mut d, first) = Driver::start(retry_handler(policy, false), t0);
    let (activity1, timeout1, fire1) = attempt(&first);
    let out = d.turn(vec![timer_fired(timeout1, fire1)], fire1);
    // No backoff: the second attempt starts in the same turn the first one timed out.
    assert!(out
        .actions
        .contains(&Action::CancelActivity { event_id: activity1 }));
    let (activity2, timeout2, fire2) = attempt(&out);
    let out = d.turn(vec![timer_fired(timeout2, fire2)], fire2);
    assert!(out
        .actions
        .contains(&Action::CancelActivity { event_id: activity2 }));
    match &out.status {
        TurnStatus::Failed { error } => {
            assert_eq!(error.message, "activity Flaky timed out after 5000 ms")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    d.assert_deterministic();
}

#[test]
fn total_timeout_abandons_the_running_attempt() {
    let t0 = 1_000_000;
    let policy = RetryPolicy::new(10)
        .with_backoff(Backoff::fixed())
        .with_total_timeout(ms(5 * SECOND));
    let (mut d, first) = Driver::start(retry_handler(policy, false), t0);
    let (activity1, deadline_timer, fire1) = attempt(&first);
    assert_eq!(
        fire1,
        t0 + 5 * SECOND,
        "the attempt is bounded by the total budget"
    );
    let out = d.turn(vec![timer_fired(deadline_timer, fire1)], fire1);
    assert_eq!(out.actions, [Action::CancelActivity { event_id: activity1 }]);
    match &out.status {
        TurnStatus::Failed { error } => assert_eq!(
            error.message,
            "activity Flaky timed out after 5000 ms (total retry timeout reached after attempt 1)"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    d.assert_deterministic();
}
