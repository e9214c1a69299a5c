//! Short timers waited out in memory with the instance held: the turn that sets the timer commits
//! with the turn that takes it, the history is the one a stored timer gives, and only timers nothing
//! else could race are held.

mod common;

use std::time::{Duration, Instant};

use common::{kinds, Env, Registries};
use duroxide_core::{Either, EventKind};
use duroxide_runtime::RuntimeOptions;

/// `Sleep` waits for a timer of its input's milliseconds; `SleepOrEvent` races one against "go".
fn registries() -> Registries {
    let mut reg = Registries::new();
    reg.orchestration("Sleep", |ctx, ms: String| async move {
        ctx.schedule_timer(Duration::from_millis(ms.parse().unwrap()))
            .await;
        Ok("slept".to_string())
    })
    .orchestration("SleepOrEvent", |ctx, ms: String| async move {
        let timer = ctx.schedule_timer(Duration::from_millis(ms.parse().unwrap()));
        match ctx.select2(timer, ctx.wait_for_event("go")).await {
            Either::Left(_) => Ok("timer".to_string()),
            Either::Right(data) => Ok(format!("event {data}")),
        }
    });
    reg
}

fn without_holding() -> RuntimeOptions {
    RuntimeOptions {
        timer_hold: Duration::ZERO,
        ..common::options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_timer_is_waited_out_in_memory_and_records_what_a_stored_one_would() {
    let reg = registries();
    let env = Env::memory(&reg).await;
    let started = Instant::now();
    env.client
        .start_orchestration("short", "Sleep", "30")
        .await
        .unwrap();
    assert_eq!(env.completed("short").await, "slept");
    assert!(started.elapsed() >= Duration::from_millis(30), "fired early");
    let m = env.runtime.metrics_snapshot();
    assert_eq!(m.timers_held, 1, "{m:?}");
    // One fetch: both turns committed as one.
    assert_eq!(m.orch_dispatcher_items_fetched, 1, "{m:?}");
    let held = env.history("short", 1).await;
    let (created, fired) = match (&held[1].kind, &held[2].kind) {
        (EventKind::TimerCreated { fire_at_ms }, EventKind::TimerFired { fire_at_ms: at }) => {
            (*fire_at_ms, *at)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(created, fired);
    assert!(held[2].timestamp_ms >= fired, "{held:?}");

    let stored = Env::start(common::memory(), &reg, without_holding()).await;
    stored
        .client
        .start_orchestration("short", "Sleep", "30")
        .await
        .unwrap();
    assert_eq!(stored.completed("short").await, "slept");
    assert_eq!(stored.runtime.metrics_snapshot().timers_held, 0);
    let ids = |events: &[duroxide_core::Event]| {
        events
            .iter()
            .map(|e| (e.event_id, e.source_event_id))
            .collect::<Vec<_>>()
    };
    let through_store = stored.history("short", 1).await;
    assert_eq!(kinds(&held), kinds(&through_store));
    assert_eq!(ids(&held), ids(&through_store));
    stored.shutdown().await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_beyond_the_hold_or_raced_against_an_event_are_stored() {
    let env = Env::memory(&registries()).await;
    env.client
        .start_orchestration("long", "Sleep", "400")
        .await
        .unwrap();
    env.client
        .start_orchestration("raced", "SleepOrEvent", "50")
        .await
        .unwrap();
    assert_eq!(env.completed("long").await, "slept");
    // An event raised while the timer runs could win; holding would take the timer first.
    env.completed("raced").await;
    let m = env.runtime.metrics_snapshot();
    assert_eq!(m.timers_held, 0, "{m:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_a_held_instance_with_its_timer_stored() {
    let provider = common::memory();
    let reg = registries();
    // Holds timers of up to a minute, so the one below is surely held when shutdown begins.
    let options = RuntimeOptions {
        timer_hold: Duration::from_secs(60),
        orchestrator_lock_timeout: Duration::from_secs(600),
        ..common::options()
    };
    let env = Env::start(provider.clone(), &reg, options).await;
    env.client
        .start_orchestration("held", "Sleep", "2000")
        .await
        .unwrap();
    common::eventually("the instance is fetched", || async {
        env.runtime.metrics_snapshot().orch_dispatcher_items_fetched == 1
    })
    .await;
    let stopping = Instant::now();
    env.runtime.shutdown(Duration::from_secs(30)).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(1),
        "shutdown waited for the held timer: {:?}",
        stopping.elapsed()
    );
    let history = common::history(&env.client, "held", 1).await;
    assert_eq!(kinds(&history), ["OrchestrationStarted", "TimerCreated"]);

    // Stored, the timer fires for the next runtime.
    let after = Env::start(provider, &reg, without_holding()).await;
    assert_eq!(after.completed("held").await, "slept");
    after.shutdown().await;
}
