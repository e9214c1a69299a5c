//! Every orchestration pattern of the user guide, end to end on the runtime with SQLite.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{completed, failed, kinds, recorded, Env, Gate, Registries};
use duroxide_core::{Backoff, Either, EventKind};
use duroxide_runtime::{Client, RetryPolicy, Status};
use serde_json::{json, Value};
use tokio::time::Instant;

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("bad JSON {text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_hello_world() {
    let mut reg = Registries::new();
    reg.activity("SayHello", |_, name| async move { Ok(format!("Hello, {name}!")) })
        .orchestration("HelloWorkflow", |ctx, name| async move {
            ctx.schedule_activity("SayHello", name).await
        });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("hello-1", "HelloWorkflow", "World")
        .await
        .unwrap();
    assert_eq!(env.completed("hello-1").await, "Hello, World!");
    assert_eq!(
        kinds(&env.history("hello-1", 1).await),
        [
            "OrchestrationStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "OrchestrationCompleted"
        ]
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_steps_feed_each_other() {
    let mut reg = Registries::new();
    reg.activity(
        "Extract",
        |_, input| async move { Ok(format!("{input}+extracted")) },
    )
    .activity("Transform", |_, input| async move { Ok(input.to_uppercase()) })
    .activity("Load", |_, input| async move { Ok(format!("loaded[{input}]")) })
    .orchestration("Pipeline", |ctx, input| async move {
        let step1 = ctx.schedule_activity("Extract", input).await?;
        let step2 = ctx.schedule_activity("Transform", step1).await?;
        ctx.schedule_activity("Load", step2).await
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("pipeline-1", "Pipeline", "rows")
        .await
        .unwrap();
    assert_eq!(env.completed("pipeline-1").await, "loaded[ROWS+EXTRACTED]");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_fan_in_returns_results_in_input_order() {
    let mut reg = Registries::new();
    reg.activity("ProcessItem", |_, item| async move {
        // Later items finish first, so input order is not completion order.
        let n: u64 = item.parse().map_err(|e| format!("{e}"))?;
        tokio::time::sleep(Duration::from_millis(40 - 2 * n)).await;
        Ok((n * n).to_string())
    })
    .orchestration("FanOut", |ctx, input| async move {
        let items: Vec<String> = serde_json::from_str(&input).map_err(|e| e.to_string())?;
        let tasks = items
            .into_iter()
            .map(|item| ctx.schedule_activity("ProcessItem", item))
            .collect();
        let results: Vec<String> = ctx.join(tasks).await.into_iter().collect::<Result<_, _>>()?;
        Ok(results.join(","))
    });
    let env = Env::memory(&reg).await;
    let items: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    env.client
        .start_orchestration("fanout-1", "FanOut", &serde_json::to_string(&items).unwrap())
        .await
        .unwrap();
    let expected: Vec<String> = (0..20u64).map(|i| (i * i).to_string()).collect();
    assert_eq!(env.completed("fanout-1").await, expected.join(","));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_join_of_activity_timer_and_event() {
    let mut reg = Registries::new();
    reg.activity("Work", |_, input| async move { Ok(format!("worked on {input}")) })
        .orchestration("MixedAll", |ctx, input| async move {
            let work = ctx.schedule_activity("Work", input);
            let timer = ctx.schedule_timer(Duration::from_millis(150));
            let approval = ctx.wait_for_event("approval");
            let ((act, ()), data) = ctx.join2(ctx.join2(work, timer), approval).await;
            Ok(format!("{} / {data}", act?))
        });
    let env = Env::memory(&reg).await;
    let started = Instant::now();
    env.client
        .start_orchestration("mixed-1", "MixedAll", "doc")
        .await
        .unwrap();
    // Raised once the join waits, so the event completes the join rather than being buffered.
    recorded(&env.client, "mixed-1", "ExternalSubscribed").await;
    env.client
        .raise_event("mixed-1", "approval", "approved")
        .await
        .unwrap();
    assert_eq!(env.completed("mixed-1").await, "worked on doc / approved");
    // The join also waited for the timer.
    assert!(started.elapsed() >= Duration::from_millis(150));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_returns_the_winner_and_cancels_the_loser() {
    let loser_cancelled = Arc::new(AtomicBool::new(false));
    let mut reg = Registries::new();
    let flag = loser_cancelled.clone();
    reg.activity(
        "FastService",
        |_, input| async move { Ok(format!("fast {input}")) },
    )
    .activity("SlowService", move |ctx, _| {
        let flag = flag.clone();
        async move {
            // Waits for nothing but its cancellation, which only losing the race brings.
            tokio::select! {
                _ = ctx.cancelled() => flag.store(true, Ordering::SeqCst),
                _ = tokio::time::sleep(common::PATIENCE) => {}
            }
            Ok("slow".to_string())
        }
    })
    .orchestration("RaceExample", |ctx, input| async move {
        let (service, timeout) = match input.as_str() {
            "fast" => ("FastService", Duration::from_secs(30)),
            _ => ("SlowService", Duration::from_millis(100)),
        };
        let winner = ctx
            .select2(ctx.schedule_activity(service, input), ctx.schedule_timer(timeout))
            .await;
        match winner {
            Either::Left(value) => value,
            Either::Right(()) => Ok("timed out".to_string()),
        }
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("race-fast", "RaceExample", "fast")
        .await
        .unwrap();
    env.client
        .start_orchestration("race-slow", "RaceExample", "slow")
        .await
        .unwrap();
    // The 30 s timer lost: the instance completes long before it would fire.
    assert_eq!(env.completed("race-fast").await, "fast fast");
    assert_eq!(env.completed("race-slow").await, "timed out");
    common::eventually("the losing activity sees its cancellation", || async {
        loser_cancelled.load(Ordering::SeqCst)
    })
    .await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_timer_delays_the_next_step() {
    let mut reg = Registries::new();
    reg.activity("SendReminder", |_, input| async move {
        Ok(format!("reminded {input}"))
    })
    .orchestration("DelayedNotification", |ctx, input| async move {
        ctx.schedule_timer(Duration::from_millis(300)).await;
        ctx.schedule_activity("SendReminder", input).await?;
        Ok("done".to_string())
    });
    let env = Env::memory(&reg).await;
    let started = Instant::now();
    env.client
        .start_orchestration("timer-1", "DelayedNotification", "bob")
        .await
        .unwrap();
    assert_eq!(env.completed("timer-1").await, "done");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let history = env.history("timer-1", 1).await;
    let created = history.iter().find_map(|e| match e.kind {
        EventKind::TimerCreated { fire_at_ms } => Some((e.timestamp_ms, fire_at_ms)),
        _ => None,
    });
    let (created_at, fire_at) = created.expect("a TimerCreated event");
    assert_eq!(fire_at, created_at + 300);
    let fired = history
        .iter()
        .find(|e| matches!(e.kind, EventKind::TimerFired { .. }))
        .expect("a TimerFired event");
    assert!(fired.timestamp_ms >= fire_at, "fired before due: {history:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_event_approves_or_rejects() {
    let executed = Arc::new(AtomicU32::new(0));
    let mut reg = Registries::new();
    let count = executed.clone();
    reg.activity(
        "RequestApproval",
        |_, _| async move { Ok("requested".to_string()) },
    )
    .activity("Execute", move |_, _| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok("executed".to_string())
        }
    })
    .orchestration("ApprovalWorkflow", |ctx, input| async move {
        ctx.schedule_activity("RequestApproval", input.clone()).await?;
        ctx.trace_info("waiting for approval...");
        let approval = parse(&ctx.wait_for_event("approval").await)?;
        if approval["approved"] == json!(true) {
            ctx.schedule_activity("Execute", input).await?;
            Ok("approved".to_string())
        } else {
            Ok("rejected".to_string())
        }
    });
    let env = Env::memory(&reg).await;
    for (id, approved) in [("approval-yes", true), ("approval-no", false)] {
        env.client
            .start_orchestration(id, "ApprovalWorkflow", "deploy")
            .await
            .unwrap();
        recorded(&env.client, id, "ExternalSubscribed").await;
        let data = json!({ "approved": approved }).to_string();
        env.client.raise_event(id, "approval", &data).await.unwrap();
    }
    assert_eq!(env.completed("approval-yes").await, "approved");
    assert_eq!(env.completed("approval-no").await, "rejected");
    assert_eq!(executed.load(Ordering::SeqCst), 1);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_event_raised_while_busy_is_delivered_to_a_later_wait() {
    let gate = Gate::new();
    let mut reg = Registries::new();
    let hold = gate.clone();
    reg.activity("Hold", move |_, _| {
        let hold = hold.clone();
        async move {
            hold.wait().await;
            Ok("held".to_string())
        }
    })
    .orchestration("Early", |ctx, _| async move {
        ctx.schedule_activity("Hold", "").await?;
        Ok(ctx.wait_for_event("signal").await)
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("early-1", "Early", "")
        .await
        .unwrap();
    env.client
        .raise_event("early-1", "signal", "sent early")
        .await
        .unwrap();
    // The event's own turn records it while the code is still inside the activity...
    recorded(&env.client, "early-1", "ExternalEventReceived").await;
    gate.open();
    // ...and the wait issued afterwards receives it.
    assert_eq!(env.completed("early-1").await, "sent early");
    let history = kinds(&env.history("early-1", 1).await);
    let received = history.iter().position(|k| *k == "ExternalEventReceived");
    let subscribed = history.iter().position(|k| *k == "ExternalSubscribed");
    assert!(
        received < subscribed,
        "event should precede the wait: {history:?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_raised_before_the_runtime_starts_are_delivered_in_order() {
    let mut reg = Registries::new();
    reg.orchestration("ThreeSignals", |ctx, _| async move {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(ctx.wait_for_event("signal").await);
        }
        Ok(seen.join(","))
    });
    let provider = common::memory();
    let client = Client::new(provider.clone());
    client
        .start_orchestration("early-2", "ThreeSignals", "")
        .await
        .unwrap();
    for data in ["a", "b", "c"] {
        client.raise_event("early-2", "signal", data).await.unwrap();
    }
    let env = Env::start(provider, &reg, common::options()).await;
    assert_eq!(env.completed("early-2").await, "a,b,c");
    env.shutdown().await;
}

fn child_registrations(reg: &mut Registries) {
    reg.activity("DoWork", |_, input| async move { Ok(format!("work({input})")) })
        .orchestration("Child", |ctx, input| async move {
            ctx.schedule_activity("DoWork", input).await
        });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_orchestration_with_generated_id() {
    let mut reg = Registries::new();
    child_registrations(&mut reg);
    reg.orchestration("Parent", |ctx, input| async move {
        let child_result = ctx.schedule_sub_orchestration("Child", input).await?;
        Ok(json!({ "parent_result": child_result }).to_string())
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("sub-1", "Parent", "x")
        .await
        .unwrap();
    let output = parse(&env.completed("sub-1").await).unwrap();
    assert_eq!(output["parent_result"], "work(x)");
    let tree = env.client.get_instance_tree("sub-1").await.unwrap();
    assert_eq!(tree.len(), 2, "{tree:?}");
    let child = &tree[1];
    assert!(child.starts_with("sub-1::sub::"), "{child}");
    let info = env.client.get_instance_info(child).await.unwrap();
    assert_eq!(info.parent_instance_id.as_deref(), Some("sub-1"));
    assert_eq!(info.name, "Child");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_orchestration_with_explicit_id() {
    let mut reg = Registries::new();
    child_registrations(&mut reg);
    reg.orchestration("Parent", |ctx, input| async move {
        let id = format!("child-{input}");
        ctx.schedule_sub_orchestration_with_id("Child", &id, input).await
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("sub-2", "Parent", "42")
        .await
        .unwrap();
    assert_eq!(env.completed("sub-2").await, "work(42)");
    assert_eq!(env.completed("child-42").await, "work(42)");
    let info = env.client.get_instance_info("child-42").await.unwrap();
    assert_eq!(info.parent_instance_id.as_deref(), Some("sub-2"));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_start_runs_independently() {
    let mut reg = Registries::new();
    reg.activity("ProvisionVM", |_, id| async move { Ok(format!("vm-{id}")) })
        .orchestration("CreateInstance", |ctx, id| async move {
            ctx.schedule_activity("ProvisionVM", id.clone()).await?;
            ctx.start_orchestration("InstanceMonitor", &format!("monitor-{id}"), id.clone());
            Ok(json!({ "status": "provisioned" }).to_string())
        })
        .orchestration("InstanceMonitor", |ctx, id| async move {
            let why = ctx.wait_for_event("stop").await;
            Ok(format!("monitored {id} until {why}"))
        });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("create-7", "CreateInstance", "7")
        .await
        .unwrap();
    let output = parse(&env.completed("create-7").await).unwrap();
    assert_eq!(output["status"], "provisioned");
    // The monitor outlives the orchestration that started it.
    recorded(&env.client, "monitor-7", "ExternalSubscribed").await;
    let info = env.client.get_instance_info("monitor-7").await.unwrap();
    assert_eq!(info.parent_instance_id, None, "a detached start has no parent");
    env.client
        .raise_event("monitor-7", "stop", "decommissioned")
        .await
        .unwrap();
    assert_eq!(
        env.completed("monitor-7").await,
        "monitored 7 until decommissioned"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_handling_runs_cleanup_after_a_failed_activity() {
    let cleanups = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut reg = Registries::new();
    let seen = cleanups.clone();
    reg.activity("RiskyCall", |_, _| async move {
        Err("service unavailable".to_string())
    })
    .activity("Cleanup", move |_, input| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(input);
            Ok("cleaned".to_string())
        }
    })
    .orchestration("SafeWorkflow", |ctx, input| async move {
        match ctx.schedule_activity("RiskyCall", input).await {
            Ok(result) => Ok(result),
            Err(e) => {
                ctx.trace_error(format!("activity failed: {e}"));
                ctx.schedule_activity("Cleanup", json!({ "error": e }).to_string())
                    .await?;
                Ok(json!({ "status": "failed", "error": e }).to_string())
            }
        }
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("safe-1", "SafeWorkflow", "{}")
        .await
        .unwrap();
    let output = parse(&env.completed("safe-1").await).unwrap();
    assert_eq!(
        output,
        json!({ "status": "failed", "error": "service unavailable" })
    );
    assert_eq!(
        *cleanups.lock().unwrap(),
        [json!({ "error": "service unavailable" }).to_string()]
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policy_retries_a_flaky_activity() {
    let calls = Arc::new(AtomicU32::new(0));
    let mut reg = Registries::new();
    let counter = calls.clone();
    reg.activity("FlakeyApi", move |_, _| {
        let counter = counter.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                Err(format!("attempt {n} failed"))
            } else {
                Ok(format!("ok on attempt {n}"))
            }
        }
    })
    .activity(
        "AlwaysFails",
        |_, _| async move { Err("still broken".to_string()) },
    )
    .orchestration("Retrying", |ctx, name| async move {
        let policy = RetryPolicy::new(3)
            .with_backoff(Backoff::Exponential {
                base: Duration::from_millis(20),
                multiplier: 2,
                max: Duration::from_secs(1),
            })
            .with_timeout(Duration::from_secs(5))
            .with_total_timeout(Duration::from_secs(30));
        ctx.schedule_activity_with_retry(&name, "", &policy).await
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("retry-ok", "Retrying", "FlakeyApi")
        .await
        .unwrap();
    assert_eq!(env.completed("retry-ok").await, "ok on attempt 3");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let history = kinds(&env.history("retry-ok", 1).await);
    let count = |kind: &str| history.iter().filter(|k| **k == kind).count();
    assert_eq!(count("ActivityScheduled"), 3, "{history:?}");
    assert_eq!(count("ActivityFailed"), 2, "{history:?}");

    env.client
        .start_orchestration("retry-exhausted", "Retrying", "AlwaysFails")
        .await
        .unwrap();
    assert_eq!(env.failed("retry-exhausted").await, "still broken");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policy_times_out_a_hanging_attempt() {
    let mut reg = Registries::new();
    reg.activity("Hang", |ctx, _| async move {
        ctx.cancelled().await;
        Ok("gave up".to_string())
    })
    .orchestration("RetryTimeout", |ctx, _| async move {
        let policy = RetryPolicy::new(2)
            .with_backoff(Backoff::None)
            .with_timeout(Duration::from_millis(100));
        match ctx.schedule_activity_with_retry("Hang", "", &policy).await {
            Ok(v) => Err(format!("unexpected success {v}")),
            Err(e) => Ok(e),
        }
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("retry-timeout", "RetryTimeout", "")
        .await
        .unwrap();
    assert_eq!(
        env.completed("retry-timeout").await,
        "activity Hang timed out after 100 ms"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_status_reports_progress() {
    let gate = Gate::new();
    let mut reg = Registries::new();
    let hold = gate.clone();
    reg.activity("ValidateConfig", |_, _| async move { Ok("valid".to_string()) })
        .activity("CreateVM", move |_, _| {
            let hold = hold.clone();
            async move {
                hold.wait().await;
                Ok(json!({ "id": "vm-1" }).to_string())
            }
        })
        .activity(
            "InstallSoftware",
            |_, _| async move { Ok("installed".to_string()) },
        )
        .orchestration("ProvisionServer", |ctx, input| async move {
            ctx.set_custom_status("validating configuration");
            ctx.schedule_activity("ValidateConfig", input.clone()).await?;
            ctx.set_custom_status("creating VM");
            let vm = ctx.schedule_activity("CreateVM", input).await?;
            ctx.set_custom_status("installing software");
            ctx.schedule_activity("InstallSoftware", vm.clone()).await?;
            ctx.reset_custom_status();
            Ok(json!({ "vm_id": parse(&vm)?["id"] }).to_string())
        });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("prov-1", "ProvisionServer", "{}")
        .await
        .unwrap();
    // The guide's polling loop: each answer has a higher version than the last one seen.
    let mut last_version = 0;
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("creating VM") {
        let state = env
            .client
            .wait_for_status_change(
                "prov-1",
                last_version,
                Duration::from_millis(50),
                common::PATIENCE,
            )
            .await
            .unwrap()
            .expect("a status change");
        assert!(state.custom_status_version > last_version);
        last_version = state.custom_status_version;
        seen.push(state.custom_status.clone().unwrap_or_default());
        assert_eq!(state.status, Status::Running, "held in CreateVM: {state:?}");
    }
    // Nothing changes while CreateVM is held: the wait ends with `None` at its timeout.
    let unchanged = env
        .client
        .wait_for_status_change(
            "prov-1",
            last_version,
            Duration::from_millis(10),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    assert_eq!(unchanged, None);
    gate.open();
    let output = parse(&env.completed("prov-1").await).unwrap();
    assert_eq!(output["vm_id"], "vm-1");
    let state = env.client.get_status("prov-1").await.unwrap();
    assert_eq!(state.custom_status, None, "reset when done");
    assert!(state.custom_status_version > last_version);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_store_is_readable_by_clients_and_other_instances() {
    let mut reg = Registries::new();
    reg.orchestration("RequestServer", |ctx, _| async move {
        ctx.set_kv_value("status", "ready");
        let request = parse(&ctx.wait_for_event("request").await)?;
        let command = request["command"].as_str().unwrap_or_default();
        let response: String = command.chars().rev().collect();
        ctx.set_kv_value(
            &format!("response:{}", request["op_id"].as_str().unwrap_or_default()),
            response,
        );
        ctx.set_kv_value("scratch", "temporary");
        ctx.clear_kv_value("scratch");
        let keys = ctx.get_kv_all_keys();
        Ok(format!(
            "done with {} keys: {}",
            ctx.get_kv_length(),
            keys.join(",")
        ))
    })
    .orchestration("KvReader", |ctx, input| async move {
        let found = ctx.get_kv_value_from_instance(&input, "response:op-1").await?;
        let missing = ctx.get_kv_value_from_instance(&input, "nope").await?;
        Ok(format!("{found:?} {missing:?}"))
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("server-1", "RequestServer", "")
        .await
        .unwrap();
    let status = env
        .client
        .wait_for_kv_value("server-1", "status", common::PATIENCE)
        .await
        .unwrap();
    assert_eq!(status, "ready");
    let request = json!({ "op_id": "op-1", "command": "olleh" }).to_string();
    env.client
        .raise_event("server-1", "request", &request)
        .await
        .unwrap();
    assert_eq!(
        env.completed("server-1").await,
        "done with 2 keys: response:op-1,status"
    );
    assert_eq!(
        env.client
            .get_kv_value("server-1", "response:op-1")
            .await
            .unwrap()
            .as_deref(),
        Some("hello")
    );
    assert_eq!(
        env.client.get_kv_value("server-1", "scratch").await.unwrap(),
        None
    );

    env.client
        .start_orchestration("reader-1", "KvReader", "server-1")
        .await
        .unwrap();
    assert_eq!(env.completed("reader-1").await, r#"Some("hello") None"#);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_queues_are_fifo_and_independent() {
    let mut reg = Registries::new();
    reg.activity("ProcessRequest", |_, request| async move {
        let request = parse(&request)?;
        Ok(format!("processed {}", request["data"]["id"]))
    })
    .orchestration("RequestProcessor", |ctx, _| async move {
        let mut results = Vec::new();
        for _ in 0..3 {
            let request = ctx.dequeue_event("requests").await;
            results.push(ctx.schedule_activity("ProcessRequest", request).await?);
        }
        Ok(results.join(","))
    })
    .orchestration("MultiQueue", |ctx, _| async move {
        let command = ctx.dequeue_event("commands").await;
        let config = ctx.dequeue_event("config").await;
        Ok(json!({ "command": command, "config": config }).to_string())
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("proc-1", "RequestProcessor", "")
        .await
        .unwrap();
    for id in [1, 2, 3] {
        let message = json!({ "action": "process", "data": { "id": id } }).to_string();
        env.client
            .enqueue_event("proc-1", "requests", &message)
            .await
            .unwrap();
    }
    assert_eq!(
        env.completed("proc-1").await,
        "processed 1,processed 2,processed 3"
    );

    env.client
        .start_orchestration("multi-1", "MultiQueue", "")
        .await
        .unwrap();
    // Config arrives first, but the code reads commands first: each queue is its own FIFO.
    env.client
        .enqueue_event("multi-1", "config", "verbose")
        .await
        .unwrap();
    env.client
        .enqueue_event("multi-1", "commands", "restart")
        .await
        .unwrap();
    let output = parse(&env.completed("multi-1").await).unwrap();
    assert_eq!(output, json!({ "command": "restart", "config": "verbose" }));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioning_new_instances_use_latest_and_explicit_versions_pin() {
    let mut reg = Registries::new();
    reg.activity("Work", |_, input| async move { Ok(format!("work({input})")) })
        .activity("Validate", |_, _| async move { Ok("valid".to_string()) })
        .orchestration("MyWorkflow", |ctx, input| async move {
            let r = ctx.schedule_activity("Work", input).await?;
            Ok(format!("v1.0.0 {r}"))
        })
        .orchestration_versioned("MyWorkflow", "1.0.1", |ctx, input| async move {
            ctx.schedule_activity("Validate", input.clone()).await?;
            let r = ctx.schedule_activity("Work", input).await?;
            Ok(format!("v1.0.1 {r}"))
        });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("ver-latest", "MyWorkflow", "a")
        .await
        .unwrap();
    env.client
        .start_orchestration_versioned("ver-pinned", "MyWorkflow", "b", "1.0.0")
        .await
        .unwrap();
    assert_eq!(env.completed("ver-latest").await, "v1.0.1 work(a)");
    assert_eq!(env.completed("ver-pinned").await, "v1.0.0 work(b)");
    let latest = env.client.get_instance_info("ver-latest").await.unwrap();
    assert_eq!(latest.version.as_deref(), Some("1.0.1"));
    let pinned = env.client.get_instance_info("ver-pinned").await.unwrap();
    assert_eq!(pinned.version.as_deref(), Some("1.0.0"));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioning_running_instance_stays_pinned_until_continue_as_new() {
    // v1 waits for an event, then continues as new; v2 only exists on the second runtime.
    let v1 = |ctx: duroxide_runtime::OrchestrationContext, _input: String| async move {
        let _ = ctx.wait_for_event("go").await;
        ctx.continue_as_new("from v1").await
    };
    let mut old = Registries::new();
    old.orchestration("Upgradable", v1);
    let mut new = old.clone();
    new.orchestration_versioned("Upgradable", "2.0.0", |_, input| async move {
        Ok(format!("v2 got {input}"))
    });

    let provider = common::memory();
    let first = Env::start(provider.clone(), &old, common::options()).await;
    first
        .client
        .start_orchestration("upgrade-1", "Upgradable", "")
        .await
        .unwrap();
    recorded(&first.client, "upgrade-1", "ExternalSubscribed").await;
    first.shutdown().await;

    // The new runtime has no cached state: it replays execution 1 with the version it started on.
    let second = Env::start(provider, &new, common::options()).await;
    second.client.raise_event("upgrade-1", "go", "").await.unwrap();
    assert_eq!(second.completed("upgrade-1").await, "v2 got from v1");
    let version_of = |events: &[duroxide_core::Event]| match &events[0].kind {
        EventKind::OrchestrationStarted { version, .. } => version.clone(),
        other => panic!("history starts with {other:?}"),
    };
    assert_eq!(version_of(&second.history("upgrade-1", 1).await), "1.0.0");
    assert_eq!(version_of(&second.history("upgrade-1", 2).await), "2.0.0");
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utc_now_and_new_guid_are_recorded_and_replayed() {
    let mut reg = Registries::new();
    reg.orchestration("Clock", |ctx, _| async move {
        let before = ctx.utc_now();
        let guid = ctx.new_guid();
        let _ = ctx.wait_for_event("continue").await;
        let after = ctx.utc_now();
        let guid2 = ctx.new_guid();
        Ok(json!({ "before": before, "after": after, "guid": guid, "guid2": guid2 }).to_string())
    });
    let provider = common::memory();
    let first = Env::start(provider.clone(), &reg, common::options()).await;
    let wall_before = common::epoch_ms();
    first
        .client
        .start_orchestration("clock-1", "Clock", "")
        .await
        .unwrap();
    recorded(&first.client, "clock-1", "ExternalSubscribed").await;
    first.shutdown().await;

    // A fresh runtime replays the first half: it must read back the recorded time and guid.
    let second = Env::start(provider, &reg, common::options()).await;
    second
        .client
        .raise_event("clock-1", "continue", "")
        .await
        .unwrap();
    let output = parse(&second.completed("clock-1").await).unwrap();
    let history = second.history("clock-1", 1).await;
    let times: Vec<u64> = history
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::UtcNowRecorded { now_ms } => Some(now_ms),
            _ => None,
        })
        .collect();
    let guids: Vec<String> = history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::GuidRecorded { guid } => Some(guid.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        times,
        [
            output["before"].as_u64().unwrap(),
            output["after"].as_u64().unwrap()
        ]
    );
    assert_eq!(
        guids,
        [
            output["guid"].as_str().unwrap(),
            output["guid2"].as_str().unwrap()
        ]
    );
    assert!(times[0] >= wall_before && times[1] >= times[0], "{times:?}");
    assert_ne!(guids[0], guids[1]);
    for guid in &guids {
        let v4 = guid.len() == 36 && guid.as_bytes()[14] == b'4' && guid.split('-').count() == 5;
        assert!(v4, "not a v4 uuid: {guid}");
    }
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_step_blocks_as_sub_orchestrations_and_async_blocks() {
    let mut reg = Registries::new();
    reg.activity("Step", |_, input| async move { Ok(format!("step {input}")) })
        .orchestration("BlockA", |ctx, _| async move {
            let first = ctx.schedule_activity("Step", "A1").await?;
            if first.contains("step") {
                let second = ctx.schedule_activity("Step", "A2").await?;
                return Ok(format!("A:[{first},{second}]"));
            }
            Ok("A:fallback".to_string())
        })
        .orchestration("BlockB", |ctx, _| async move {
            ctx.schedule_timer(Duration::from_millis(5)).await;
            let result = ctx.schedule_activity("Step", "B1").await?;
            Ok(format!("B:[timer,{result}]"))
        })
        .orchestration("Parent", |ctx, _| async move {
            let blocks = vec![
                ctx.schedule_sub_orchestration("BlockA", ""),
                ctx.schedule_sub_orchestration("BlockB", ""),
            ];
            let results: Vec<String> = ctx.join(blocks).await.into_iter().collect::<Result<_, _>>()?;
            // The same blocks written inline: Rust joins arbitrary async blocks directly.
            let a = async {
                let first = ctx.schedule_activity("Step", "A1").await?;
                let second = ctx.schedule_activity("Step", "A2").await?;
                Ok::<_, String>(format!("A:[{first},{second}]"))
            };
            let b = async {
                ctx.schedule_timer(Duration::from_millis(5)).await;
                let result = ctx.schedule_activity("Step", "B1").await?;
                Ok::<_, String>(format!("B:[timer,{result}]"))
            };
            let (a, b) = ctx.join2(a, b).await;
            Ok(format!("{} | {},{}", results.join(","), a?, b?))
        });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("blocks-1", "Parent", "")
        .await
        .unwrap();
    let blocks = "A:[step A1,step A2],B:[timer,step B1]";
    assert_eq!(env.completed("blocks-1").await, format!("{blocks} | {blocks}"));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_with_client_access_starts_an_orchestration() {
    let mut reg = Registries::new();
    reg.activity("TriggerCleanup", |ctx, id| async move {
        let client = ctx.get_client();
        let input = json!({ "resource_id": id }).to_string();
        client
            .start_orchestration(&format!("cleanup-{id}"), "CleanupWorkflow", &input)
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!({ "triggered": true }).to_string())
    })
    .orchestration("Trigger", |ctx, id| async move {
        ctx.schedule_activity("TriggerCleanup", id).await
    })
    .orchestration("CleanupWorkflow", |_, input| async move {
        Ok(format!("cleaned {}", parse(&input)?["resource_id"]))
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("trigger-1", "Trigger", "r9")
        .await
        .unwrap();
    assert_eq!(env.completed("trigger-1").await, r#"{"triggered":true}"#);
    assert_eq!(env.completed("cleanup-r9").await, r#"cleaned "r9""#);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_context_describes_the_call() {
    let seen = Arc::new(Mutex::new(HashMap::<String, String>::new()));
    let mut reg = Registries::new();
    let record = seen.clone();
    reg.activity("Describe", move |ctx, _| {
        let record = record.clone();
        async move {
            let mut map = record.lock().unwrap();
            map.insert("instance".into(), ctx.instance_id().to_string());
            map.insert("execution".into(), ctx.execution_id().to_string());
            map.insert("orchestration".into(), ctx.orchestration_name().to_string());
            map.insert("version".into(), ctx.orchestration_version().to_string());
            map.insert("name".into(), ctx.activity_name().to_string());
            map.insert("id".into(), ctx.activity_id().to_string());
            map.insert("attempt".into(), ctx.attempt().to_string());
            map.insert("session".into(), format!("{:?}", ctx.session_id()));
            Ok("described".to_string())
        }
    })
    .orchestration("Describer", |ctx, _| async move {
        ctx.schedule_activity("Describe", "").await
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("describe-1", "Describer", "")
        .await
        .unwrap();
    assert_eq!(env.completed("describe-1").await, "described");
    let map = seen.lock().unwrap().clone();
    let get = |k: &str| map.get(k).cloned().unwrap_or_default();
    assert_eq!(get("instance"), "describe-1");
    assert_eq!(get("execution"), "1");
    assert_eq!(get("orchestration"), "Describer");
    assert_eq!(get("version"), "1.0.0");
    assert_eq!(get("name"), "Describe");
    assert_eq!(get("id"), "2", "scheduled right after OrchestrationStarted");
    assert_eq!(get("attempt"), "1");
    assert_eq!(get("session"), "None", "a regular activity has no session");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_activity_error_reaches_the_orchestration_await() {
    let mut reg = Registries::new();
    reg.activity("ValidateInput", |_, input| async move {
        let input = parse(&input)?;
        if input.get("email").is_none() {
            return Err("email is required".to_string());
        }
        Ok(json!({ "valid": true }).to_string())
    })
    .orchestration("Signup", |ctx, input| async move {
        let result = ctx.schedule_activity("ValidateInput", input).await;
        result.map_err(|e| format!("validation failed: {e}"))
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("signup-bad", "Signup", "{}")
        .await
        .unwrap();
    env.client
        .start_orchestration("signup-ok", "Signup", r#"{"email":"a@b"}"#)
        .await
        .unwrap();
    assert_eq!(
        failed(&env.client, "signup-bad").await,
        "validation failed: email is required"
    );
    assert_eq!(completed(&env.client, "signup-ok").await, r#"{"valid":true}"#);
    env.shutdown().await;
}
