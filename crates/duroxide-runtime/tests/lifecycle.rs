//! Runtime lifecycle: shutdown returns as soon as it is idle, drains in-flight work, the metrics
//! snapshot counts what the runtime did, a waiting client learns of an instance's end from the
//! runtime that ended it, and a dispatcher slot does not wait for its last ack.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{recorded, Env, Gate, Registries, PATIENCE};
use duroxide_conformance::faults::{CallPhase, FaultConfig, FaultyProvider, HookAction, Op};
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
    // Thirteen activities ran: fetched by a worker, or run inline by the orchestration dispatcher.
    assert!(
        m.worker_dispatcher_items_fetched + m.activity_inline_runs >= 13,
        "{m:?}"
    );
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

/// A client waiting in the process whose runtime ends the instance is handed the state that turn
/// committed (usually without reading it back: a poll may still read first), and it is exactly what a
/// read returns: for a completion and a failure, with a custom status set in the last turn or earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_waiter_gets_exactly_the_stored_final_state() {
    let mut reg = Registries::new();
    reg.orchestration("Ends", |ctx, how| async move {
        ctx.set_custom_status("early");
        let _ = ctx.wait_for_event("go").await;
        match how.as_str() {
            "complete" => Ok("\"done\"".to_string()),
            "status-and-complete" => {
                ctx.set_custom_status("late");
                Ok("\"done\"".to_string())
            }
            _ => Err("gave up".to_string()),
        }
    });
    let env = Env::memory(&reg).await;
    for how in ["complete", "status-and-complete", "fail"] {
        env.client.start_orchestration(how, "Ends", how).await.unwrap();
        recorded(&env.client, how, "ExternalSubscribed").await;
        let client = env.client.clone();
        let id = how.to_string();
        let waiter = tokio::spawn(async move { client.wait_for_orchestration(&id, PATIENCE).await });
        env.client.raise_event(how, "go", "").await.unwrap();
        let handed = waiter.await.unwrap().unwrap();
        let stored = env.client.get_status(how).await.unwrap();
        assert_eq!(
            handed, stored,
            "{how}: the waiter's state differs from the stored one"
        );
        let expected_custom = if how == "status-and-complete" {
            "late"
        } else {
            "early"
        };
        assert_eq!(handed.custom_status.as_deref(), Some(expected_custom), "{how}");
        assert!(handed.status.is_terminal(), "{how}: {handed:?}");
    }
    env.shutdown().await;
}

/// Runs an orchestration of two activities with one slot of each kind, on a provider whose first
/// call of `frozen` commits and then never answers: it completes only if a slot goes on without
/// waiting for that answer. Shutdown still ends (after its drain time, by a hard stop).
async fn completes_while_the_first_ack_of(frozen: Op) {
    let froze = Arc::new(AtomicBool::new(false));
    let hook = {
        let froze = froze.clone();
        Arc::new(move |op: Op, phase: CallPhase| {
            let first =
                op == frozen && phase == CallPhase::AfterCommit && !froze.swap(true, Ordering::SeqCst);
            if first {
                HookAction::Freeze
            } else {
                HookAction::Continue
            }
        })
    };
    let provider = Arc::new(FaultyProvider::new(common::memory(), FaultConfig::none(), 1).with_hook(hook));
    let mut reg = Registries::new();
    reg.activity("Echo", |_, input| async move { Ok(input) })
        .orchestration("Two", |ctx, input| async move {
            let a = ctx.schedule_activity("Echo", input).await?;
            ctx.schedule_activity("Echo", format!("{a}!")).await
        });
    let options = RuntimeOptions {
        orchestration_concurrency: 1,
        worker_concurrency: 1,
        // Both activities go through the worker slot (the second would otherwise run inline).
        inline_activity_wait: Duration::ZERO,
        ..common::options()
    };
    let env = Env::start(provider, &reg, options).await;
    env.client.start_orchestration("two", "Two", "hi").await.unwrap();
    assert_eq!(env.completed("two").await, "hi!", "{frozen:?}");
    assert!(
        froze.load(Ordering::SeqCst),
        "the first {frozen:?} never answered"
    );
    tokio::time::timeout(common::SHUTDOWN * 3, env.shutdown())
        .await
        .expect("shutdown ends despite an ack that never answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_slot_runs_its_next_activity_while_an_ack_is_still_in_flight() {
    completes_while_the_first_ack_of(Op::AckWorkItem).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestration_slot_runs_its_next_turn_while_an_ack_is_still_in_flight() {
    completes_while_the_first_ack_of(Op::AckOrchestrationItem).await;
}
