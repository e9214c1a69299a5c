//! Cancellation end to end: losing and orphaned activities see it promptly, cancelled instances end
//! `Failed` with `canceled: <reason>`, and the cancellation reaches running children.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{epoch_ms, kinds, recorded, Env, Gate, Registries};
use duroxide_core::{Either, EventKind};
use duroxide_runtime::{ActivityContext, Status};
use tokio::time::Instant;

/// What a cooperative activity observed: when it saw `is_cancelled()` (epoch ms and instant).
#[derive(Debug, Default)]
struct Observed {
    saw_cancel_ms: Option<u64>,
    saw_cancel_at: Option<Instant>,
    returned: bool,
}

/// An activity that polls `is_cancelled()` every 10 ms, as the guide's `LongRunning` does, records
/// when it saw it, and then still returns a result (which must be discarded).
async fn long_running(
    ctx: ActivityContext,
    observed: Arc<Mutex<Observed>>,
    started: Gate,
) -> Result<String, String> {
    started.open();
    let deadline = Instant::now() + common::PATIENCE;
    while Instant::now() < deadline {
        if ctx.is_cancelled() {
            let mut o = observed.lock().unwrap();
            o.saw_cancel_ms = Some(epoch_ms());
            o.saw_cancel_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    observed.lock().unwrap().returned = true;
    Ok("late result".to_string())
}

fn long_running_registry(reg: &mut Registries, observed: &Arc<Mutex<Observed>>, started: &Gate) {
    let (observed, started) = (observed.clone(), started.clone());
    reg.activity("LongRunning", move |ctx, _| {
        long_running(ctx, observed.clone(), started.clone())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_activity_sees_cancellation_within_a_second_and_its_result_is_discarded() {
    let observed = Arc::new(Mutex::new(Observed::default()));
    let started = Gate::new();
    let mut reg = Registries::new();
    long_running_registry(&mut reg, &observed, &started);
    // The activity raises `started` once running, so the timer only starts when there is a running
    // activity to cancel (no race between the worker picking it up and the timer).
    let announce = started.clone();
    reg.activity("Announce", move |ctx, _| {
        let announce = announce.clone();
        async move {
            announce.wait().await;
            ctx.get_client()
                .raise_event(ctx.instance_id(), "started", "")
                .await
                .map_err(|e| e.to_string())?;
            Ok(String::new())
        }
    })
    .orchestration("RaceAgainstTimer", |ctx, _| async move {
        let work = ctx.schedule_activity("LongRunning", "");
        let timeout = async {
            let _ = ctx.wait_for_event("started").await;
            ctx.schedule_timer(Duration::from_millis(100)).await;
        };
        let announcer = ctx.schedule_activity("Announce", "");
        let (winner, _) = ctx.join2(ctx.select2(work, timeout), announcer).await;
        let outcome = match winner {
            Either::Left(result) => format!("activity won: {result:?}"),
            Either::Right(()) => "timer won".to_string(),
        };
        // Stay alive so a late result would have an execution to land in.
        let _ = ctx.wait_for_event("finish").await;
        Ok(outcome)
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("race-cancel", "RaceAgainstTimer", "")
        .await
        .unwrap();
    common::eventually("the losing activity returns", || async {
        observed.lock().unwrap().returned
    })
    .await;
    env.client.raise_event("race-cancel", "finish", "").await.unwrap();
    assert_eq!(env.completed("race-cancel").await, "timer won");

    let history = env.history("race-cancel", 1).await;
    let fired = history
        .iter()
        .find(|e| matches!(e.kind, EventKind::TimerFired { .. }))
        .expect("the timer fired");
    let saw = observed
        .lock()
        .unwrap()
        .saw_cancel_ms
        .expect("the activity saw its cancellation");
    assert!(
        saw >= fired.timestamp_ms && saw - fired.timestamp_ms < 1000,
        "timer won at {} ms, activity saw cancellation at {saw} ms",
        fired.timestamp_ms
    );
    let results: Vec<&EventKind> = history
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::ActivityCompleted { result } if result == "late result"))
        .collect();
    assert!(results.is_empty(), "late result applied: {history:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_instance_fails_it_with_the_reason_and_cancels_its_activity() {
    let observed = Arc::new(Mutex::new(Observed::default()));
    let started = Gate::new();
    let mut reg = Registries::new();
    long_running_registry(&mut reg, &observed, &started);
    reg.orchestration("Busy", |ctx, _| async move {
        ctx.schedule_activity("LongRunning", "").await
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("busy-1", "Busy", "")
        .await
        .unwrap();
    started.wait().await;
    let cancelled_at = Instant::now();
    env.client.cancel_instance("busy-1", "user asked").await.unwrap();
    let error = env.failed("busy-1").await;
    assert!(error.starts_with("canceled: user asked"), "{error}");
    common::eventually("the orphaned activity returns", || async {
        observed.lock().unwrap().returned
    })
    .await;
    let saw = observed
        .lock()
        .unwrap()
        .saw_cancel_at
        .expect("the activity saw its cancellation");
    assert!(
        saw.duration_since(cancelled_at) < Duration::from_secs(1),
        "cancellation took {:?}",
        saw.duration_since(cancelled_at)
    );
    let history = kinds(&env.history("busy-1", 1).await);
    assert!(!history.contains(&"ActivityCompleted"), "{history:?}");
    assert_eq!(history.last(), Some(&"OrchestrationFailed"));

    // Cancelling a terminal instance changes nothing.
    env.client.cancel_instance("busy-1", "again").await.unwrap();
    let error = env.failed("busy-1").await;
    assert!(error.starts_with("canceled: user asked"), "{error}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_instance_while_waiting_for_an_event() {
    let mut reg = Registries::new();
    reg.orchestration(
        "Waiter",
        |ctx, _| async move { Ok(ctx.wait_for_event("never").await) },
    );
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("waiter-1", "Waiter", "")
        .await
        .unwrap();
    recorded(&env.client, "waiter-1", "ExternalSubscribed").await;
    env.client
        .cancel_instance("waiter-1", "no longer needed")
        .await
        .unwrap();
    let error = env.failed("waiter-1").await;
    assert_eq!(error, "canceled: no longer needed");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_parent_cancels_its_running_children() {
    let mut reg = Registries::new();
    reg.orchestration("Sleeper", |ctx, _| async move {
        Ok(ctx.wait_for_event("never").await)
    })
    .orchestration("Nested", |ctx, input| async move {
        // A grandchild: the cancellation must travel the whole tree.
        ctx.schedule_sub_orchestration_with_id("Sleeper", &format!("{input}-leaf"), "")
            .await
    })
    .orchestration("CancelParent", |ctx, _| async move {
        let children = vec![
            ctx.schedule_sub_orchestration_with_id("Sleeper", "cp-child-0", ""),
            ctx.schedule_sub_orchestration_with_id("Sleeper", "cp-child-1", ""),
            ctx.schedule_sub_orchestration_with_id("Nested", "cp-child-2", "cp-child-2"),
        ];
        let results: Vec<String> = ctx.join(children).await.into_iter().collect::<Result<_, _>>()?;
        Ok(results.join(","))
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("cp", "CancelParent", "")
        .await
        .unwrap();
    let leaves = ["cp-child-0", "cp-child-1", "cp-child-2-leaf"];
    for id in leaves {
        recorded(&env.client, id, "ExternalSubscribed").await;
    }
    env.client.cancel_instance("cp", "operator stop").await.unwrap();
    let error = env.failed("cp").await;
    assert!(error.starts_with("canceled: operator stop"), "{error}");
    for id in ["cp-child-0", "cp-child-1", "cp-child-2", "cp-child-2-leaf"] {
        let error = env.failed(id).await;
        assert!(error.starts_with("canceled:"), "{id}: {error}");
    }
    let status = env.client.get_status("cp-child-2-leaf").await.unwrap();
    assert_eq!(status.status, Status::Failed);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_on_another_runtime_sees_cancellation_within_a_second() {
    // Two provider objects on one file stand for two processes: the orchestration runs on one, the
    // activity on the other, so no in-process signal can carry the cancellation.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cross.db");
    let observed = Arc::new(Mutex::new(Observed::default()));
    let started = Gate::new();
    let mut reg = Registries::new();
    long_running_registry(&mut reg, &observed, &started);
    reg.orchestration("Busy", |ctx, _| async move {
        ctx.schedule_activity("LongRunning", "").await
    });
    let orchestrator = Env::start(
        common::file(&path),
        &reg,
        duroxide_runtime::RuntimeOptions {
            worker_concurrency: 0,
            ..common::options()
        },
    )
    .await;
    let worker = Env::start(
        common::file(&path),
        &reg,
        duroxide_runtime::RuntimeOptions {
            orchestration_concurrency: 0,
            ..common::options()
        },
    )
    .await;
    orchestrator
        .client
        .start_orchestration("busy-x", "Busy", "")
        .await
        .unwrap();
    started.wait().await;
    let cancelled_at = Instant::now();
    orchestrator
        .client
        .cancel_instance("busy-x", "elsewhere")
        .await
        .unwrap();
    let error = orchestrator.failed("busy-x").await;
    assert!(error.starts_with("canceled: elsewhere"), "{error}");
    common::eventually("the activity on the other runtime returns", || async {
        observed.lock().unwrap().returned
    })
    .await;
    let saw = observed
        .lock()
        .unwrap()
        .saw_cancel_at
        .expect("the activity saw its cancellation");
    assert!(
        saw.duration_since(cancelled_at) < Duration::from_secs(1),
        "cancellation took {:?}",
        saw.duration_since(cancelled_at)
    );
    worker.shutdown().await;
    orchestrator.shutdown().await;
}
