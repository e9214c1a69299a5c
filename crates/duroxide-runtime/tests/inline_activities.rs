//! Short activities run by the orchestration dispatcher itself ("inline"), committed with the turn
//! that takes their results: what it saves, and that it never runs an activity twice or loses a
//! result on the way (a long run, a panic in the next turn, a shutdown).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{kinds, Env, Gate, Registries};
use duroxide_core::Provider;
use duroxide_runtime::{MetricsSnapshot, RuntimeOptions};

/// How many times each activity input ran.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, usize>>>);

impl Runs {
    fn count(&self, input: &str) {
        *self.0.lock().unwrap().entry(input.to_string()).or_default() += 1;
    }

    fn of(&self, input: &str) -> usize {
        self.0.lock().unwrap().get(input).copied().unwrap_or(0)
    }
}

/// The steps every test runs: `Step` (counted, quick unless its input starts with "hold", which
/// opens `running` and waits for `gate`) and `Chain`, which runs three steps in sequence on inputs
/// derived from its own. Tests add orchestrations to `reg`.
struct Steps {
    runs: Runs,
    gate: Gate,
    running: Gate,
    reg: Registries,
}

impl Steps {
    fn new() -> Steps {
        let (runs, gate, running) = (Runs::default(), Gate::new(), Gate::new());
        let mut reg = Registries::new();
        let (counted, held, announce) = (runs.clone(), gate.clone(), running.clone());
        reg.activity("Step", move |_, input: String| {
            let (runs, gate, running) = (counted.clone(), held.clone(), announce.clone());
            async move {
                runs.count(&input);
                if input.starts_with("hold") {
                    running.open();
                    gate.wait().await;
                }
                Ok(input)
            }
        })
        .orchestration("Chain", |ctx, input| async move {
            let a = ctx.schedule_activity("Step", format!("{input}-1")).await?;
            let b = ctx.schedule_activity("Step", format!("{input}-2")).await?;
            let c = ctx.schedule_activity("Step", format!("{input}-3")).await?;
            Ok(format!("{a} {b} {c}"))
        });
        Steps {
            runs,
            gate,
            running,
            reg,
        }
    }

    /// A runtime on a fresh store that runs every activity through the worker queue.
    async fn queued(&self) -> Env {
        let options = RuntimeOptions {
            inline_activity_wait: Duration::ZERO,
            ..common::options()
        };
        Env::start(common::memory(), &self.reg, options).await
    }

    /// A runtime on `provider` that has warmed up, and its counters after the warm-up.
    async fn warmed(&self, provider: Arc<dyn Provider>, options: RuntimeOptions) -> (Env, MetricsSnapshot) {
        let env = Env::start(provider, &self.reg, options).await;
        warm_up(&env).await;
        let warm = env.runtime.metrics_snapshot();
        (env, warm)
    }
}

/// Asserts that, between `warm` and `after`, one instance ran with all its `runs` activities inline:
/// no work item fetched, and one fetch (the start) for all its turns, committed as one.
fn assert_one_instance_all_inline(warm: &MetricsSnapshot, after: &MetricsSnapshot, runs: u64) {
    assert_eq!(
        after.activity_inline_runs - warm.activity_inline_runs,
        runs,
        "{after:?}"
    );
    assert_eq!(
        after.worker_dispatcher_items_fetched, warm.worker_dispatcher_items_fetched,
        "no work item was fetched: {after:?}"
    );
    assert_eq!(
        after.orch_dispatcher_items_fetched - warm.orch_dispatcher_items_fetched,
        1,
        "{after:?}"
    );
}

/// Runs chains until one runs all its steps inline: the first step ever goes through the worker
/// queue, and a run slowed down by a busy machine can make `Step` look long for a while.
async fn warm_up(env: &Env) {
    for round in 0..20 {
        let before = env.runtime.metrics_snapshot().activity_inline_runs;
        let id = format!("warm-{round}");
        env.client
            .start_orchestration(&id, "Chain", "warm")
            .await
            .unwrap();
        env.completed(&id).await;
        if env.runtime.metrics_snapshot().activity_inline_runs - before == 3 {
            return;
        }
    }
    panic!("no chain of quick steps ran inline in 20 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_quick_activities_runs_inline_and_records_what_the_queue_would() {
    let steps = Steps::new();
    let (env, warm) = steps.warmed(common::memory(), common::options()).await;
    // An activity never seen to run goes through the queue first.
    assert!(warm.worker_dispatcher_items_fetched >= 1, "{warm:?}");

    env.client
        .start_orchestration("inline", "Chain", "in")
        .await
        .unwrap();
    assert_eq!(env.completed("inline").await, "in-1 in-2 in-3");
    assert_one_instance_all_inline(&warm, &env.runtime.metrics_snapshot(), 3);
    for step in ["in-1", "in-2", "in-3"] {
        assert_eq!(steps.runs.of(step), 1, "{step}");
    }

    // The same history, event for event, as through the queue.
    let queued = steps.queued().await;
    queued
        .client
        .start_orchestration("warm", "Chain", "warm")
        .await
        .unwrap();
    queued.completed("warm").await;
    queued
        .client
        .start_orchestration("inline", "Chain", "in")
        .await
        .unwrap();
    assert_eq!(queued.completed("inline").await, "in-1 in-2 in-3");
    assert_eq!(queued.runtime.metrics_snapshot().activity_inline_runs, 0);
    let (inline, through_queue) = (env.history("inline", 1).await, queued.history("inline", 1).await);
    assert_eq!(kinds(&inline), kinds(&through_queue));
    let ids = |events: &[duroxide_core::Event]| {
        events
            .iter()
            .map(|e| (e.event_id, e.source_event_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&inline), ids(&through_queue));
    queued.shutdown().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_activity_that_runs_long_is_handed_to_a_worker_not_run_again() {
    let steps = Steps::new();
    let (env, warm) = steps.warmed(common::memory(), common::options()).await;

    env.client
        .start_orchestration("long", "Chain", "hold")
        .await
        .unwrap();
    steps.running.wait().await;
    // Past the inline wait the first turn commits with the step's work item while it still runs.
    common::recorded(&env.client, "long", "ActivityScheduled").await;
    steps.gate.open();
    assert_eq!(env.completed("long").await, "hold-1 hold-2 hold-3");
    for step in ["hold-1", "hold-2", "hold-3"] {
        assert_eq!(steps.runs.of(step), 1, "{step} ran once");
    }
    let after = env.runtime.metrics_snapshot();
    // The worker that fetched the first step's item took the inline execution's result.
    assert!(
        after.worker_dispatcher_items_fetched > warm.worker_dispatcher_items_fetched,
        "{after:?}"
    );
    assert_eq!(after.activity_success - warm.activity_success, 3, "{after:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_turn_after_inline_activities_fails_the_instance_once_each() {
    let mut steps = Steps::new();
    steps.reg.orchestration("StepThenPanic", |ctx, _| async move {
        let first = ctx.schedule_activity("Step", "before-panic").await?;
        if first == "before-panic" {
            panic!("exploded after an inline step");
        }
        Ok(first)
    });
    let (env, warm) = steps.warmed(common::memory(), common::options()).await;

    env.client
        .start_orchestration("panics", "StepThenPanic", "")
        .await
        .unwrap();
    let error = env.failed("panics").await;
    assert!(error.contains("exploded after an inline step"), "{error}");
    assert_eq!(steps.runs.of("before-panic"), 1);
    // As through the queue: the turn that panicked appends nothing of its own, only the failure.
    let history = env.history("panics", 1).await;
    assert_eq!(
        kinds(&history),
        ["OrchestrationStarted", "ActivityScheduled", "OrchestrationFailed"]
    );
    let after = env.runtime.metrics_snapshot();
    assert_eq!(after.activity_success - warm.activity_success, 1, "{after:?}");
    assert_eq!(after.provider_errors, 0, "{after:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_inline_activity_finish_and_records_its_result() {
    let steps = Steps::new();
    let provider = common::memory();
    // A long inline wait, so that the shutdown below begins while the step is still inline.
    let options = RuntimeOptions {
        inline_activity_wait: Duration::from_secs(60),
        orchestrator_lock_timeout: Duration::from_secs(60),
        ..common::options()
    };
    let (env, _) = steps.warmed(provider.clone(), options.clone()).await;

    env.client
        .start_orchestration("stopped", "Chain", "hold")
        .await
        .unwrap();
    steps.running.wait().await;
    let shutdown = tokio::spawn(env.runtime.shutdown(Duration::from_secs(30)));
    // Shutdown waits for the inline step instead of returning or leaving it to a worker.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown returned with an activity running"
    );
    steps.gate.open();
    shutdown.await.unwrap();
    let history = common::history(&env.client, "stopped", 1).await;
    // The step's result was committed before shutdown returned, with the turn that took it (which
    // scheduled the next step for a worker).
    assert_eq!(
        kinds(&history),
        [
            "OrchestrationStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled"
        ]
    );

    // A new runtime runs the rest, and the first step does not run again.
    let after = Env::start(provider, &steps.reg, options).await;
    assert_eq!(after.completed("stopped").await, "hold-1 hold-2 hold-3");
    assert_eq!(steps.runs.of("hold-1"), 1);
    after.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_raced_against_an_event_go_through_the_queue() {
    // An event raised while the step runs must be able to win: the step is not run inline, where
    // its result would be taken before the queue is looked at again.
    let mut steps = Steps::new();
    steps.reg.orchestration("StepOrEvent", |ctx, _| async move {
        let step = ctx.schedule_activity("Step", "raced");
        match ctx.select2(step, ctx.wait_for_event("go")).await {
            duroxide_core::Either::Left(step) => step,
            duroxide_core::Either::Right(event) => Ok(format!("event {event}")),
        }
    });
    let (env, warm) = steps.warmed(common::memory(), common::options()).await;

    env.client
        .start_orchestration("race", "StepOrEvent", "")
        .await
        .unwrap();
    assert_eq!(env.completed("race").await, "raced");
    let after = env.runtime.metrics_snapshot();
    assert_eq!(after.activity_inline_runs, warm.activity_inline_runs, "{after:?}");
    assert!(
        after.worker_dispatcher_items_fetched > warm.worker_dispatcher_items_fetched,
        "{after:?}"
    );
    env.shutdown().await;
}

/// Each event's kind and the event it answers, sorted: a fan-out's results arrive in any order
/// through the queue, so only this much of two histories must agree.
fn answers(events: &[duroxide_core::Event]) -> Vec<(&'static str, Option<u64>)> {
    let mut answers: Vec<_> = events
        .iter()
        .map(|e| (e.kind.name(), e.source_event_id))
        .collect();
    answers.sort();
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_wider_than_the_worker_slots_runs_inline_a_few_at_a_time() {
    let mut steps = Steps::new();
    steps.reg.orchestration("Fan", |ctx, input| async move {
        let width: usize = input.parse().unwrap();
        let calls = (0..width)
            .map(|i| ctx.schedule_activity("Step", format!("fan-{i}")))
            .collect();
        let results = ctx.join(calls).await;
        Ok(results.into_iter().collect::<Result<Vec<_>, _>>()?.join(" "))
    });
    let options = common::options();
    let width = 3 * options.worker_concurrency;
    let (env, warm) = steps.warmed(common::memory(), options).await;

    env.client
        .start_orchestration("fan", "Fan", &width.to_string())
        .await
        .unwrap();
    let expected: Vec<String> = (0..width).map(|i| format!("fan-{i}")).collect();
    assert_eq!(env.completed("fan").await, expected.join(" "));
    for step in &expected {
        assert_eq!(steps.runs.of(step), 1, "{step} ran once");
    }
    assert_one_instance_all_inline(&warm, &env.runtime.metrics_snapshot(), width as u64);

    // The same events as through the queue.
    let queued = steps.queued().await;
    queued
        .client
        .start_orchestration("fan", "Fan", &width.to_string())
        .await
        .unwrap();
    queued.completed("fan").await;
    assert_eq!(
        answers(&env.history("fan", 1).await),
        answers(&queued.history("fan", 1).await)
    );
    queued.shutdown().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_in_a_fan_out_commits_the_ended_results_and_leaves_itself_to_a_worker() {
    let mut steps = Steps::new();
    steps.reg.orchestration("FanWithHold", |ctx, _| async move {
        let mut calls = vec![ctx.schedule_activity("Step", "hold-fan")];
        calls.extend((0..10).map(|i| ctx.schedule_activity("Step", format!("quick-{i}"))));
        let results = ctx.join(calls).await;
        Ok(results.into_iter().collect::<Result<Vec<_>, _>>()?.join(" "))
    });
    // A long inline wait: the quick steps end well inside it, however busy the machine.
    let options = RuntimeOptions {
        inline_activity_wait: Duration::from_millis(500),
        ..common::options()
    };
    let (env, warm) = steps.warmed(common::memory(), options).await;

    env.client
        .start_orchestration("held", "FanWithHold", "")
        .await
        .unwrap();
    steps.running.wait().await;
    // Past the inline wait the turns commit: the quick steps' results, and the held step's item.
    common::recorded(&env.client, "held", "ActivityCompleted").await;
    let history = env.history("held", 1).await;
    let completed = kinds(&history)
        .iter()
        .filter(|k| **k == "ActivityCompleted")
        .count();
    assert_eq!(completed, 10, "{:?}", kinds(&history));
    steps.gate.open();
    let quick: Vec<String> = (0..10).map(|i| format!("quick-{i}")).collect();
    assert_eq!(
        env.completed("held").await,
        format!("hold-fan {}", quick.join(" "))
    );
    for step in quick.iter().map(String::as_str).chain(["hold-fan"]) {
        assert_eq!(steps.runs.of(step), 1, "{step} ran once");
    }
    let after = env.runtime.metrics_snapshot();
    assert_eq!(
        after.activity_inline_runs - warm.activity_inline_runs,
        10,
        "{after:?}"
    );
    // The worker that fetched the held step's item took the inline execution's result.
    assert_eq!(
        after.worker_dispatcher_items_fetched - warm.worker_dispatcher_items_fetched,
        1,
        "{after:?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_activity_that_loses_a_race_while_running_is_cancelled() {
    let mut steps = Steps::new();
    let (watching, saw_cancel) = (Gate::new(), Gate::new());
    let (started, seen) = (watching.clone(), saw_cancel.clone());
    steps
        .reg
        .activity("Watch", move |ctx, input: String| {
            let (started, seen) = (started.clone(), seen.clone());
            async move {
                if input == "wait" {
                    started.open();
                    ctx.cancelled().await;
                    seen.open();
                }
                Ok(input)
            }
        })
        .orchestration("Watch", |ctx, input| async move {
            ctx.schedule_activity("Watch", input).await
        })
        .orchestration("QuickOrWatched", |ctx, _| async move {
            let quick = ctx.schedule_activity("Step", "quick-race");
            let watched = ctx.schedule_activity("Watch", "wait");
            match ctx.select2(quick, watched).await {
                duroxide_core::Either::Left(quick) => quick,
                duroxide_core::Either::Right(_) => Err("the watched activity won".to_string()),
            }
        });
    let (env, _) = steps.warmed(common::memory(), common::options()).await;
    // `Watch` runs once through the queue, so that it counts as quick.
    env.client
        .start_orchestration("watch-warm", "Watch", "now")
        .await
        .unwrap();
    assert_eq!(env.completed("watch-warm").await, "now");
    let warm = env.runtime.metrics_snapshot();

    env.client
        .start_orchestration("race", "QuickOrWatched", "")
        .await
        .unwrap();
    assert_eq!(env.completed("race").await, "quick-race");
    assert!(watching.is_open());
    // The loser's work item was never stored, so no worker could cancel it: the inline run was.
    common::eventually("the losing activity sees its cancellation", || async {
        saw_cancel.is_open()
    })
    .await;
    let after = env.runtime.metrics_snapshot();
    assert_eq!(
        after.worker_dispatcher_items_fetched, warm.worker_dispatcher_items_fetched,
        "{after:?}"
    );
    assert_eq!(
        after.activity_inline_runs - warm.activity_inline_runs,
        1,
        "{after:?}"
    );
    env.shutdown().await;
}
