//! Replay against canned histories: matching code replays silently; changed code is nondeterminism
//! whose message names the event id, what history recorded and what the code did.

use std::time::Duration;

use duroxide_core::testing::{canned, replay, replay_then_turn, HistoryBuilder};
use duroxide_core::{Action, ErrorKind, OrchestrationContext, OrchestratorMessage, TurnStatus};

async fn two_steps(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let a = ctx.schedule_activity("A", input).await?;
    ctx.schedule_activity("B", a).await
}

fn nondeterminism(status: &TurnStatus) -> String {
    match status {
        TurnStatus::Failed { error } if error.kind == ErrorKind::Nondeterminism => error.message.clone(),
        other => panic!("expected a nondeterminism failure, got {other:?}"),
    }
}

#[test]
fn matching_code_replays_without_actions() {
    let history = HistoryBuilder::started("Seq", "x")
        .activity_scheduled("A", "x")
        .activity_completed(2, "a")
        .activity_scheduled("B", "a")
        .build();
    let out = replay(two_steps, &history);
    assert_eq!(
        out.status,
        TurnStatus::Running,
        "the code waits for B, as history does"
    );
    assert!(out.actions.is_empty(), "{:?}", out.actions);
    assert!(out.new_events.is_empty(), "{:?}", out.new_events);
}

#[test]
fn matching_code_continues_after_replay() {
    let history = HistoryBuilder::started("Seq", "x")
        .activity_scheduled("A", "x")
        .build();
    let done = OrchestratorMessage::ActivityCompleted {
        execution_id: 1,
        event_id: 2,
        result: "a".into(),
    };
    let (replayed, turn) = replay_then_turn(two_steps, &history, vec![done], 5);
    assert!(replayed.actions.is_empty());
    let kinds: Vec<&str> = turn.new_events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["ActivityCompleted", "ActivityScheduled"]);
    assert_eq!(turn.new_events[0].event_id, 3);
    assert!(
        matches!(&turn.actions[..], [Action::ScheduleActivity(w)] if w.name == "B" && w.input == "a" && w.event_id == 4)
    );
}

#[test]
fn changed_activity_name_is_detected() {
    let changed = |ctx: OrchestrationContext, input: String| async move {
        let a = ctx.schedule_activity("A", input).await?;
        ctx.schedule_activity("Renamed", a).await
    };
    let message = nondeterminism(&replay(changed, &canned::two_sequential()).status);
    assert!(message.contains("event 4"), "{message}");
    assert!(message.contains(r#"ActivityScheduled("B")"#), "{message}");
    assert!(message.contains(r#"ActivityScheduled("Renamed")"#), "{message}");
}

#[test]
fn activity_swapped_for_a_timer_is_detected() {
    let swapped = |ctx: OrchestrationContext, _input: String| async move {
        ctx.schedule_timer(Duration::from_secs(1)).await;
        Ok(String::new())
    };
    let message = nondeterminism(&replay(swapped, &canned::two_sequential()).status);
    assert!(message.contains("event 2"), "{message}");
    assert!(
        message.contains(r#"ActivityScheduled("A")"#) && message.contains("TimerCreated"),
        "{message}"
    );
}

#[test]
fn code_that_finishes_where_history_went_on_is_detected() {
    // Both activities completed in history, yet no terminal event: the original code did not return
    // there, so code that returns now is not the code that made this history.
    let message = nondeterminism(&replay(two_steps, &canned::two_sequential()).status);
    assert!(message.contains("finished"), "{message}");
}

#[test]
fn removed_code_is_detected() {
    let removed =
        |ctx: OrchestrationContext, input: String| async move { ctx.schedule_activity("B", input).await };
    let message = nondeterminism(&replay(removed, &canned::two_sequential()).status);
    assert!(
        message.contains("event 2") && message.contains(r#"ActivityScheduled("A")"#),
        "{message}"
    );

    let returns_early = |_ctx: OrchestrationContext, _input: String| async move { Ok("early".to_string()) };
    let message = nondeterminism(&replay(returns_early, &canned::two_sequential()).status);
    assert!(
        message.contains("finished") && message.contains("event 2"),
        "{message}"
    );
}

#[test]
fn added_code_is_detected() {
    let added_first = |ctx: OrchestrationContext, input: String| async move {
        ctx.schedule_activity("New", input.clone()).await?;
        two_steps(ctx, input).await
    };
    let message = nondeterminism(&replay(added_first, &canned::two_sequential()).status);
    assert!(message.contains(r#"ActivityScheduled("New")"#), "{message}");

    // An extra command in the middle of a replayed turn, where history has no record of it.
    let added_after = |ctx: OrchestrationContext, input: String| async move {
        let a = ctx.schedule_activity("A", input).await?;
        let b = ctx.schedule_activity("B", a).await?;
        ctx.schedule_activity("C", b).await
    };
    let history = HistoryBuilder::started("Seq", "x")
        .activity_scheduled("A", "x")
        .activity_completed(2, "a")
        .activity_scheduled("B", "a")
        .activity_completed(4, "b")
        .activity_scheduled("D", "b")
        .build();
    let message = nondeterminism(&replay(added_after, &history).status);
    assert!(
        message.contains("event 6") && message.contains(r#"ActivityScheduled("C")"#),
        "{message}"
    );
}

#[test]
fn a_command_missing_from_a_replayed_turn_is_detected() {
    // History scheduled A and B in one turn; the code now schedules only A, then B after A completes.
    let history = HistoryBuilder::started("Seq", "x")
        .activity_scheduled("A", "x")
        .activity_scheduled("B", "x")
        .activity_completed(2, "a")
        .build();
    let message = nondeterminism(&replay(two_steps, &history).status);
    assert!(
        message.contains("event 3") && message.contains("did not schedule"),
        "{message}"
    );
}

#[test]
fn nondeterminism_during_a_turn_ends_the_execution_with_cancellations() {
    let history = HistoryBuilder::started("Seq", "x")
        .activity_scheduled("A", "x")
        .build();
    let changed = |ctx: OrchestrationContext, _input: String| async move {
        let _a = ctx.schedule_activity("A", "x");
        ctx.schedule_timer(Duration::from_secs(1)).await;
        Ok(String::new())
    };
    let out = replay(changed, &history);
    let message = nondeterminism(&out.status);
    assert!(message.contains("DX-ND"), "stable code in the message: {message}");
    assert_eq!(
        out.new_events.last().map(|e| e.kind.name()),
        Some("OrchestrationFailed")
    );
    assert!(
        out.actions.contains(&Action::CancelActivity { event_id: 2 }),
        "{:?}",
        out.actions
    );
}

#[test]
fn buffered_early_event_replays_to_the_same_wait() {
    let approval = |ctx: OrchestrationContext, _input: String| async move {
        ctx.schedule_activity("Prepare", "").await?;
        Ok(ctx.wait_for_event("approval").await)
    };
    let out = replay(approval, &canned::early_external_event());
    // The buffered event resolved the wait during replay and this code returns, but history shows
    // the original code went on to schedule `Use`: nondeterminism naming that event.
    let message = nondeterminism(&out.status);
    assert!(
        message.contains("finished") && message.contains("event 6"),
        "{message}"
    );

    let waits_again = |ctx: OrchestrationContext, _input: String| async move {
        ctx.schedule_activity("Prepare", "").await?;
        let data = ctx.wait_for_event("approval").await;
        ctx.schedule_activity("Use", data).await
    };
    let (replayed, turn) = replay_then_turn(waits_again, &canned::early_external_event(), vec![], 0);
    assert_eq!(replayed.status, TurnStatus::Running);
    assert!(turn.actions.is_empty());
}

#[test]
fn buffered_early_event_is_delivered_in_a_later_turn() {
    let approval = |ctx: OrchestrationContext, _input: String| async move {
        ctx.schedule_activity("Prepare", "").await?;
        Ok(ctx.wait_for_event("approval").await)
    };
    let history = HistoryBuilder::started("Approval", "")
        .activity_scheduled("Prepare", "")
        .external_event("approval", "yes")
        .build();
    let done = OrchestratorMessage::ActivityCompleted {
        execution_id: 1,
        event_id: 2,
        result: "ok".into(),
    };
    let (replayed, turn) = replay_then_turn(approval, &history, vec![done], 9);
    assert_eq!(replayed.status, TurnStatus::Running);
    assert_eq!(turn.status, TurnStatus::Completed { output: "yes".into() });
}

#[test]
fn stale_and_duplicate_completions_are_discarded() {
    let history = HistoryBuilder::started("Seq", "x")
        .activity_scheduled("A", "x")
        .build();
    let messages = vec![
        OrchestratorMessage::ActivityCompleted {
            execution_id: 7,
            event_id: 2,
            result: "old".into(),
        },
        OrchestratorMessage::ActivityCompleted {
            execution_id: 1,
            event_id: 99,
            result: "unknown".into(),
        },
        OrchestratorMessage::TimerFired {
            execution_id: 1,
            event_id: 2,
            fire_at_ms: 0,
        },
        OrchestratorMessage::ActivityCompleted {
            execution_id: 1,
            event_id: 2,
            result: "a".into(),
        },
        OrchestratorMessage::ActivityCompleted {
            execution_id: 1,
            event_id: 2,
            result: "again".into(),
        },
    ];
    let (_, turn) = replay_then_turn(two_steps, &history, messages, 9);
    let reasons: Vec<&str> = turn.discarded.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("execution 7"), "{reasons:?}");
    assert!(reasons[1].contains("99"), "{reasons:?}");
    assert!(reasons[2].contains("Activity"), "{reasons:?}");
    let completed: Vec<_> = turn
        .new_events
        .iter()
        .filter(|e| e.kind.name() == "ActivityCompleted")
        .collect();
    assert_eq!(completed.len(), 1, "only the real completion is recorded");
}

#[test]
fn replaying_a_finished_history_reports_its_ending_without_new_events() {
    let completed = HistoryBuilder::started("Seq", "x")
        .activity_scheduled("A", "x")
        .activity_completed(2, "a")
        .activity_scheduled("B", "a")
        .activity_completed(4, "b")
        .completed("b")
        .build();
    let out = replay(two_steps, &completed);
    assert_eq!(out.status, TurnStatus::Completed { output: "b".into() });
    assert!(out.new_events.is_empty() && out.actions.is_empty(), "{out:?}");

    // History says the run ended at event 4, but this code goes on to schedule B.
    let mut ended = HistoryBuilder::started("Seq", "x");
    ended
        .activity_scheduled("A", "x")
        .activity_completed(2, "a")
        .completed("a");
    let message = nondeterminism(&replay(two_steps, &ended.build()).status);
    assert!(message.contains(r#"ActivityScheduled("B")"#), "{message}");

    // History ends with a failure, but this code is still waiting for its event.
    let waits = |ctx: OrchestrationContext, _input: String| async move { Ok(ctx.wait_for_event("e").await) };
    let mut failed = HistoryBuilder::started("W", "");
    failed.external_subscribed("e").push(
        None,
        duroxide_core::EventKind::OrchestrationFailed {
            error: duroxide_core::ErrorDetails::application("x"),
        },
    );
    let message = nondeterminism(&replay(waits, &failed.build()).status);
    assert!(
        message.contains("event 3") && message.contains("still running"),
        "{message}"
    );
}
