//! Turns that continue in memory (`turn::continue_turn`) and acks merged with `TurnAck::then`: what a
//! runtime needs to run activities inline and commit several turns as one.

use duroxide_core::codec;
use duroxide_core::provider::{
    ActivityRef, CustomStatusChange, ExecutionStatus, InstanceStatus, NewWorkItem, OrchestrationItem,
    StoredMessage, TurnAck,
};
use duroxide_core::testing::SimHost;
use duroxide_core::turn::{continue_turn, process_item, TurnDecision, TurnOptions};
use duroxide_core::{OrchestrationContext, OrchestrationRegistry, OrchestratorMessage, ReplayEngine};

const OPTIONS: TurnOptions = TurnOptions {
    now_ms: 7_000_000,
    entropy: 3,
    max_attempts: 5,
};

fn registry() -> OrchestrationRegistry {
    let mut r = OrchestrationRegistry::new();
    r.register("Two", |ctx: OrchestrationContext, input: String| async move {
        let a = ctx.schedule_activity("Step", input).await?;
        ctx.schedule_activity("Step", format!("{a}!")).await
    })
    .unwrap();
    r
}

/// The fetched item of instance `i`: `history` stored, `messages` queued.
fn item(history: &TurnAck, messages: &[OrchestratorMessage]) -> OrchestrationItem {
    let mut host = SimHost::new(registry());
    host.start("i", "Two", "x");
    let mut info = host.instance("i").unwrap().info.clone();
    if !history.history.is_empty() {
        info.status = InstanceStatus::Running;
    }
    OrchestrationItem {
        instance_id: "i".into(),
        lock_token: "t".into(),
        attempt: 1,
        instance: info,
        history: history.history.clone(),
        messages: messages
            .iter()
            .map(|m| StoredMessage {
                payload: codec::encode_message(m),
            })
            .collect(),
        kv_snapshot: Vec::new(),
        custom_status: Default::default(),
    }
}

fn acked(decision: TurnDecision) -> (TurnAck, Option<ReplayEngine>) {
    match decision {
        TurnDecision::Ack { ack, engine, .. } => (*ack, engine),
        TurnDecision::Abandon { reason, .. } => panic!("abandoned: {reason}"),
    }
}

/// The completion of the only work item `ack` schedules, with the activity echoing its input.
fn echoed(ack: &TurnAck) -> OrchestratorMessage {
    assert_eq!(ack.worker_items.len(), 1, "{ack:?}");
    let work = codec::decode_activity(&ack.worker_items[0].payload).unwrap();
    work.completion(Ok(work.input.clone()))
}

#[test]
fn a_continued_turn_appends_what_a_fetched_turn_would_and_merges_into_one_ack() {
    let start = OrchestratorMessage::StartOrchestration {
        name: "Two".into(),
        version: None,
        input: "x".into(),
        parent: None,
    };
    let (first, engine) = acked(process_item(
        &item(&TurnAck::default(), &[start]),
        &registry(),
        None,
        &OPTIONS,
    ));
    assert!(first.only_schedules_activities(), "{first:?}");
    assert!(engine.as_ref().unwrap().waits_only_for_activities());
    let completion = echoed(&first);

    // In memory, on the engine that ran the first turn.
    let (continued, engine, report) =
        continue_turn("i", engine.unwrap(), vec![completion.clone()], &OPTIONS).expect("the engine runs on");
    assert!(engine.is_some(), "still running: the engine is kept");
    assert!(report.logs.is_empty() && report.discarded.is_empty());
    // The usual way: the first turn stored, the completion fetched from the queue, history replayed.
    let (fetched, _) = acked(process_item(
        &item(&first, &[completion]),
        &registry(),
        None,
        &OPTIONS,
    ));
    assert_eq!(continued, fetched);
    assert!(continued.only_schedules_activities());

    // The first turn's activity ran in memory: merged, its work item is never stored.
    let mut ran = first.clone();
    ran.worker_items.clear();
    let merged = ran.then(continued.clone());
    let mut history = first.history.clone();
    history.extend(continued.history.clone());
    assert_eq!(merged.history, history);
    assert_eq!(merged.status, first.status);
    assert_eq!(merged.name, first.name);
    assert_eq!(merged.version, first.version);
    assert_eq!(
        merged.worker_items, continued.worker_items,
        "only the second step's"
    );

    // A finishing turn after it: the merged ack ends the execution with its output.
    let (last, engine, _) = continue_turn("i", engine.unwrap(), vec![echoed(&continued)], &OPTIONS).unwrap();
    assert!(engine.is_none(), "a finished execution keeps no engine");
    assert!(!last.only_schedules_activities(), "it completes the instance");
    let mut ran = merged;
    ran.worker_items.clear();
    let all = ran.then(last);
    assert_eq!(all.status, Some(ExecutionStatus::Completed));
    assert_eq!(all.output.as_deref(), Some("x!"));
    assert!(all.worker_items.is_empty());
    let kinds: Vec<&str> = all.history.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "OrchestrationStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "OrchestrationCompleted"
        ]
    );
}

fn work(event_id: u64) -> NewWorkItem {
    NewWorkItem {
        activity: ActivityRef {
            instance_id: "i".into(),
            execution_id: 1,
            event_id,
        },
        payload: format!("work {event_id}"),
        session_id: None,
        tag: None,
    }
}

#[test]
fn then_keeps_the_later_turns_changes_and_drops_work_it_cancels() {
    let first = TurnAck {
        execution_id: 1,
        status: Some(ExecutionStatus::Running),
        name: Some("Two".into()),
        version: Some("1.0.0".into()),
        custom_status: CustomStatusChange::Set(Some("early".into())),
        worker_items: vec![work(2), work(3)],
        ..TurnAck::default()
    };
    let second = TurnAck {
        execution_id: 1,
        status: Some(ExecutionStatus::Failed),
        output: Some("gave up".into()),
        // Cancels one activity the first turn scheduled and one stored earlier.
        cancel_activities: vec![work(3).activity, work(1).activity],
        ..TurnAck::default()
    };
    let merged = first.clone().then(second);
    assert_eq!(merged.status, Some(ExecutionStatus::Failed));
    assert_eq!(merged.output.as_deref(), Some("gave up"));
    assert_eq!(merged.name.as_deref(), Some("Two"));
    assert_eq!(merged.version.as_deref(), Some("1.0.0"));
    assert_eq!(
        merged.custom_status,
        CustomStatusChange::Set(Some("early".into())),
        "the second turn left it"
    );
    assert_eq!(merged.worker_items, vec![work(2)], "item 3 is never stored");
    assert_eq!(merged.cancel_activities, vec![work(1).activity]);

    let third = TurnAck {
        execution_id: 1,
        custom_status: CustomStatusChange::Set(None),
        ..TurnAck::default()
    };
    assert_eq!(first.then(third).custom_status, CustomStatusChange::Set(None));
}

#[test]
fn only_turns_that_change_nothing_others_read_qualify() {
    let schedules = TurnAck {
        execution_id: 1,
        status: Some(ExecutionStatus::Running),
        worker_items: vec![work(2)],
        ..TurnAck::default()
    };
    assert!(schedules.only_schedules_activities());
    assert!(
        !TurnAck::default().only_schedules_activities(),
        "nothing scheduled"
    );
    let with_status = TurnAck {
        custom_status: CustomStatusChange::Set(Some("s".into())),
        ..schedules.clone()
    };
    assert!(!with_status.only_schedules_activities());
    let with_message = TurnAck {
        messages: vec![duroxide_core::provider::NewMessage {
            instance_id: "i".into(),
            payload: "timer".into(),
            visible_at_ms: Some(1),
            creates: None,
        }],
        ..schedules.clone()
    };
    assert!(!with_message.only_schedules_activities());
    let with_cancel = TurnAck {
        cancel_activities: vec![work(1).activity],
        ..schedules
    };
    assert!(!with_cancel.only_schedules_activities());
}
