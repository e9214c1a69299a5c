//! The atomic turn ack: everything a turn writes is applied together, and a refused ack (duplicate
//! event id, unknown token) leaves nothing behind.

use duroxide_core::provider::*;

use crate::support::*;

/// An ack appends its history records to the execution, in id order and verbatim.
pub async fn ack_appends_history(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let ack = Turn::after(&item).events(4).build();
    let expected = ack.history.clone();
    p.ack_orchestration_item(&item.lock_token, ack).await?;
    ensure_eq!(p.read_history("i1", 1).await?, expected, "history");
    Ok(())
}

/// An ack that repeats an existing event id fails as `Permanent` and applies nothing of the turn: no
/// history, status, output, custom status, KV, worker item, message, child or timer.
pub async fn duplicate_event_id_fails_and_leaves_nothing(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "b").await?;
    start(&p, "a").await?;
    p.enqueue_message(external_event("a", "e", "1")).await?;
    let item = fetch_instance(&p, "a").await?;
    let before = snapshot(&p, "a").await?;
    // The refused record comes last, so a provider that applies records one by one has already written
    // everything else when it meets the duplicate.
    let ack = everything(Turn::after(&item), "b").raw_record(1).build();
    let result = p.ack_orchestration_item(&item.lock_token, ack).await;
    expect_kind(
        result,
        ProviderErrorKind::Permanent,
        "ack with a duplicate event id",
    )?;
    ensure_unchanged(&p, "a", &before, "after the refused ack").await?;
    ensure_eq!(
        p.get_instance_info("child-of-refused-ack").await?,
        None,
        "child of the refused ack"
    );
    Ok(())
}

/// Two records with the same id inside one ack also fail the ack as `Permanent`, leaving nothing.
pub async fn duplicate_ids_within_one_ack_leave_nothing(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "b").await?;
    start(&p, "a").await?;
    p.enqueue_message(external_event("a", "e", "1")).await?;
    let item = fetch_instance(&p, "a").await?;
    let before = snapshot(&p, "a").await?;
    let ack = everything(Turn::after(&item), "b")
        .raw_record(40)
        .raw_record(40)
        .build();
    let result = p.ack_orchestration_item(&item.lock_token, ack).await;
    expect_kind(result, ProviderErrorKind::Permanent, "ack with the same id twice")?;
    ensure_unchanged(&p, "a", &before, "after the refused ack").await
}

/// A refused ack does not consume the turn's messages: after abandoning (or losing) the lock, the
/// instance is fetched again with the same messages.
pub async fn refused_ack_keeps_the_messages(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "a").await?;
    p.enqueue_message(external_event("a", "e", "1")).await?;
    let item = fetch_instance(&p, "a").await?;
    let ack = Turn::after(&item).events(1).raw_record(1).build();
    expect_kind(
        p.ack_orchestration_item(&item.lock_token, ack).await,
        ProviderErrorKind::Permanent,
        "refused ack",
    )?;
    // Whether a refused ack kept the lock is not specified; either way an abandon must not make things
    // worse, and afterwards the messages must be fetchable.
    let _ = p.abandon_orchestration_item(&item.lock_token, None).await;
    let again = fetch_instance(&p, "a").await?;
    ensure_eq!(again.messages, item.messages, "messages after the refused ack");
    Ok(())
}

/// An ack with a wrong token fails with `LockLost` and applies nothing; the holder's ack still works.
pub async fn ack_with_wrong_token_leaves_nothing(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "b").await?;
    start(&p, "a").await?;
    p.enqueue_message(external_event("a", "e", "1")).await?;
    let item = fetch_instance(&p, "a").await?;
    let before = snapshot(&p, "a").await?;
    let wrong = format!("{}x", item.lock_token);
    let result = p
        .ack_orchestration_item(&wrong, everything(Turn::after(&item), "b").build())
        .await;
    expect_kind(result, ProviderErrorKind::LockLost, "ack with a wrong token")?;
    ensure_unchanged(&p, "a", &before, "after the refused ack").await?;
    ensure_eq!(
        p.get_instance_info("child-of-refused-ack").await?,
        None,
        "child of the refused ack"
    );
    Turn::after(&item).commit(&p, &item).await
}

/// A completing ack sets the execution and the instance to `Completed` with the output, and stamps the
/// execution's `completed_at_ms`.
pub async fn ack_completes_execution_and_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let before = now_ms();
    start_with(&p, "i1", |t| t.complete("\"the output\"")).await?;
    let info = p.get_instance_info("i1").await?.ok_or_else(|| fail("no info"))?;
    ensure_eq!(info.status, InstanceStatus::Completed, "instance status");
    ensure_eq!(info.output.as_deref(), Some("\"the output\""), "instance output");
    let exec = p
        .get_execution_info("i1", 1)
        .await?
        .ok_or_else(|| fail("no execution info"))?;
    ensure_eq!(exec.status, ExecutionStatus::Completed, "execution status");
    ensure_eq!(exec.output.as_deref(), Some("\"the output\""), "execution output");
    let done = exec
        .completed_at_ms
        .ok_or_else(|| fail("completed execution has no completed_at_ms"))?;
    ensure!(
        done + 60_000 >= before && done <= now_ms() + 60_000,
        "completed_at_ms {done} is not a real time near {before}"
    );
    ensure!(
        done >= exec.started_at_ms,
        "completed_at_ms {done} precedes started_at_ms {}",
        exec.started_at_ms
    );
    Ok(())
}

/// A failing ack sets the execution and the instance to `Failed` with the error text as output.
pub async fn ack_fails_execution_and_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.fail("it broke")).await?;
    let info = p.get_instance_info("i1").await?.ok_or_else(|| fail("no info"))?;
    ensure_eq!(info.status, InstanceStatus::Failed, "instance status");
    ensure_eq!(info.output.as_deref(), Some("it broke"), "instance output");
    let exec = p
        .get_execution_info("i1", 1)
        .await?
        .ok_or_else(|| fail("no execution info"))?;
    ensure_eq!(exec.status, ExecutionStatus::Failed, "execution status");
    ensure!(
        exec.completed_at_ms.is_some(),
        "a failed execution has completed_at_ms"
    );
    Ok(())
}

/// An ack without a status leaves the status alone: running stays running, and a completed instance
/// that consumes a late message stays completed.
pub async fn ack_without_status_keeps_the_status(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    turn(&p, "i1", |t| t.events(1)).await?;
    ensure_eq!(
        p.get_instance_info("i1").await?.map(|i| i.status),
        Some(InstanceStatus::Running),
        "status"
    );
    turn(&p, "i1", |t| t.complete("1")).await?;
    turn(&p, "i1", |t| t).await?;
    let info = p.get_instance_info("i1").await?.ok_or_else(|| fail("no info"))?;
    ensure_eq!(
        info.status,
        InstanceStatus::Completed,
        "status after a turn without status"
    );
    ensure_eq!(
        info.output.as_deref(),
        Some("1"),
        "output after a turn without output"
    );
    Ok(())
}

/// A running execution has no `completed_at_ms`, also after an explicit `Running` status.
pub async fn running_execution_has_no_completed_at(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.status(ExecutionStatus::Running)).await?;
    let exec = p
        .get_execution_info("i1", 1)
        .await?
        .ok_or_else(|| fail("no execution info"))?;
    ensure_eq!(exec.status, ExecutionStatus::Running, "execution status");
    ensure_eq!(
        exec.completed_at_ms,
        None,
        "completed_at_ms of a running execution"
    );
    Ok(())
}

/// The first turn's `name`/`version` update the instance (the version is resolved then); a later ack
/// without them leaves them as they are.
pub async fn ack_writes_name_and_version(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    ensure_eq!(
        p.get_instance_info("i1").await?.and_then(|i| i.version),
        None,
        "version before the first turn"
    );
    let item = fetch(&p).await?;
    let mut ack = Turn::after(&item).build();
    ack.name = Some("Renamed".into());
    ack.version = Some("3.2.1".into());
    p.ack_orchestration_item(&item.lock_token, ack).await?;
    turn(&p, "i1", |t| t.events(1)).await?;
    let info = p.get_instance_info("i1").await?.ok_or_else(|| fail("no info"))?;
    ensure_eq!(info.name, "Renamed", "name");
    ensure_eq!(info.version.as_deref(), Some("3.2.1"), "version");
    Ok(())
}

/// Worker items of an ack are queued with their routing fields (activity, session, tag) intact.
pub async fn ack_enqueues_worker_items(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let items = vec![
        work_item("i1", 2),
        work_item("i1", 3).tagged("gpu"),
        work_item("i1", 4).in_session("s1"),
        work_item("i1", 5).in_session("s2").tagged("gpu"),
    ];
    seed_work(&p, "i1", items.clone()).await?;
    ensure_eq!(p.get_queue_depths().await?.worker_queue, 4, "worker queue depth");
    let any = session_worker("owner", LONG_LOCK, true);
    for expected in items {
        let lease = fetch_work(&p, &any).await?;
        ensure_eq!(lease.activity, expected.activity, "activity");
        ensure_eq!(lease.payload, expected.payload, "payload");
        ensure_eq!(
            lease.session_id,
            expected.session_id,
            "session of {:?}",
            expected.activity
        );
        ensure_eq!(lease.tag, expected.tag, "tag of {:?}", expected.activity);
    }
    Ok(())
}

/// One ack applies all its parts together: history, status, output, custom status, KV, worker item,
/// a message to another instance, a child start and a timer are all visible afterwards.
pub async fn ack_applies_every_part(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "b").await?;
    create(&p, "a").await?;
    let item = fetch_instance(&p, "a").await?;
    let ack = everything(Turn::after(&item), "b").build();
    let history = ack.history.clone();
    p.ack_orchestration_item(&item.lock_token, ack).await?;
    ensure_eq!(p.read_history("a", 1).await?, history, "history");
    let info = p.get_instance_info("a").await?.ok_or_else(|| fail("no info"))?;
    ensure_eq!(info.status, InstanceStatus::Completed, "status");
    ensure_eq!(info.output.as_deref(), Some("\"out\""), "output");
    ensure_eq!(
        p.get_custom_status("a").await?.and_then(|c| c.status),
        Some("busy".into()),
        "custom status"
    );
    ensure_eq!(p.get_kv_value("a", "k").await?, Some("v".into()), "KV");
    ensure_eq!(
        p.get_instance_info("child-of-refused-ack")
            .await?
            .map(|i| i.parent_instance_id),
        Some(Some("a".into())),
        "child"
    );
    let depths = p.get_queue_depths().await?;
    ensure_eq!(depths.worker_queue, 1, "worker queue");
    ensure_eq!(depths.timer_queue, 1, "timer queue");
    // Visible: b's message and the child's start.
    ensure_eq!(depths.orchestrator_queue, 2, "orchestrator queue");
    Ok(())
}

/// `cancel_activities` deletes exactly the matching worker items; an item that differs only in
/// execution id stays.
pub async fn cancel_activities_removes_only_matching_items(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(
        &p,
        "i1",
        vec![work_item("i1", 2), work_item("i1", 3), work_item("i1", 4)],
    )
    .await?;
    let gone = work_item("i1", 2).activity;
    let other_execution = work_item("i1", 3).in_execution(2).activity;
    turn(&p, "i1", |t| t.cancel(gone).cancel(other_execution)).await?;
    ensure_eq!(
        p.get_queue_depths().await?.worker_queue,
        2,
        "worker queue after the cancel"
    );
    let first = fetch_work(&p, &worker()).await?;
    let second = fetch_work(&p, &worker()).await?;
    ensure_eq!(
        (first.activity.event_id, second.activity.event_id),
        (3, 4),
        "remaining items"
    );
    Ok(())
}

/// An ack with no history records is valid (a turn that only consumes messages): it deletes the
/// fetched messages and leaves history as it was.
pub async fn ack_without_events_consumes_messages(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let before = p.read_history("i1", 1).await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let item = fetch(&p).await?;
    p.ack_orchestration_item(
        &item.lock_token,
        TurnAck {
            execution_id: 1,
            ..TurnAck::default()
        },
    )
    .await?;
    ensure_eq!(p.read_history("i1", 1).await?, before, "history");
    no_item(try_fetch(&p).await?, "the message was consumed")
}

/// With many messages, the ack deletes exactly the fetched ones: 50 fetched, 10 arriving meanwhile,
/// and the next turn gets exactly those 10.
pub async fn ack_deletes_exactly_the_fetched_messages(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    for n in 0..50 {
        p.enqueue_message(queue_message("i1", "q", &n.to_string()))
            .await?;
    }
    let item = fetch(&p).await?;
    ensure_eq!(item.messages.len(), 50, "messages in the first batch");
    let late: Vec<NewMessage> = (50..60)
        .map(|n| queue_message("i1", "q", &n.to_string()))
        .collect();
    for m in &late {
        p.enqueue_message(m.clone()).await?;
    }
    Turn::after(&item).events(1).commit(&p, &item).await?;
    let next = fetch(&p).await?;
    ensure_eq!(payloads(&next), payloads_of(&late), "messages of the next turn");
    Ok(())
}
