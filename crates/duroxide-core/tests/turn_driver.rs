//! The turn driver (`turn::process_item`): poison, unreadable data, unregistered names, terminal
//! instances, and the instance cache, all without a database.

mod common;

use duroxide_core::provider::{InstanceStatus, OrchestrationItem};
use duroxide_core::testing::{records, HistoryBuilder, SimHost};
use duroxide_core::turn::{process_item, TurnDecision, TurnOptions, TurnOutcome};
use duroxide_core::{OrchestrationContext, OrchestrationRegistry};

fn registry() -> OrchestrationRegistry {
    let mut r = OrchestrationRegistry::new();
    r.register("Echo", |ctx: OrchestrationContext, input: String| async move {
        ctx.schedule_activity("Echo", input).await
    })
    .unwrap();
    r
}

#[test]
fn corrupt_stored_message_backs_off_then_fails_as_poison_without_blocking_others() {
    let mut r = registry();
    r.register("Wait", |ctx: OrchestrationContext, _input: String| async move {
        Ok(ctx.wait_for_event("never").await)
    })
    .unwrap();
    let mut host: SimHost = common::host(r);
    host.max_attempts = 3;
    host.start("bad", "Wait", "x");
    host.start("good", "Echo", "y");
    host.turn("bad"); // starts normally; now waiting for an event that only the corrupt message could be
    host.send_raw("bad", "{not json");
    host.run(10_000);
    let bad = host.result("bad").unwrap();
    assert_eq!(bad.status, InstanceStatus::Failed);
    let error = bad.output.unwrap();
    assert!(error.starts_with("poison: instance bad"), "{error}");
    assert!(
        error.contains("unreadable") && error.contains("after 3 attempts"),
        "{error}"
    );
    assert_eq!(host.result("good").unwrap().status, InstanceStatus::Completed);
}

#[test]
fn corrupt_history_row_fails_the_instance_as_poison() {
    // Without the cache: a cached engine already holds this history and would not read it again.
    let mut host = common::host(registry()).without_cache();
    host.max_attempts = 2;
    host.start("i", "Echo", "x");
    host.turn("i");
    host.instance_mut("i").unwrap().executions[0][1].payload = "{\"truncated".into();
    host.run(10_000);
    let result = host.result("i").unwrap();
    assert_eq!(result.status, InstanceStatus::Failed);
    let error = result.output.unwrap();
    assert!(
        error.contains("history is unreadable") && error.contains("event 2"),
        "{error}"
    );
}

#[test]
fn unknown_event_kind_from_a_newer_version_is_reported() {
    let mut host = common::host(registry()).without_cache();
    host.max_attempts = 1;
    host.start("i", "Echo", "x");
    host.turn("i");
    let record = &mut host.instance_mut("i").unwrap().executions[0][1];
    record.payload = record.payload.replace("ActivityScheduled", "ActivityScheduledV9");
    host.run(10_000);
    let error = host.result("i").unwrap().output.unwrap();
    assert!(error.contains("ActivityScheduledV9"), "{error}");
}

#[test]
fn unregistered_orchestration_backs_off_then_fails_clearly_and_tells_the_parent() {
    let mut r = registry();
    r.register("Parent", |ctx: OrchestrationContext, _input: String| async move {
        ctx.schedule_sub_orchestration_with_id("Missing", "child", "")
            .await
    })
    .unwrap();
    let mut host = common::host(r);
    host.max_attempts = 4;
    host.start("p", "Parent", "");
    host.run(10_000);
    let child = host.result("child").unwrap();
    assert_eq!(child.status, InstanceStatus::Failed);
    let error = child.output.unwrap();
    assert!(
        error.starts_with("configuration: orchestration \"Missing\" is not registered"),
        "{error}"
    );
    assert!(error.contains("after 4 attempts"), "{error}");
    let parent = host.result("p").unwrap();
    assert_eq!(parent.status, InstanceStatus::Failed);
    assert!(parent.output.unwrap().contains("not registered"));
    let kinds: Vec<&str> = host.history("child").iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["OrchestrationStarted", "OrchestrationFailed"]);
}

fn item(history: &[duroxide_core::Event], attempt: u32, status: InstanceStatus) -> OrchestrationItem {
    let mut host = SimHost::new(registry());
    host.start("i", "Echo", "x");
    let mut info = host.instance("i").unwrap().info.clone();
    info.status = status;
    OrchestrationItem {
        instance_id: "i".into(),
        lock_token: "t".into(),
        attempt,
        instance: info,
        history: records(history),
        messages: vec![duroxide_core::provider::StoredMessage {
            payload: duroxide_core::codec::encode_message(
                &duroxide_core::OrchestratorMessage::ExternalEvent {
                    name: "e".into(),
                    data: "d".into(),
                },
            ),
        }],
        kv_snapshot: Vec::new(),
        custom_status: Default::default(),
    }
}

const OPTIONS: TurnOptions = TurnOptions {
    now_ms: 5_000_000,
    entropy: 1,
    max_attempts: 5,
};

#[test]
fn messages_for_a_terminal_instance_are_consumed_and_dropped() {
    let history = HistoryBuilder::started("Echo", "x").build();
    match process_item(
        &item(&history, 1, InstanceStatus::Completed),
        &registry(),
        None,
        &OPTIONS,
    ) {
        TurnDecision::Ack { ack, report, .. } => {
            assert_eq!(report.outcome, TurnOutcome::Dropped);
            assert!(ack.history.is_empty() && ack.status.is_none());
            assert_eq!(report.discarded.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_item_over_max_attempts_fails_as_poison() {
    let history = HistoryBuilder::started("Echo", "x")
        .activity_scheduled("Echo", "x")
        .build();
    match process_item(
        &item(&history, 6, InstanceStatus::Running),
        &registry(),
        None,
        &OPTIONS,
    ) {
        TurnDecision::Ack { ack, report, .. } => {
            assert_eq!(
                report.outcome,
                TurnOutcome::Failed(duroxide_core::ErrorKind::Poison)
            );
            let error = ack.output.unwrap();
            assert!(
                error.contains("fetched 6 times") && error.contains("max_attempts 5"),
                "{error}"
            );
            assert_eq!(ack.history.len(), 1);
            assert_eq!(ack.history[0].event_id, 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_cached_engine_is_used_only_when_it_matches_the_stored_history() {
    let mut r = OrchestrationRegistry::new();
    r.register("Wait", |ctx: OrchestrationContext, _input: String| async move {
        let a = ctx.wait_for_event("e").await;
        let b = ctx.wait_for_event("e").await;
        Ok(format!("{a}{b}"))
    })
    .unwrap();
    // With and without the cache the host produces identical histories.
    let run = |cache: bool| {
        let mut host = SimHost::new(r.clone());
        if !cache {
            host = host.without_cache();
        }
        host.start("w", "Wait", "");
        host.turn("w");
        host.raise_event("w", "e", "1");
        host.turn("w");
        host.raise_event("w", "e", "2");
        host.run(100);
        (host.result("w").unwrap(), host.history("w"))
    };
    let (cached, h1) = run(true);
    let (replayed, h2) = run(false);
    assert_eq!(cached, replayed);
    assert_eq!(cached.output.as_deref(), Some("12"));
    assert_eq!(h1.len(), h2.len());
}

#[test]
fn a_batch_without_the_next_executions_start_is_handed_back_not_dropped() {
    let mut ended = HistoryBuilder::started("Echo", "x");
    ended.push(
        None,
        duroxide_core::EventKind::OrchestrationContinuedAsNew {
            input: "y".into(),
            version: None,
        },
    );
    let item = item(&ended.build(), 1, InstanceStatus::Running);
    match process_item(&item, &registry(), None, &OPTIONS) {
        TurnDecision::Abandon { reason, .. } => assert!(reason.contains("no start message"), "{reason}"),
        other => panic!("the event must not be consumed: {other:?}"),
    }
}

#[test]
fn a_cached_engine_is_reused_after_turns_that_schedule_work() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let invocations = Arc::new(AtomicU32::new(0));
    let counter = invocations.clone();
    let mut r = OrchestrationRegistry::new();
    r.register("Steps", move |ctx: OrchestrationContext, _input: String| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            for i in 0..5 {
                ctx.schedule_activity("Echo", i.to_string()).await?;
            }
            Ok("done".to_string())
        }
    })
    .unwrap();
    let mut host = common::host(r);
    host.start("s", "Steps", "");
    assert_eq!(host.run_to_completion("s").status, InstanceStatus::Completed);
    // One invocation for the whole run: every later turn resumed the cached engine.
    assert_eq!(invocations.load(Ordering::SeqCst), 1);
}
