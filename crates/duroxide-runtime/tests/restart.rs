//! Runtime restarts on a SQLite file: in-flight orchestrations, timers and parent/child links
//! survive a runtime (and provider) going away and a new one opening the same database.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{recorded, Env, Registries};
use duroxide_runtime::{Client, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_on_its_second_execution_receives_its_childs_result_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parent.db");
    let mut reg = Registries::new();
    reg.orchestration("RestartParent", |ctx, input| async move {
        if input == "first" {
            return ctx.continue_as_new("second").await;
        }
        let result = ctx
            .schedule_sub_orchestration_with_id("RestartChild", "restart-child", "")
            .await?;
        Ok(format!("execution {} got {result}", ctx.execution_id()))
    })
    .orchestration("RestartChild", |ctx, _| async move {
        Ok(format!("child saw {}", ctx.wait_for_event("release").await))
    });

    let first = Env::start(common::file(&path), &reg, common::options()).await;
    first
        .client
        .start_orchestration("restart-parent", "RestartParent", "first")
        .await
        .unwrap();
    recorded(&first.client, "restart-child", "ExternalSubscribed").await;
    first.shutdown().await;

    // Nothing of the first runtime or provider survives but the file.
    let second = Env::start(common::file(&path), &reg, common::options()).await;
    second
        .client
        .raise_event("restart-child", "release", "the event")
        .await
        .unwrap();
    assert_eq!(
        second.completed("restart-parent").await,
        "execution 2 got child saw the event"
    );
    assert_eq!(
        second.client.list_executions("restart-parent").await.unwrap(),
        [1, 2]
    );
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_runtime_finishes_every_in_flight_orchestration() {
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inflight.db");
    let steps = Arc::new(AtomicU32::new(0));
    let mut reg = Registries::new();
    let count = steps.clone();
    reg.activity("Step", move |_, input| {
        let count = count.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            count.fetch_add(1, Ordering::SeqCst);
            Ok(format!("{input}+"))
        }
    })
    .orchestration("Job", |ctx, input| async move {
        let mut value = input;
        for _ in 0..3 {
            value = ctx.schedule_activity("Step", value).await?;
            ctx.schedule_timer(Duration::from_millis(100)).await;
        }
        Ok(value)
    });

    let first = Env::start(common::file(&path), &reg, common::options()).await;
    for i in 0..N {
        first
            .client
            .start_orchestration(&format!("job-{i}"), "Job", &format!("j{i}"))
            .await
            .unwrap();
    }
    // Stop part-way: some work done, much still in flight (activities running, timers pending).
    common::eventually("some steps ran", || async { steps.load(Ordering::SeqCst) >= 20 }).await;
    first.runtime.shutdown(Duration::from_millis(50)).await;
    let client = Client::new(first.provider.clone());
    let mut running = 0;
    for i in 0..N {
        let state = client.get_status(&format!("job-{i}")).await.unwrap();
        if state.status == Status::Running {
            running += 1;
        }
    }
    assert!(
        running > 0,
        "everything finished before the shutdown; the test proves nothing"
    );
    drop(client);
    drop(first.client);
    drop(first.provider);

    let second = Env::start(common::file(&path), &reg, common::options()).await;
    for i in 0..N {
        assert_eq!(
            second.completed(&format!("job-{i}")).await,
            format!("j{i}+++"),
            "job-{i}"
        );
    }
    let metrics = second.client.get_system_metrics().await.unwrap();
    assert_eq!(metrics.completed_instances, N as u64);
    assert_eq!(metrics.running_instances, 0);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_timer_and_buffered_event_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timer.db");
    let mut reg = Registries::new();
    reg.orchestration("Sleepy", |ctx, _| async move {
        ctx.schedule_timer(Duration::from_millis(500)).await;
        Ok(ctx.wait_for_event("after").await)
    });
    let first = Env::start(common::file(&path), &reg, common::options()).await;
    first
        .client
        .start_orchestration("sleepy-1", "Sleepy", "")
        .await
        .unwrap();
    recorded(&first.client, "sleepy-1", "TimerCreated").await;
    // Raised while the timer is pending: buffered in history, then the runtime goes away.
    first
        .client
        .raise_event("sleepy-1", "after", "woke up")
        .await
        .unwrap();
    recorded(&first.client, "sleepy-1", "ExternalEventReceived").await;
    first.shutdown().await;

    let second = Env::start(common::file(&path), &reg, common::options()).await;
    assert_eq!(second.completed("sleepy-1").await, "woke up");
    second.shutdown().await;
}
