//! End-to-end orchestration patterns on the simulated host: every feature of the user guide.

mod common;

use std::time::Duration;

use duroxide_core::provider::InstanceStatus;
use duroxide_core::testing::SimResult;
use duroxide_core::{Either, EventKind, OrchestrationContext, OrchestrationRegistry};

fn completed(output: &str) -> SimResult {
    SimResult {
        status: InstanceStatus::Completed,
        output: Some(output.to_string()),
    }
}

#[test]
fn hello_world_runs_an_activity() {
    let mut r = OrchestrationRegistry::new();
    r.register("Hello", |ctx: OrchestrationContext, input: String| async move {
        ctx.schedule_activity("Upper", format!("hello, {input}")).await
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("h1", "Hello", "world");
    assert_eq!(host.run_to_completion("h1"), completed("HELLO, WORLD"));
    let kinds: Vec<&str> = host.history("h1").iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "OrchestrationStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "OrchestrationCompleted"
        ]
    );
}

#[test]
fn sequential_steps_feed_each_other() {
    let mut r = OrchestrationRegistry::new();
    r.register(
        "Pipeline",
        |ctx: OrchestrationContext, input: String| async move {
            let a = ctx.schedule_activity("Add1", input).await?;
            let b = ctx.schedule_activity("Add1", a).await?;
            ctx.schedule_activity("Add1", b).await
        },
    )
    .unwrap();
    let mut host = common::host(r);
    host.start("p", "Pipeline", "1");
    assert_eq!(host.run_to_completion("p"), completed("4"));
}

#[test]
fn fan_out_fan_in_keeps_input_order() {
    let mut r = OrchestrationRegistry::new();
    r.register("FanOut", |ctx: OrchestrationContext, input: String| async move {
        let n: usize = input.parse().unwrap();
        let tasks = (0..n)
            .map(|i| ctx.schedule_activity("Add1", i.to_string()))
            .collect();
        let results: Vec<String> = ctx.join(tasks).await.into_iter().collect::<Result<_, _>>()?;
        Ok(results.join(","))
    })
    .unwrap();
    let mut host = common::host(r).shuffled(42);
    host.start("f", "FanOut", "5");
    assert_eq!(host.run_to_completion("f"), completed("1,2,3,4,5"));
}

#[test]
fn race_cancels_the_loser() {
    let mut r = OrchestrationRegistry::new();
    r.register("Race", |ctx: OrchestrationContext, _input: String| async move {
        let slow = ctx.schedule_activity("Echo", "slow");
        let timeout = ctx.schedule_timer(Duration::from_secs(5));
        match ctx.select2(timeout, ctx.wait_for_event("go")).await {
            Either::Left(()) => Ok("timed out".to_string()),
            Either::Right(data) => {
                drop(slow);
                Ok(data)
            }
        }
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("r", "Race", "");
    host.turn("r");
    host.raise_event("r", "go", "went");
    assert_eq!(host.run_to_completion("r"), completed("went"));
    // The dropped activity was cancelled before a worker ran it.
    assert!(host.activity_log.is_empty(), "{:?}", host.activity_log);
}

#[test]
fn select_over_many_timers_picks_the_earliest() {
    let mut r = OrchestrationRegistry::new();
    r.register("Timers", |ctx: OrchestrationContext, _input: String| async move {
        let timers = [300u64, 100, 200]
            .iter()
            .map(|ms| ctx.schedule_timer(Duration::from_millis(*ms)))
            .collect();
        let (index, ()) = ctx.select(timers).await;
        Ok(index.to_string())
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("t", "Timers", "");
    assert_eq!(host.run_to_completion("t"), completed("1"));
}

#[test]
fn durable_timer_advances_time() {
    let mut r = OrchestrationRegistry::new();
    r.register("Delay", |ctx: OrchestrationContext, _input: String| async move {
        let before = ctx.utc_now();
        ctx.schedule_timer(Duration::from_secs(3600)).await;
        let after = ctx.utc_now();
        Ok((after - before).to_string())
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("d", "Delay", "");
    assert_eq!(host.run_to_completion("d"), completed("3600000"));
}

#[test]
fn external_event_raised_before_the_wait_is_delivered() {
    let mut r = OrchestrationRegistry::new();
    r.register(
        "Approval",
        |ctx: OrchestrationContext, _input: String| async move {
            ctx.schedule_activity("Echo", "prepare").await?;
            let first = ctx.wait_for_event("approval").await;
            let second = ctx.wait_for_event("approval").await;
            Ok(format!("{first}+{second}"))
        },
    )
    .unwrap();
    let mut host = common::host(r);
    host.start("a", "Approval", "");
    host.turn("a");
    // Both events arrive while the activity is still running: buffered, then delivered in order.
    host.raise_event("a", "approval", "one");
    host.raise_event("a", "approval", "two");
    assert_eq!(host.run_to_completion("a"), completed("one+two"));
}

#[test]
fn queues_are_fifo_and_independent() {
    let mut r = OrchestrationRegistry::new();
    r.register(
        "MultiQueue",
        |ctx: OrchestrationContext, _input: String| async move {
            let c1 = ctx.dequeue_event("commands").await;
            let cfg = ctx.dequeue_event("config").await;
            let c2 = ctx.dequeue_event("commands").await;
            Ok(format!("{c1},{cfg},{c2}"))
        },
    )
    .unwrap();
    let mut host = common::host(r);
    host.start("q", "MultiQueue", "");
    host.enqueue_event("q", "commands", "a");
    host.enqueue_event("q", "commands", "b");
    host.enqueue_event("q", "config", "x");
    assert_eq!(host.run_to_completion("q"), completed("a,x,b"));
}

#[test]
fn sub_orchestrations_with_generated_and_explicit_ids() {
    let mut r = OrchestrationRegistry::new();
    r.register("Child", |ctx: OrchestrationContext, input: String| async move {
        ctx.schedule_activity("Upper", input).await
    })
    .unwrap();
    r.register("Parent", |ctx: OrchestrationContext, input: String| async move {
        let a = ctx.schedule_sub_orchestration("Child", input.clone()).await?;
        let b = ctx
            .schedule_sub_orchestration_with_id("Child", "child-explicit", "b")
            .await?;
        Ok(format!("{a}{b}"))
    })
    .unwrap();
    let mut host = common::host(r).shuffled(7);
    host.start("parent", "Parent", "a");
    assert_eq!(host.run_to_completion("parent"), completed("AB"));
    assert_eq!(host.result("child-explicit"), Some(completed("B")));
    assert_eq!(host.result("parent::sub::1.2"), Some(completed("A")));
    assert_eq!(
        host.instance("child-explicit")
            .unwrap()
            .info
            .parent_instance_id
            .as_deref(),
        Some("parent")
    );
}

#[test]
fn child_that_continues_as_new_still_reports_to_its_parent() {
    let mut r = OrchestrationRegistry::new();
    r.register("Counter", |ctx: OrchestrationContext, input: String| async move {
        let n: u32 = input.parse().unwrap();
        if n < 3 {
            return ctx.continue_as_new((n + 1).to_string()).await;
        }
        Ok(format!("counted to {n}"))
    })
    .unwrap();
    r.register("Parent", |ctx: OrchestrationContext, _input: String| async move {
        ctx.schedule_sub_orchestration_with_id("Counter", "counter", "0")
            .await
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("p", "Parent", "");
    assert_eq!(host.run_to_completion("p"), completed("counted to 3"));
    assert_eq!(host.instance("counter").unwrap().executions.len(), 4);
}

#[test]
fn detached_start_runs_independently_even_with_continue_as_new() {
    let mut r = OrchestrationRegistry::new();
    r.register("Monitor", |ctx: OrchestrationContext, input: String| async move {
        ctx.schedule_activity("Echo", input).await
    })
    .unwrap();
    r.register("Creator", |ctx: OrchestrationContext, input: String| async move {
        if input == "first" {
            // Fire-and-forget in the same turn as continue-as-new: it must still be sent.
            ctx.start_orchestration("Monitor", "monitor-1", "watching");
            return ctx.continue_as_new("second").await;
        }
        Ok("done".into())
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("c", "Creator", "first");
    assert_eq!(host.run_to_completion("c"), completed("done"));
    assert_eq!(host.result("monitor-1"), Some(completed("watching")));
    assert_eq!(host.instance("monitor-1").unwrap().info.parent_instance_id, None);
}

#[test]
fn continue_as_new_carries_queue_messages_events_and_custom_status() {
    let mut r = OrchestrationRegistry::new();
    r.register("ChatBot", |ctx: OrchestrationContext, input: String| async move {
        let round: u32 = input.parse().unwrap_or(0);
        let msg = ctx.dequeue_event("inbox").await;
        ctx.set_custom_status(format!(
            "round {round}: {msg} (was {:?})",
            ctx.get_custom_status()
        ));
        if msg == "bye" {
            return Ok(format!("done after {round}"));
        }
        ctx.continue_as_new((round + 1).to_string()).await
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("chat", "ChatBot", "0");
    for m in ["hello", "how", "bye"] {
        host.enqueue_event("chat", "inbox", m);
    }
    assert_eq!(host.run_to_completion("chat"), completed("done after 2"));
    let inst = host.instance("chat").unwrap();
    assert_eq!(inst.executions.len(), 3);
    assert_eq!(
        inst.custom_status.status.as_deref(),
        Some("round 2: bye (was Some(\"round 1: how (was Some(\\\"round 0: hello (was None)\\\"))\"))")
    );
    assert_eq!(inst.custom_status.version, 3);
}

#[test]
fn continue_as_new_versioned_records_the_version() {
    let mut r = OrchestrationRegistry::new();
    r.register("W", |ctx: OrchestrationContext, _input: String| async move {
        ctx.continue_as_new_versioned("next", Some("2.0.0")).await
    })
    .unwrap();
    r.register_versioned(
        "W",
        "2.0.0",
        |ctx: OrchestrationContext, input: String| async move {
            Ok(format!("{}:{input}", ctx.orchestration_version()))
        },
    )
    .unwrap();
    let mut host = common::host(r);
    // New instances run the latest version, so pin the first execution to 1.0.0 through the start.
    host.start("w", "W", "");
    let result = host.run_to_completion("w");
    assert_eq!(result, completed("2.0.0:"));
}

#[test]
fn activity_failure_reaches_the_orchestration_and_can_be_handled() {
    let mut r = OrchestrationRegistry::new();
    r.register("Safe", |ctx: OrchestrationContext, _input: String| async move {
        match ctx.schedule_activity("Fail", "boom").await {
            Ok(_) => Ok("unexpected".into()),
            Err(e) => {
                ctx.schedule_activity("Echo", format!("cleanup after {e}"))
                    .await?;
                Err(format!("failed: {e}"))
            }
        }
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("s", "Safe", "");
    let result = host.run_to_completion("s");
    assert_eq!(result.status, InstanceStatus::Failed);
    assert_eq!(result.output.as_deref(), Some("failed: boom"));
}

#[test]
fn custom_status_set_and_reset() {
    let mut r = OrchestrationRegistry::new();
    r.register(
        "Provision",
        |ctx: OrchestrationContext, _input: String| async move {
            ctx.set_custom_status("validating");
            ctx.schedule_activity("Echo", "").await?;
            ctx.set_custom_status("creating");
            ctx.schedule_activity("Echo", "").await?;
            ctx.reset_custom_status();
            Ok(format!("{:?}", ctx.get_custom_status()))
        },
    )
    .unwrap();
    let mut host = common::host(r);
    host.start("p", "Provision", "");
    assert_eq!(host.run_to_completion("p"), completed("None"));
    let inst = host.instance("p").unwrap();
    assert_eq!(inst.custom_status.status, None);
    assert_eq!(inst.custom_status.version, 3);
}

#[test]
fn kv_store_operations() {
    let mut r = OrchestrationRegistry::new();
    r.register("Kv", |ctx: OrchestrationContext, _input: String| async move {
        ctx.set_kv_value("a", "1");
        ctx.set_kv_value("b", "2");
        ctx.set_kv_value("a", "3");
        let snapshot = format!(
            "{:?}/{:?}/{}",
            ctx.get_kv_value("a"),
            ctx.get_kv_all_keys(),
            ctx.get_kv_length()
        );
        ctx.schedule_timer(Duration::from_secs(10)).await;
        ctx.set_kv_value("c", "4");
        let pruned = ctx.prune_kv_values_updated_before(ctx.current_time_ms());
        ctx.clear_kv_value("nothing");
        let after = format!("{:?}", ctx.get_kv_all_values());
        ctx.set_kv_value("d", "5");
        ctx.clear_all_kv_values();
        ctx.set_kv_value("e", "6");
        Ok(format!("{snapshot}|{pruned}|{after}"))
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("k", "Kv", "");
    assert_eq!(
        host.run_to_completion("k"),
        completed(r#"Some("3")/["a", "b"]/2|2|{"c": "4"}"#)
    );
    let kv: Vec<_> = host
        .instance("k")
        .unwrap()
        .kv
        .values()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect();
    assert_eq!(kv, vec![("e".to_string(), "6".to_string())]);
}

#[test]
fn kv_survives_continue_as_new() {
    let mut r = OrchestrationRegistry::new();
    r.register("KvLoop", |ctx: OrchestrationContext, input: String| async move {
        let n: u32 = input.parse().unwrap();
        let seen = ctx.get_kv_value("count").unwrap_or_default();
        ctx.set_kv_value("count", n.to_string());
        if n < 2 {
            return ctx.continue_as_new((n + 1).to_string()).await;
        }
        Ok(seen)
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("k", "KvLoop", "0");
    assert_eq!(host.run_to_completion("k"), completed("1"));
}

#[test]
fn kv_limits_fail_the_orchestration_naming_the_limit() {
    let mut r = OrchestrationRegistry::new();
    r.register(
        "TooMany",
        |ctx: OrchestrationContext, _input: String| async move {
            for i in 0..151 {
                ctx.set_kv_value(&format!("k{i}"), "v");
            }
            Ok("unreachable".into())
        },
    )
    .unwrap();
    r.register("TooBig", |ctx: OrchestrationContext, _input: String| async move {
        ctx.set_kv_value("big", "x".repeat(65_537));
        Ok("unreachable".into())
    })
    .unwrap();
    r.register(
        "BigStatus",
        |ctx: OrchestrationContext, _input: String| async move {
            ctx.set_custom_status("x".repeat(300_000));
            Ok("unreachable".into())
        },
    )
    .unwrap();
    r.register(
        "LongTag",
        |ctx: OrchestrationContext, _input: String| async move {
            ctx.schedule_activity_with_tag("Echo", "", &"t".repeat(257)).await
        },
    )
    .unwrap();
    let mut host = common::host(r);
    for (id, name, limit) in [
        ("a", "TooMany", "MAX_KV_KEYS"),
        ("b", "TooBig", "MAX_KV_VALUE_BYTES"),
        ("c", "BigStatus", "MAX_CUSTOM_STATUS_BYTES"),
        ("d", "LongTag", "MAX_TAG_NAME_BYTES"),
    ] {
        host.start(id, name, "");
        let result = host.run_to_completion(id);
        assert_eq!(result.status, InstanceStatus::Failed, "{name}");
        let error = result.output.unwrap();
        assert!(error.contains(limit), "{name}: {error}");
    }
}

#[test]
fn utc_now_and_new_guid_are_recorded_without_a_worker_round_trip() {
    let mut r = OrchestrationRegistry::new();
    r.register("Ids", |ctx: OrchestrationContext, _input: String| async move {
        let now = ctx.utc_now();
        let a = ctx.new_guid();
        let b = ctx.new_guid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        Ok(format!("{now} {a} {b}"))
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("i", "Ids", "");
    host.turn("i");
    assert_eq!(host.turns, 1, "everything happened in the first turn");
    let result = host.result("i").unwrap();
    assert_eq!(result.status, InstanceStatus::Completed);
    // Replaying the recorded history returns the very same values.
    let history = host.history("i");
    let recorded: Vec<String> = history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::UtcNowRecorded { now_ms } => Some(now_ms.to_string()),
            EventKind::GuidRecorded { guid } => Some(guid.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(recorded.join(" "), result.output.unwrap());
}

#[test]
fn cancelling_an_instance_cancels_its_children() {
    let mut r = OrchestrationRegistry::new();
    r.register("Waiter", |ctx: OrchestrationContext, _input: String| async move {
        Ok(ctx.wait_for_event("never").await)
    })
    .unwrap();
    r.register("Parent", |ctx: OrchestrationContext, _input: String| async move {
        ctx.schedule_sub_orchestration_with_id("Waiter", "child", "")
            .await
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("p", "Parent", "");
    host.run(1000);
    assert_eq!(host.result("child").unwrap().status, InstanceStatus::Running);
    host.cancel("p", "user asked");
    host.run(1000);
    let parent = host.result("p").unwrap();
    assert_eq!(parent.status, InstanceStatus::Failed);
    assert_eq!(parent.output.as_deref(), Some("canceled: user asked"));
    let child = host.result("child").unwrap();
    assert_eq!(child.status, InstanceStatus::Failed);
    assert!(child.output.unwrap().starts_with("canceled: "));
}

#[test]
fn traces_are_silent_during_replay() {
    let mut r = OrchestrationRegistry::new();
    r.register("Traced", |ctx: OrchestrationContext, _input: String| async move {
        ctx.trace_info("start");
        ctx.schedule_activity("Echo", "x").await?;
        ctx.trace_info("end");
        Ok(ctx.is_replaying().to_string())
    })
    .unwrap();
    let mut host = common::host(r).without_cache();
    host.start("t", "Traced", "");
    assert_eq!(host.run_to_completion("t"), completed("false"));
    let lines: Vec<&str> = host.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(lines, ["start", "end"]);
}

#[test]
fn join_of_ten_thousand_activities_completes() {
    let mut r = OrchestrationRegistry::new();
    r.register("Big", |ctx: OrchestrationContext, _input: String| async move {
        let tasks = (0..10_000)
            .map(|i| ctx.schedule_activity("Echo", i.to_string()))
            .collect();
        let results = ctx.join(tasks).await;
        let sum: u64 = results
            .into_iter()
            .map(|r| r.unwrap().parse::<u64>().unwrap())
            .sum();
        Ok(sum.to_string())
    })
    .unwrap();
    let mut host = common::host(r).activities_first();
    host.start("big", "Big", "");
    assert_eq!(
        host.run_to_completion("big"),
        completed(&(0..10_000u64).sum::<u64>().to_string())
    );
}

#[test]
fn generated_child_ids_differ_across_continue_as_new() {
    let mut r = OrchestrationRegistry::new();
    r.register("Child", |_ctx: OrchestrationContext, input: String| async move {
        Ok(input)
    })
    .unwrap();
    r.register("Parent", |ctx: OrchestrationContext, input: String| async move {
        let out = ctx.schedule_sub_orchestration("Child", input.clone()).await?;
        if input == "first" {
            return ctx.continue_as_new("second").await;
        }
        Ok(out)
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("p", "Parent", "first");
    assert_eq!(host.run_to_completion("p"), completed("second"));
    assert_eq!(host.instance_ids(), ["p", "p::sub::1.2", "p::sub::2.2"]);
}

#[test]
fn an_event_raised_before_continue_as_new_reaches_the_next_execution_in_any_batching() {
    let mut r = OrchestrationRegistry::new();
    r.register("Restart", |ctx: OrchestrationContext, input: String| async move {
        if input == "first" {
            return ctx.continue_as_new("second").await;
        }
        Ok(ctx.wait_for_event("go").await)
    })
    .unwrap();
    for seed in 0..64 {
        let mut host = common::host(r.clone()).shuffled(seed);
        host.start("r", "Restart", "first");
        host.raise_event("r", "go", "went");
        assert_eq!(host.run_to_completion("r"), completed("went"), "seed {seed}");
    }
}
