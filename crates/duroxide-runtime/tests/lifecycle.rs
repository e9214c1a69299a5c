//! Runtime lifecycle: shutdown returns as soon as it is idle, drains in-flight work, and the metrics
//! snapshot counts what the runtime did.

mod common;

use std::time::Duration;

use common::{recorded, Env, Gate, Registries};
use duroxide_runtime::{Client, RuntimeOptions, Status};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_promptly_when_idle() {
    let mut reg = Registries::new();
    reg.activity("Noop", |_, _| async move { Ok(String::new()) })
        .orchestration(
            "Once",
            |ctx, _| async move { ctx.schedule_activity("Noop", "").await },
        );

    // Never used at all.
    let idle = Env::memory(&reg).await;
    let started = Instant::now();
    idle.runtime.shutdown(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );

    // After some work, and with an instance still waiting on a timer far in the future.
    let mut reg = reg.clone();
    reg.orchestration("Later", |ctx, _| async move {
        ctx.schedule_timer(Duration::from_secs(3600)).await;
        Ok(String::new())
    });
    let env = Env::memory(&reg).await;
    env.client.start_orchestration("once", "Once", "").await.unwrap();
    env.client
        .start_orchestration("later", "Later", "")
        .await
        .unwrap();
    env.completed("once").await;
    recorded(&env.client, "later", "TimerCreated").await;
    let started = Instant::now();
    env.runtime.shutdown(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_activity_finish() {
    let gate = Gate::new();
    let running = Gate::new();
    let mut reg = Registries::new();
    let (hold, announce) = (gate.clone(), running.clone());
    reg.activity("Slow", move |_, _| {
        let (hold, announce) = (hold.clone(), announce.clone());
        async move {
            announce.open();
            hold.wait().await;
            Ok("finished during shutdown".to_string())
        }
    })
    .orchestration("Drain", |ctx, _| async move {
        ctx.schedule_activity("Slow", "").await
    });
    let provider = common::memory();
    let env = Env::start(provider.clone(), &reg, common::options()).await;
    env.client
        .start_orchestration("drain-1", "Drain", "")
        .await
        .unwrap();
    running.wait().await;
    let shutdown = tokio::spawn(env.runtime.shutdown(Duration::from_secs(10)));
    // Shutdown waits for the activity instead of returning or abandoning it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown returned with an activity running"
    );
    let released = Instant::now();
    gate.open();
    shutdown.await.unwrap();
    assert!(
        released.elapsed() < Duration::from_secs(2),
        "took {:?}",
        released.elapsed()
    );

    // The result was recorded: a new runtime only has to run the orchestration's last turn.
    let client = Client::new(provider.clone());
    let after = Env::start(provider, &reg, common::options()).await;
    assert_eq!(after.completed("drain-1").await, "finished during shutdown");
    assert_eq!(
        client.get_status("drain-1").await.unwrap().status,
        Status::Completed
    );
    after.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_snapshot_counts_what_ran() {
    let mut reg = Registries::new();
    reg.activity("Ok", |_, _| async move { Ok(String::new()) })
        .activity("Err", |_, _| async move { Err("no".to_string()) })
        .orchestration(
            "Child",
            |ctx, _| async move { ctx.schedule_activity("Ok", "").await },
        )
        .orchestration("Work", |ctx, input| async move {
            ctx.schedule_activity("Ok", "").await?;
            ctx.schedule_activity("Ok", "").await?;
            ctx.schedule_sub_orchestration("Child", "").await?;
            if input == "again" {
                return ctx.continue_as_new("done").await;
            }
            if input == "fail" {
                ctx.schedule_activity("Err", "").await?;
            }
            Ok(String::new())
        });
    let env = Env::start(
        common::memory(),
        &reg,
        RuntimeOptions {
            service_name: Some("metrics-test".into()),
            service_version: Some("1.2.3".into()),
            ..common::options()
        },
    )
    .await;
    assert_eq!(env.runtime.metrics_snapshot().orch_starts, 0);
    for (id, input) in [("w-1", ""), ("w-2", "again"), ("w-3", "fail")] {
        env.client.start_orchestration(id, "Work", input).await.unwrap();
    }
    env.completed("w-1").await;
    env.completed("w-2").await;
    env.failed("w-3").await;
    // Counters move right after the commit a client may already have seen; let them settle.
    common::eventually("the last turns are counted", || async {
        let m = env.runtime.metrics_snapshot();
        m.orch_completions == 6 && m.orch_failures == 1
    })
    .await;
    let m = env.runtime.metrics_snapshot();
    // Four executions of Work (w-2 continued once) and four children.
    assert_eq!(m.orch_starts, 8, "{m:?}");
    assert_eq!(m.orch_completions, 6, "{m:?}");
    assert_eq!(m.orch_failures, 1, "{m:?}");
    assert_eq!(m.orch_application_errors, 1, "{m:?}");
    assert_eq!(m.orch_continue_as_new, 1, "{m:?}");
    assert_eq!(m.suborchestration_calls, 4, "{m:?}");
    assert_eq!(m.activity_success, 12, "{m:?}");
    assert_eq!(m.activity_app_errors, 1, "{m:?}");
    assert_eq!(m.provider_errors, 0, "{m:?}");
    assert!(m.orch_dispatcher_items_fetched >= 8, "{m:?}");
    assert!(m.worker_dispatcher_items_fetched >= 13, "{m:?}");
    let names: Vec<&str> = m.entries().iter().map(|(name, _)| *name).collect();
    for name in [
        "orch_starts",
        "orch_completions",
        "activity_success",
        "provider_errors",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    env.shutdown().await;
}
