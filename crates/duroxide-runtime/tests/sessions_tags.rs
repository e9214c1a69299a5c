//! Activity routing: sessions pin activities to one runtime's worker, tags send them only to
//! runtimes whose tag filter accepts them. Two runtimes share one provider in these tests.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, Registries};
use duroxide_runtime::{Client, RetryPolicy, Runtime, RuntimeOptions, Status, TagFilter};
use serde_json::{json, Value};

fn node(name: &str) -> RuntimeOptions {
    RuntimeOptions {
        worker_node_id: Some(name.to_string()),
        ..common::options()
    }
}

/// `Accumulate` keeps per-session state in the memory of the runtime that runs it (each runtime
/// gets its own map), so results only accumulate if every call of a session lands on one runtime.
fn session_registry() -> Registries {
    let state = Arc::new(Mutex::new(HashMap::<String, Vec<String>>::new()));
    let mut reg = Registries::new();
    reg.activity("Accumulate", move |ctx, input| {
        let state = state.clone();
        async move {
            let sid = ctx.session_id().ok_or("no session")?.to_string();
            let mut state = state.lock().unwrap();
            let items = state.entry(sid.clone()).or_default();
            items.push(input);
            Ok(json!({ "items": items, "session": sid, "worker": ctx.worker_id() }).to_string())
        }
    })
    .activity("WhoAmI", |ctx, _| async move {
        Ok(json!({ "session": ctx.session_id(), "worker": ctx.worker_id() }).to_string())
    })
    .orchestration("BatchProcess", |ctx, input| async move {
        let input: Value = serde_json::from_str(&input).map_err(|e| e.to_string())?;
        let session = format!("batch-{}", input["batch_id"].as_str().unwrap_or_default());
        let mut result = String::new();
        for item in input["items"].as_array().cloned().unwrap_or_default() {
            let item = item.as_str().unwrap_or_default().to_string();
            result = ctx
                .schedule_activity_on_session("Accumulate", item, &session)
                .await?;
        }
        // Parallel calls on the session, and a regular call for contrast.
        let parallel = (0..4)
            .map(|_| ctx.schedule_activity_on_session("WhoAmI", "", &session))
            .collect();
        let parallel: Vec<String> = ctx.join(parallel).await.into_iter().collect::<Result<_, _>>()?;
        let plain = ctx.schedule_activity("WhoAmI", "").await?;
        Ok(json!({ "last": result, "parallel": parallel, "plain": plain }).to_string())
    });
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_activities_run_on_one_worker_and_see_their_session() {
    let provider = common::memory();
    let a = common::runtime(&provider, &session_registry(), node("node-a")).await;
    let b = common::runtime(&provider, &session_registry(), node("node-b")).await;
    let client = Client::new(provider.clone());
    let items = ["a", "b", "c", "d", "e", "f"];
    for batch in ["001", "002", "003", "004"] {
        let input = json!({ "batch_id": batch, "items": items }).to_string();
        client
            .start_orchestration(&format!("batch-{batch}"), "BatchProcess", &input)
            .await
            .unwrap();
    }
    for batch in ["001", "002", "003", "004"] {
        let output = common::completed(&client, &format!("batch-{batch}")).await;
        let output: Value = serde_json::from_str(&output).unwrap();
        let last: Value = serde_json::from_str(output["last"].as_str().unwrap()).unwrap();
        let session = format!("batch-{batch}");
        // All six calls accumulated in one runtime's memory, in order.
        assert_eq!(last["items"], json!(items), "{batch}: {last}");
        assert_eq!(last["session"], session);
        let worker = last["worker"].clone();
        for call in output["parallel"].as_array().unwrap() {
            let call: Value = serde_json::from_str(call.as_str().unwrap()).unwrap();
            assert_eq!(call["session"], session);
            assert_eq!(call["worker"], worker, "{batch}: session moved between workers");
        }
        let plain: Value = serde_json::from_str(output["plain"].as_str().unwrap()).unwrap();
        assert_eq!(plain["session"], Value::Null, "a regular activity has no session");
    }
    a.shutdown(common::SHUTDOWN).await;
    b.shutdown(common::SHUTDOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_session_keeps_every_attempt_on_the_session() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(Mutex::new(Vec::<(Option<String>, String)>::new()));
    let mut reg = Registries::new();
    let (count, record) = (calls.clone(), seen.clone());
    reg.activity("FlakeyGpuTask", move |ctx, _| {
        let (count, record) = (count.clone(), record.clone());
        async move {
            let session = ctx.session_id().map(str::to_string);
            record
                .lock()
                .unwrap()
                .push((session, ctx.worker_id().to_string()));
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                return Err(format!("gpu busy ({n})"));
            }
            Ok(format!("rendered on attempt {n}"))
        }
    })
    .orchestration("RetrySessionWorkflow", |ctx, input| async move {
        let policy = RetryPolicy::new(3).with_backoff(duroxide_core::Backoff::None);
        ctx.schedule_activity_with_retry_on_session("FlakeyGpuTask", input, &policy, "gpu-session-1")
            .await
    });
    let provider = common::memory();
    let a = common::runtime(&provider, &reg, node("node-a")).await;
    let b = common::runtime(&provider, &reg, node("node-b")).await;
    let client = Client::new(provider.clone());
    client
        .start_orchestration("retry-session", "RetrySessionWorkflow", "")
        .await
        .unwrap();
    assert_eq!(
        common::completed(&client, "retry-session").await,
        "rendered on attempt 3"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|(s, w)| s.as_deref() == Some("gpu-session-1") && *w == seen[0].1),
        "{seen:?}"
    );
    a.shutdown(common::SHUTDOWN).await;
    b.shutdown(common::SHUTDOWN).await;
}

fn tagged_registry() -> Registries {
    // Both runtimes register both activities: only the tag filter decides where each runs.
    let mut reg = Registries::new();
    reg.activity("Render", |ctx, _| async move {
        Ok(format!("{} on {}", ctx.tag().unwrap_or("-"), ctx.worker_id()))
    })
    .activity("Plain", |ctx, _| async move {
        Ok(format!("{} on {}", ctx.tag().unwrap_or("-"), ctx.worker_id()))
    })
    .orchestration("Tagged", |ctx, _| async move {
        let plain = ctx.schedule_activity("Plain", "").await?;
        let render = ctx.schedule_activity_with_tag("Render", "", "gpu").await?;
        Ok(format!("{plain} | {render}"))
    });
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_activity_runs_only_where_the_tag_filter_accepts_it() {
    let provider = common::memory();
    let reg = tagged_registry();
    let general = Env::start(provider.clone(), &reg, node("general")).await;
    general
        .client
        .start_orchestration("tagged-1", "Tagged", "")
        .await
        .unwrap();
    // The untagged step runs; the tagged one waits, as no runtime accepts "gpu" yet.
    common::eventually("the tagged activity is queued", || async {
        general.client.get_queue_depths().await.unwrap().worker_queue == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        general.client.get_status("tagged-1").await.unwrap().status,
        Status::Running,
        "a runtime with the default filter ran a gpu activity"
    );
    assert_eq!(general.client.get_queue_depths().await.unwrap().worker_queue, 1);

    // A GPU worker that runs no orchestrations takes it.
    let gpu = Runtime::start(
        provider.clone(),
        reg.activities.clone(),
        reg.orchestrations.clone(),
        RuntimeOptions {
            orchestration_concurrency: 0,
            worker_tag_filter: TagFilter::Tags(vec!["gpu".to_string()]),
            ..node("gpu-box")
        },
    )
    .await
    .unwrap();
    assert_eq!(
        general.completed("tagged-1").await,
        "- on general | gpu on gpu-box"
    );
    gpu.shutdown(common::SHUTDOWN).await;
    general.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_and_and_any_filters_take_tagged_and_untagged_work() {
    for (name, filter) in [
        ("default-and", TagFilter::DefaultAnd(vec!["gpu".to_string()])),
        ("any", TagFilter::Any),
    ] {
        let reg = tagged_registry();
        let env = Env::start(
            common::memory(),
            &reg,
            RuntimeOptions {
                worker_tag_filter: filter,
                ..node(name)
            },
        )
        .await;
        env.client
            .start_orchestration("tagged-2", "Tagged", "")
            .await
            .unwrap();
        assert_eq!(
            env.completed("tagged-2").await,
            format!("- on {name} | gpu on {name}")
        );
        env.shutdown().await;
    }
}
