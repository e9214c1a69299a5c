//! Continue-as-new end to end: eternal loops, children that continue, and what carries over
//! (parent link, detached starts, queue messages, events, KV, custom status).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{kinds, recorded, Env, Registries};
use duroxide_core::provider::ExecutionStatus;
use duroxide_runtime::{Client, Status};
use serde_json::{json, Value};

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("bad JSON {text:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eternal_monitor_loops_with_a_counter() {
    let checks = Arc::new(AtomicU32::new(0));
    let mut reg = Registries::new();
    let count = checks.clone();
    reg.activity("CheckHealth", move |_, target| {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(json!({ "status": "healthy", "target": target }).to_string())
        }
    })
    .orchestration("Monitor", |ctx, input| async move {
        let input = parse(&input)?;
        let check_count = input["state"]["check_count"].as_u64().unwrap_or(0);
        let health = parse(
            &ctx.schedule_activity("CheckHealth", input["target"].to_string())
                .await?,
        )?;
        ctx.trace_info(format!("health check #{check_count}: {}", health["status"]));
        if check_count == 4 {
            return Ok(format!("{} checks", check_count + 1));
        }
        ctx.schedule_timer(Duration::from_millis(10)).await;
        let next = json!({ "target": input["target"], "state": { "check_count": check_count + 1 } });
        ctx.continue_as_new(next.to_string()).await
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("monitor-1", "Monitor", r#"{"target":"db"}"#)
        .await
        .unwrap();
    assert_eq!(env.completed("monitor-1").await, "5 checks");
    assert_eq!(checks.load(Ordering::SeqCst), 5);
    assert_eq!(
        env.client.list_executions("monitor-1").await.unwrap(),
        [1, 2, 3, 4, 5]
    );
    // Each execution has a fresh history that ends by handing over to the next one.
    for execution in 1..=4 {
        let history = kinds(&env.history("monitor-1", execution).await);
        assert_eq!(
            history.last(),
            Some(&"OrchestrationContinuedAsNew"),
            "{history:?}"
        );
        let info = env
            .client
            .get_execution_info("monitor-1", execution)
            .await
            .unwrap();
        assert_eq!(info.status, ExecutionStatus::ContinuedAsNew);
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_that_continues_as_new_still_reports_to_its_parent() {
    let mut reg = Registries::new();
    reg.activity("Tick", |_, n| async move { Ok(n) })
        .orchestration("CountingChild", |ctx, input| async move {
            let n: u32 = ctx
                .schedule_activity("Tick", input)
                .await?
                .parse()
                .map_err(|e| format!("{e}"))?;
            if n < 3 {
                return ctx.continue_as_new((n + 1).to_string()).await;
            }
            Ok(format!("child finished at {n}"))
        })
        .orchestration("WaitingParent", |ctx, _| async move {
            let generated = ctx.schedule_sub_orchestration("CountingChild", "0");
            let explicit = ctx.schedule_sub_orchestration_with_id("CountingChild", "can-child", "1");
            let (a, b) = ctx.join2(generated, explicit).await;
            Ok(format!("{} / {}", a?, b?))
        });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("can-parent", "WaitingParent", "")
        .await
        .unwrap();
    assert_eq!(
        env.completed("can-parent").await,
        "child finished at 3 / child finished at 3"
    );
    assert_eq!(env.client.list_executions("can-child").await.unwrap(), [1, 2, 3]);
    let info = env.client.get_instance_info("can-child").await.unwrap();
    assert_eq!(info.parent_instance_id.as_deref(), Some("can-parent"));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_start_in_the_same_turn_as_continue_as_new_is_sent() {
    let mut reg = Registries::new();
    reg.activity("Tick", |_, n| async move { Ok(n) })
        .orchestration("Spawner", |ctx, input| async move {
            let n: u32 = input.parse().map_err(|e| format!("{e}"))?;
            // Odd executions start, spawn and continue in their first turn; even ones do so in the
            // turn that applies an activity completion.
            if n % 2 == 0 {
                ctx.schedule_activity("Tick", input.clone()).await?;
            }
            ctx.start_orchestration("Spawned", &format!("spawned-{n}"), input.clone());
            if n < 3 {
                return ctx.continue_as_new((n + 1).to_string()).await;
            }
            Ok("spawned 4".to_string())
        })
        .orchestration(
            "Spawned",
            |_, input| async move { Ok(format!("spawned by {input}")) },
        );
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("spawner", "Spawner", "0")
        .await
        .unwrap();
    assert_eq!(env.completed("spawner").await, "spawned 4");
    for n in 0..4 {
        assert_eq!(
            env.completed(&format!("spawned-{n}")).await,
            format!("spawned by {n}")
        );
    }
    env.shutdown().await;
}

fn chat_bot(reg: &mut Registries) {
    reg.activity("Generate", |_, text| async move { Ok(format!("Echo: {text}")) })
        .orchestration("ChatBot", |ctx, _| async move {
            let msg = parse(&ctx.dequeue_event("inbox").await)?;
            let text = msg["text"].as_str().unwrap_or_default().to_string();
            let response = ctx.schedule_activity("Generate", text.clone()).await?;
            let status = json!({ "state": "replied", "response": response, "seq": msg["seq"] });
            ctx.set_custom_status(status.to_string());
            if text.to_lowercase().contains("bye") {
                return Ok(format!("Done after {} msgs", msg["seq"]));
            }
            // Messages that arrived meanwhile survive the restart of the history.
            ctx.continue_as_new("").await
        });
}

async fn say(client: &Client, seq: u32, text: &str) {
    let message = json!({ "seq": seq, "text": text }).to_string();
    client.enqueue_event("chat-1", "inbox", &message).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bot_processes_queued_messages_across_continue_as_new() {
    let mut reg = Registries::new();
    chat_bot(&mut reg);
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("chat-1", "ChatBot", "")
        .await
        .unwrap();
    say(&env.client, 1, "Hello!").await;
    let status = env
        .client
        .wait_for_status_change("chat-1", 0, Duration::from_millis(50), common::PATIENCE)
        .await
        .unwrap()
        .expect("a reply");
    let reply = parse(status.custom_status.as_deref().unwrap_or("null")).unwrap();
    assert_eq!(reply["response"], "Echo: Hello!");
    assert_eq!(reply["seq"], 1);

    // Two messages back to back: the second usually arrives before the first is answered.
    say(&env.client, 2, "How are you?").await;
    say(&env.client, 3, "Bye!").await;
    let mut last_version = status.custom_status_version;
    let mut seqs = vec![1];
    loop {
        let state = env
            .client
            .wait_for_status_change(
                "chat-1",
                last_version,
                Duration::from_millis(50),
                common::PATIENCE,
            )
            .await
            .unwrap()
            .expect("a reply or the end");
        if state.custom_status_version > last_version {
            let reply = parse(state.custom_status.as_deref().unwrap_or("null")).unwrap();
            seqs.push(reply["seq"].as_u64().unwrap() as u32);
            last_version = state.custom_status_version;
        }
        if state.status.is_terminal() {
            assert_eq!(state.status, Status::Completed, "{state:?}");
            assert_eq!(state.output.as_deref(), Some("Done after 3 msgs"));
            break;
        }
    }
    assert_eq!(seqs.last(), Some(&3), "replies seen: {seqs:?}");
    assert_eq!(env.client.list_executions("chat-1").await.unwrap(), [1, 2, 3]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_and_events_are_carried_to_the_next_execution() {
    let mut reg = Registries::new();
    chat_bot(&mut reg);
    reg.orchestration("EventLoop", |ctx, input| async move {
        let seen = format!("{input}{}", ctx.wait_for_event("tick").await);
        if seen.len() < 3 {
            return ctx.continue_as_new(seen).await;
        }
        Ok(seen)
    });
    let provider = common::memory();
    let client = Client::new(provider.clone());
    // Everything is queued before any runtime runs: one turn sees all of it, consumes one message
    // and must carry the rest over each continue-as-new.
    client.start_orchestration("chat-1", "ChatBot", "").await.unwrap();
    say(&client, 1, "one").await;
    say(&client, 2, "two").await;
    say(&client, 3, "bye").await;
    client
        .start_orchestration("events-1", "EventLoop", "")
        .await
        .unwrap();
    for data in ["a", "b", "c"] {
        client.raise_event("events-1", "tick", data).await.unwrap();
    }
    let env = Env::start(provider, &reg, common::options()).await;
    assert_eq!(env.completed("chat-1").await, "Done after 3 msgs");
    assert_eq!(env.completed("events-1").await, "abc");
    assert_eq!(env.client.list_executions("events-1").await.unwrap(), [1, 2, 3]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_custom_status_carry_over_continue_as_new() {
    let mut reg = Registries::new();
    reg.orchestration("Carrier", |ctx, input| async move {
        if input == "first" {
            ctx.set_kv_value("count", "1");
            ctx.set_kv_value("doomed", "x");
            ctx.clear_kv_value("doomed");
            ctx.set_custom_status("from execution 1");
            return ctx.continue_as_new("second").await;
        }
        let count = ctx.get_kv_value("count");
        let doomed = ctx.get_kv_value("doomed");
        let status = ctx.get_custom_status();
        ctx.set_kv_value("count", "2");
        Ok(format!("{count:?} {doomed:?} {status:?}"))
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("carrier-1", "Carrier", "first")
        .await
        .unwrap();
    assert_eq!(
        env.completed("carrier-1").await,
        r#"Some("1") None Some("from execution 1")"#
    );
    assert_eq!(
        env.client
            .get_kv_value("carrier-1", "count")
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );
    let state = env.client.get_status("carrier-1").await.unwrap();
    assert_eq!(state.custom_status.as_deref(), Some("from execution 1"));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_while_waiting_keeps_the_instance_running() {
    // An execution that continues while its activity is still running: the old execution's late
    // completion is discarded, not applied to the new one.
    let gate = common::Gate::new();
    let mut reg = Registries::new();
    let hold = gate.clone();
    reg.activity("Slow", move |_, _| {
        let hold = hold.clone();
        async move {
            hold.wait().await;
            Ok("late".to_string())
        }
    })
    .orchestration("Impatient", |ctx, input| async move {
        if input == "first" {
            let _pending = ctx.schedule_activity("Slow", "");
            let _ = ctx.wait_for_event("move on").await;
            return ctx.continue_as_new("second").await;
        }
        Ok(ctx.wait_for_event("finish").await)
    });
    let env = Env::memory(&reg).await;
    env.client
        .start_orchestration("impatient-1", "Impatient", "first")
        .await
        .unwrap();
    recorded(&env.client, "impatient-1", "ExternalSubscribed").await;
    env.client
        .raise_event("impatient-1", "move on", "")
        .await
        .unwrap();
    common::eventually("the second execution waits", || async {
        let info = env.client.get_instance_info("impatient-1").await.unwrap();
        info.current_execution_id == 2
            && kinds(&env.history("impatient-1", 2).await).contains(&"ExternalSubscribed")
    })
    .await;
    gate.open();
    env.client
        .raise_event("impatient-1", "finish", "done")
        .await
        .unwrap();
    assert_eq!(env.completed("impatient-1").await, "done");
    let second = kinds(&env.history("impatient-1", 2).await);
    assert!(!second.contains(&"ActivityCompleted"), "{second:?}");
    env.shutdown().await;
}
