//! Multiple executions (continue-as-new): an ack with `execution_id + 1` creates the next execution and
//! makes it current; history is kept per execution.

use duroxide_core::provider::*;

use crate::support::*;

/// Continue-as-new creates execution 2 and makes it current: listed, `Running`, with a real start time.
pub async fn continue_as_new_creates_the_next_execution(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let before = now_ms();
    continue_as_new(&p, "i1").await?;
    ensure_eq!(p.list_executions("i1").await?, vec![1, 2], "executions");
    let info = p.get_instance_info("i1").await?.ok_or_else(|| fail("no info"))?;
    ensure_eq!(info.current_execution_id, 2, "current execution");
    ensure_eq!(info.status, InstanceStatus::Running, "instance status");
    let exec = p
        .get_execution_info("i1", 2)
        .await?
        .ok_or_else(|| fail("execution 2 has no info"))?;
    ensure_eq!(exec.status, ExecutionStatus::Running, "execution 2 status");
    ensure!(
        exec.started_at_ms + 60_000 >= before && exec.started_at_ms <= now_ms() + 60_000,
        "started_at_ms {} is not a real time near {before}",
        exec.started_at_ms
    );
    Ok(())
}

/// History is kept per execution: each execution reads back its own events, and event ids start at 1
/// again in the new execution without colliding with the old one.
pub async fn history_is_kept_per_execution(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.events(2)).await?;
    turn(&p, "i1", Turn::continue_as_new).await?;
    let exec1 = p.read_history("i1", 1).await?;
    let item = fetch_instance(&p, "i1").await?;
    let ack = Turn::next_execution(&item).events(1).build();
    let exec2 = ack.history.clone();
    p.ack_orchestration_item(&item.lock_token, ack).await?;
    ensure_eq!(p.read_history("i1", 1).await?, exec1, "execution 1 history");
    ensure_eq!(p.read_history("i1", 2).await?, exec2, "execution 2 history");
    ensure_eq!(
        exec2.first().map(|r| r.event_id),
        Some(1),
        "first event id of execution 2"
    );
    Ok(())
}

/// After continue-as-new, a fetch returns the new execution's history only, and the item names
/// execution 2 as current.
pub async fn fetch_after_continue_as_new_returns_new_history(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.events(3)).await?;
    continue_as_new(&p, "i1").await?;
    let exec2 = p.read_history("i1", 2).await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let item = fetch(&p).await?;
    ensure_eq!(
        item.instance.current_execution_id,
        2,
        "current execution of the item"
    );
    ensure_eq!(item.history, exec2, "history of the item");
    Ok(())
}

/// The execution that continued as new keeps status `ContinuedAsNew` with a completion time (prune by
/// `completed_before_ms` relies on it), while the instance stays `Running`.
pub async fn continued_execution_is_closed(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    turn(&p, "i1", Turn::continue_as_new).await?;
    ensure_eq!(
        p.get_instance_info("i1").await?.map(|i| i.status),
        Some(InstanceStatus::Running),
        "instance status"
    );
    let exec = p
        .get_execution_info("i1", 1)
        .await?
        .ok_or_else(|| fail("no execution info"))?;
    ensure_eq!(exec.status, ExecutionStatus::ContinuedAsNew, "execution 1 status");
    ensure!(
        exec.completed_at_ms.is_some(),
        "an execution that continued as new has completed_at_ms"
    );
    Ok(())
}

/// A later execution that completes completes the instance; earlier executions keep their status.
pub async fn later_execution_completes_the_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    continue_as_new(&p, "i1").await?;
    turn(&p, "i1", |t| t.complete("\"final\"")).await?;
    let info = p.get_instance_info("i1").await?.ok_or_else(|| fail("no info"))?;
    ensure_eq!(info.status, InstanceStatus::Completed, "instance status");
    ensure_eq!(info.output.as_deref(), Some("\"final\""), "instance output");
    let statuses = (
        p.get_execution_info("i1", 1).await?.map(|e| e.status),
        p.get_execution_info("i1", 2).await?.map(|e| e.status),
    );
    ensure_eq!(
        statuses,
        (
            Some(ExecutionStatus::ContinuedAsNew),
            Some(ExecutionStatus::Completed)
        ),
        "execution statuses"
    );
    Ok(())
}

/// Messages that arrive while the last turn of an execution runs survive continue-as-new and reach the
/// turn that starts the next execution, in enqueue order (so before the continue-as-new message).
pub async fn messages_survive_continue_as_new(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    p.enqueue_message(external_event("i1", "nudge", "null")).await?;
    let item = fetch(&p).await?;
    let early = external_event("i1", "for-the-next-execution", "1");
    p.enqueue_message(early.clone()).await?;
    Turn::after(&item).continue_as_new().commit(&p, &item).await?;
    let item = fetch(&p).await?;
    ensure_eq!(
        item.messages.len(),
        2,
        "messages of the first turn of execution 2"
    );
    ensure_eq!(
        item.messages[0].payload,
        early.payload,
        "the event that arrived during the last turn"
    );
    Turn::next_execution(&item).commit(&p, &item).await
}

/// Many executions in a row: five continue-as-new turns give executions 1 to 6, each with its own
/// history and event count.
pub async fn many_executions_in_a_row(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    for n in 0..5 {
        continue_as_new_with(&p, "i1", |t| t.events(n)).await?;
    }
    ensure_eq!(
        p.list_executions("i1").await?,
        (1..=6).collect::<Vec<u64>>(),
        "executions"
    );
    for exec in 2..=6u64 {
        // Execution n+2 started with OrchestrationStarted plus n fillers, then its last turn added
        // ContinuedAsNew (all but the current one).
        let closing = if exec < 6 { 1 } else { 0 };
        let expected = 1 + (exec - 2) + closing;
        ensure_eq!(
            p.read_history("i1", exec).await?.len() as u64,
            expected,
            "history length of execution {exec}"
        );
        let info = p
            .get_execution_info("i1", exec)
            .await?
            .ok_or_else(|| fail("no execution info"))?;
        ensure_eq!(info.event_count, expected, "event_count of execution {exec}");
    }
    Ok(())
}

/// A completion for an activity of an earlier execution is still delivered to the instance: the
/// provider does not filter by execution, the runtime records and ignores it.
pub async fn completion_for_an_old_execution_is_delivered(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    continue_as_new(&p, "i1").await?;
    let lease = fetch_work(&p, &worker()).await?;
    let done = activity_completion("i1", 1, 2);
    p.ack_work_item(&lease.lock_token, Some(done.clone())).await?;
    let item = fetch(&p).await?;
    ensure_eq!(payloads(&item), payloads_of(&[done]), "messages");
    ensure_eq!(item.instance.current_execution_id, 2, "current execution");
    Ok(())
}

/// An ack with `execution_id + 1` creates and switches the execution by itself; its status then applies
/// to the new execution (here: completing it and the instance).
pub async fn ack_with_next_execution_id_switches_execution(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let item = fetch(&p).await?;
    let ack = Turn::next_execution(&item).complete("\"second\"").build();
    let history = ack.history.clone();
    p.ack_orchestration_item(&item.lock_token, ack).await?;
    ensure_eq!(p.list_executions("i1").await?, vec![1, 2], "executions");
    ensure_eq!(p.read_history("i1", 2).await?, history, "execution 2 history");
    let exec = p
        .get_execution_info("i1", 2)
        .await?
        .ok_or_else(|| fail("no execution info"))?;
    ensure_eq!(exec.status, ExecutionStatus::Completed, "execution 2 status");
    let info = p.get_instance_info("i1").await?.ok_or_else(|| fail("no info"))?;
    ensure_eq!(
        (info.current_execution_id, info.status),
        (2, InstanceStatus::Completed),
        "(current execution, status)"
    );
    Ok(())
}

/// Execution event counts are per execution.
pub async fn event_counts_are_per_execution(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.events(4)).await?;
    continue_as_new_with(&p, "i1", |t| t.events(1)).await?;
    let one = p.get_execution_info("i1", 1).await?.map(|e| e.event_count);
    let two = p.get_execution_info("i1", 2).await?.map(|e| e.event_count);
    // Execution 1: started + 4 + nudge turn's ContinuedAsNew; execution 2: started + 1.
    ensure_eq!((one, two), (Some(6), Some(2)), "event counts");
    Ok(())
}
