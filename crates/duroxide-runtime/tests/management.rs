//! The management API through the client: listing, instance and execution info, histories, trees,
//! deletion, and system, queue and per-instance figures.

mod common;

use std::time::Duration;

use common::{kinds, recorded, Env, Registries};
use duroxide_core::provider::{ExecutionStatus, InstanceStatus};
use duroxide_runtime::{Client, ClientError, Status};

/// Orchestrations the tests below share: one that finishes, one that waits, one that fails, one
/// that continues as new twice, and a small tree of sub-orchestrations.
fn registry() -> Registries {
    let mut reg = Registries::new();
    reg.activity("Double", |_, input| async move {
        let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
        Ok((2 * n).to_string())
    })
    .orchestration("Done", |ctx, input| async move {
        let doubled = ctx.schedule_activity("Double", input).await?;
        ctx.schedule_timer(Duration::from_millis(1)).await;
        Ok(doubled)
    })
    .orchestration("Wait", |ctx, _| async move { Ok(ctx.wait_for_event("go").await) })
    .orchestration("Fail", |_, _| async move { Err("on purpose".to_string()) })
    .orchestration("Loop", |ctx, input| async move {
        let n: u64 = input.parse().map_err(|e| format!("{e}"))?;
        let doubled = ctx.schedule_activity("Double", input).await?;
        if n < 2 {
            return ctx.continue_as_new((n + 1).to_string()).await;
        }
        Ok(doubled)
    })
    .orchestration("Root", |ctx, _| async move {
        let a = ctx.schedule_sub_orchestration_with_id("Mid", "tree-a", "tree-a");
        let b = ctx.schedule_sub_orchestration_with_id("Wait", "tree-b", "");
        let (a, b) = ctx.join2(a, b).await;
        Ok(format!("{}+{}", a?, b?))
    })
    .orchestration("Mid", |ctx, id| async move {
        ctx.schedule_sub_orchestration_with_id("Wait", &format!("{id}-leaf"), "")
            .await
    });
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_instances_and_get_instance_info() {
    let env = Env::memory(&registry()).await;
    let client = &env.client;
    client.start_orchestration("m-done", "Done", "21").await.unwrap();
    client.start_orchestration("m-wait", "Wait", "").await.unwrap();
    client.start_orchestration("m-fail", "Fail", "").await.unwrap();
    assert_eq!(env.completed("m-done").await, "42");
    assert_eq!(env.failed("m-fail").await, "on purpose");
    recorded(client, "m-wait", "ExternalSubscribed").await;

    let mut all = client.list_all_instances().await.unwrap();
    all.sort();
    assert_eq!(all, ["m-done", "m-fail", "m-wait"]);
    assert_eq!(
        client.list_instances_by_status("Running").await.unwrap(),
        ["m-wait"]
    );
    assert_eq!(
        client.list_instances_by_status("Completed").await.unwrap(),
        ["m-done"]
    );
    assert_eq!(
        client.list_instances_by_status("Failed").await.unwrap(),
        ["m-fail"]
    );

    let info = client.get_instance_info("m-done").await.unwrap();
    assert_eq!(info.instance_id, "m-done");
    assert_eq!(info.name, "Done");
    assert_eq!(info.version.as_deref(), Some("1.0.0"));
    assert_eq!(info.status, InstanceStatus::Completed);
    assert_eq!(info.output.as_deref(), Some("42"));
    assert_eq!(info.current_execution_id, 1);
    assert_eq!(info.parent_instance_id, None);
    assert!(info.created_at_ms > 0, "{info:?}");
    assert!(info.updated_at_ms >= info.created_at_ms, "{info:?}");
    let failed = client.get_instance_info("m-fail").await.unwrap();
    assert_eq!(failed.status, InstanceStatus::Failed);
    assert_eq!(failed.output.as_deref(), Some("on purpose"));
    let running = client.get_instance_info("m-wait").await.unwrap();
    assert_eq!(running.status, InstanceStatus::Running);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_and_their_histories() {
    let env = Env::memory(&registry()).await;
    let client = &env.client;
    client.start_orchestration("m-loop", "Loop", "0").await.unwrap();
    assert_eq!(env.completed("m-loop").await, "4");
    assert_eq!(client.list_executions("m-loop").await.unwrap(), [1, 2, 3]);
    assert_eq!(
        client
            .get_instance_info("m-loop")
            .await
            .unwrap()
            .current_execution_id,
        3
    );
    for (execution, status, last) in [
        (1, ExecutionStatus::ContinuedAsNew, "OrchestrationContinuedAsNew"),
        (2, ExecutionStatus::ContinuedAsNew, "OrchestrationContinuedAsNew"),
        (3, ExecutionStatus::Completed, "OrchestrationCompleted"),
    ] {
        let info = client.get_execution_info("m-loop", execution).await.unwrap();
        let history = env.history("m-loop", execution).await;
        assert_eq!(info.execution_id, execution);
        assert_eq!(info.status, status);
        assert_eq!(info.event_count, history.len() as u64);
        assert!(info.started_at_ms > 0 && info.completed_at_ms >= Some(info.started_at_ms));
        assert_eq!(
            kinds(&history),
            [
                "OrchestrationStarted",
                "ActivityScheduled",
                "ActivityCompleted",
                last
            ]
        );
        let ids: Vec<u64> = history.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, [1, 2, 3, 4], "event ids are dense and 1-based");
    }
    assert_eq!(
        client
            .get_execution_info("m-loop", 3)
            .await
            .unwrap()
            .output
            .as_deref(),
        Some("4")
    );
    assert!(matches!(
        client.get_execution_info("m-loop", 9).await,
        Err(ClientError::NotFound(_))
    ));

    client.start_orchestration("m-done", "Done", "1").await.unwrap();
    env.completed("m-done").await;
    assert_eq!(
        kinds(&env.history("m-done", 1).await),
        [
            "OrchestrationStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "TimerCreated",
            "TimerFired",
            "OrchestrationCompleted"
        ]
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_tree_and_parent_links() {
    let env = Env::memory(&registry()).await;
    let client = &env.client;
    client.start_orchestration("tree", "Root", "").await.unwrap();
    for leaf in ["tree-b", "tree-a-leaf"] {
        recorded(client, leaf, "ExternalSubscribed").await;
    }
    let tree = client.get_instance_tree("tree").await.unwrap();
    assert_eq!(tree[0], "tree", "root first: {tree:?}");
    let mut rest = tree[1..].to_vec();
    rest.sort();
    assert_eq!(rest, ["tree-a", "tree-a-leaf", "tree-b"]);
    let mut subtree = client.get_instance_tree("tree-a").await.unwrap();
    subtree.sort();
    assert_eq!(subtree, ["tree-a", "tree-a-leaf"]);
    let parent =
        |id: &'static str| async move { client.get_instance_info(id).await.unwrap().parent_instance_id };
    assert_eq!(parent("tree-a").await.as_deref(), Some("tree"));
    assert_eq!(parent("tree-b").await.as_deref(), Some("tree"));
    assert_eq!(parent("tree-a-leaf").await.as_deref(), Some("tree-a"));

    for leaf in ["tree-b", "tree-a-leaf"] {
        client.raise_event(leaf, "go", leaf).await.unwrap();
    }
    assert_eq!(env.completed("tree").await, "tree-a-leaf+tree-b");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_instance_needs_force_while_running() {
    let env = Env::memory(&registry()).await;
    let client = &env.client;
    client.start_orchestration("del-tree", "Root", "").await.unwrap();
    for leaf in ["tree-b", "tree-a-leaf"] {
        recorded(client, leaf, "ExternalSubscribed").await;
    }
    assert!(matches!(
        client.delete_instance("del-tree", false).await,
        Err(ClientError::StillRunning(_))
    ));
    assert_eq!(
        client.get_status("del-tree").await.unwrap().status,
        Status::Running
    );
    let deleted = client.delete_instance("del-tree", true).await.unwrap();
    assert_eq!(deleted.instances_deleted, 4, "{deleted:?}");
    assert!(deleted.events_deleted > 0, "{deleted:?}");
    for id in ["del-tree", "tree-a", "tree-b", "tree-a-leaf"] {
        assert_eq!(
            client.get_status(id).await.unwrap().status,
            Status::NotFound,
            "{id}"
        );
    }

    client.start_orchestration("del-done", "Done", "1").await.unwrap();
    env.completed("del-done").await;
    let deleted = client.delete_instance("del-done", false).await.unwrap();
    assert_eq!(deleted.instances_deleted, 1);
    assert_eq!(deleted.executions_deleted, 1);
    assert!(client.list_all_instances().await.unwrap().is_empty());
    assert!(matches!(
        client.delete_instance("del-done", false).await,
        Err(ClientError::NotFound(_))
    ));
    // A deleted id can be used again.
    client.start_orchestration("del-done", "Done", "2").await.unwrap();
    assert_eq!(env.completed("del-done").await, "4");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_metrics_and_queue_depths() {
    let provider = common::memory();
    let client = Client::new(provider.clone());
    // Without a runtime, started instances are queued orchestrator messages.
    client.start_orchestration("q-done", "Done", "1").await.unwrap();
    client.start_orchestration("q-fail", "Fail", "").await.unwrap();
    client.start_orchestration("q-wait", "Wait", "").await.unwrap();
    let depths = client.get_queue_depths().await.unwrap();
    assert_eq!(depths.orchestrator_queue, 3, "{depths:?}");
    assert_eq!(depths.worker_queue, 0, "{depths:?}");
    let metrics = client.get_system_metrics().await.unwrap();
    assert_eq!(metrics.total_instances, 3, "{metrics:?}");

    let env = Env::start(provider, &registry(), common::options()).await;
    env.completed("q-done").await;
    env.failed("q-fail").await;
    recorded(client_ref(&env), "q-wait", "ExternalSubscribed").await;
    let metrics = client.get_system_metrics().await.unwrap();
    assert_eq!(metrics.total_instances, 3, "{metrics:?}");
    assert_eq!(metrics.completed_instances, 1, "{metrics:?}");
    assert_eq!(metrics.failed_instances, 1, "{metrics:?}");
    assert_eq!(metrics.running_instances, 1, "{metrics:?}");
    assert_eq!(metrics.total_executions, 3, "{metrics:?}");
    assert!(metrics.total_events > 0, "{metrics:?}");
    let depths = client.get_queue_depths().await.unwrap();
    assert_eq!(depths.orchestrator_queue, 0, "{depths:?}");
    assert_eq!(depths.worker_queue, 0, "{depths:?}");

    // A pending timer is counted apart from ready messages.
    env.runtime.shutdown(common::SHUTDOWN).await;
    let mut reg = Registries::new();
    reg.orchestration("Sleeps", |ctx, _| async move {
        ctx.schedule_timer(Duration::from_secs(60)).await;
        Ok(String::new())
    });
    let sleeper = Env::start(env.provider.clone(), &reg, common::options()).await;
    client.start_orchestration("q-sleep", "Sleeps", "").await.unwrap();
    recorded(&client, "q-sleep", "TimerCreated").await;
    let depths = client.get_queue_depths().await.unwrap();
    assert_eq!(depths.timer_queue, 1, "{depths:?}");
    sleeper.shutdown().await;
}

fn client_ref(env: &Env) -> &Client {
    &env.client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestration_stats_describe_one_instance() {
    let mut reg = Registries::new();
    reg.orchestration("Stats", |ctx, _| async move {
        ctx.set_kv_value("a", "1");
        ctx.set_kv_value("b", "22");
        ctx.set_kv_value("c", "333");
        Ok(ctx.wait_for_event("go").await)
    });
    let env = Env::memory(&reg).await;
    let client = &env.client;
    client.start_orchestration("stats-1", "Stats", "").await.unwrap();
    recorded(client, "stats-1", "ExternalSubscribed").await;
    let stats = client
        .get_orchestration_stats("stats-1")
        .await
        .unwrap()
        .expect("stats of a known instance");
    let history = env.history("stats-1", 1).await;
    assert_eq!(stats.history_event_count, history.len() as u64, "{stats:?}");
    assert!(stats.history_size_bytes > 0, "{stats:?}");
    assert_eq!(stats.kv_user_key_count, 3, "{stats:?}");
    assert_eq!(stats.kv_total_value_bytes, 6, "{stats:?}");
    assert_eq!(stats.queue_pending_count, 0, "{stats:?}");
    assert_eq!(client.get_orchestration_stats("nobody").await.unwrap(), None);
    env.shutdown().await;
}
