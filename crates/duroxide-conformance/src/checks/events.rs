//! Buffered early events and event queues: messages that arrive while an instance is locked, before
//! its first turn or after it finished are kept, in order, for the next fetch.

use std::time::Duration;

use duroxide_core::provider::*;

use crate::support::*;

/// Events enqueued while the instance is locked are not part of the running turn; the next fetch
/// returns them.
pub async fn events_during_a_turn_wait_for_the_next_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let raised = [
        external_event("i1", "approve", "true"),
        external_event("i1", "approve", "false"),
    ];
    for m in &raised {
        p.enqueue_message(m.clone()).await?;
    }
    ensure_eq!(item.messages.len(), 1, "the running turn's messages");
    Turn::after(&item).commit(&p, &item).await?;
    let next = fetch(&p).await?;
    ensure_eq!(payloads(&next), payloads_of(&raised), "the next turn's messages");
    Ok(())
}

/// Events raised before the first turn are buffered behind the start message, in order.
pub async fn early_events_are_buffered_behind_the_start(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let sent = vec![
        start_message("i1"),
        external_event("i1", "a", "1"),
        external_event("i1", "b", "2"),
    ];
    create(&p, "i1").await?;
    for m in &sent[1..] {
        p.enqueue_message(m.clone()).await?;
    }
    let item = fetch(&p).await?;
    ensure_eq!(payloads(&item), payloads_of(&sent), "first turn's messages");
    Ok(())
}

/// Events that arrive during a turn that is then abandoned come after the abandoned messages.
pub async fn events_during_an_abandoned_turn_follow_its_messages(
    factory: &dyn ProviderFactory,
) -> CheckResult {
    let p = factory.create().await;
    let mut sent = vec![start_message("i1")];
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    for n in 0..3 {
        let m = external_event("i1", "e", &n.to_string());
        p.enqueue_message(m.clone()).await?;
        sent.push(m);
    }
    p.abandon_orchestration_item(&item.lock_token, None).await?;
    let item = fetch(&p).await?;
    ensure_eq!(payloads(&item), payloads_of(&sent), "messages after abandon");
    Ok(())
}

/// Queue messages of different queues keep their overall enqueue order (the runtime matches them per
/// queue in FIFO order, so the provider must not regroup them).
pub async fn queue_messages_keep_their_order(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let sent: Vec<NewMessage> = (0..12)
        .map(|n| {
            queue_message(
                "i1",
                if n % 3 == 0 { "orders" } else { "refunds" },
                &n.to_string(),
            )
        })
        .collect();
    for m in &sent {
        p.enqueue_message(m.clone()).await?;
    }
    let item = fetch(&p).await?;
    ensure_eq!(payloads(&item), payloads_of(&sent), "queue messages");
    Ok(())
}

/// A cancel request enqueued during a turn is kept for the next fetch like any event.
pub async fn cancel_request_during_a_turn_is_kept(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let cancel = cancel_message("i1");
    p.enqueue_message(cancel.clone()).await?;
    Turn::after(&item).commit(&p, &item).await?;
    let next = fetch(&p).await?;
    ensure_eq!(payloads(&next), payloads_of(&[cancel]), "messages");
    Ok(())
}

/// Messages to a completed instance are accepted and fetchable, so the runtime can see and discard
/// them; they never get stuck.
pub async fn messages_to_a_finished_instance_are_fetchable(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_completed(&p, "i1").await?;
    let late = external_event("i1", "too-late", "1");
    p.enqueue_message(late.clone()).await?;
    let item = fetch(&p).await?;
    ensure_eq!(payloads(&item), payloads_of(&[late]), "messages");
    ensure_eq!(
        item.instance.status,
        InstanceStatus::Completed,
        "status of the item"
    );
    Turn::after(&item).commit(&p, &item).await?;
    ensure_eq!(
        p.get_instance_info("i1").await?.map(|i| i.status),
        Some(InstanceStatus::Completed),
        "status"
    );
    Ok(())
}

/// Concurrent senders lose nothing: 4 tasks raising 25 events each are all delivered, each sender's
/// events in its own order.
pub async fn concurrent_senders_lose_nothing(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let mut tasks = Vec::new();
    for sender in 0..4 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..25 {
                p.enqueue_message(external_event("i1", &format!("s{sender}"), &n.to_string()))
                    .await?;
            }
            Ok::<_, ProviderError>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| fail(format!("sender panicked: {e}")))??;
    }
    let item = fetch(&p).await?;
    ensure_eq!(item.messages.len(), 100, "messages delivered");
    for sender in 0..4 {
        let expected: Vec<String> = (0..25)
            .map(|n| external_event("i1", &format!("s{sender}"), &n.to_string()).payload)
            .collect();
        let got: Vec<String> = payloads(&item)
            .into_iter()
            .filter(|m| expected.contains(m))
            .collect();
        ensure_eq!(got, expected, "events of sender {sender} in order");
    }
    Ok(())
}

/// A message another instance's turn sends to a locked instance waits for that instance's next turn.
pub async fn messages_from_other_turns_wait_for_the_lock(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "b").await?;
    create(&p, "a").await?;
    let a = fetch_instance(&p, "a").await?;
    p.enqueue_message(external_event("b", "nudge", "null")).await?;
    let b = fetch_instance(&p, "b").await?;
    let signal = external_event("a", "from-b", "1");
    Turn::after(&b).message(signal.clone()).commit(&p, &b).await?;
    no_item(try_fetch(&p).await?, "a is still locked")?;
    Turn::after(&a).commit(&p, &a).await?;
    let next = fetch_instance(&p, "a").await?;
    ensure_eq!(payloads(&next), payloads_of(&[signal]), "a's next messages");
    Ok(())
}

/// A large backlog comes in one fetch: 300 messages, all of them, in enqueue order.
pub async fn large_backlog_arrives_in_one_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let sent: Vec<NewMessage> = (0..300)
        .map(|n| queue_message("i1", "bulk", &n.to_string()))
        .collect();
    for m in &sent {
        p.enqueue_message(m.clone()).await?;
    }
    let item = fetch(&p).await?;
    ensure_eq!(payloads(&item), payloads_of(&sent), "backlog");
    Ok(())
}

/// An activity completion that arrives while the instance is locked waits for the next turn.
pub async fn completion_during_a_turn_waits(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let item = fetch(&p).await?;
    let lease = fetch_work(&p, &worker()).await?;
    let done = activity_completion("i1", 1, 2);
    p.ack_work_item(&lease.lock_token, Some(done.clone())).await?;
    ensure_eq!(item.messages.len(), 1, "the running turn's messages");
    no_item(
        p.fetch_orchestration_item(LONG_LOCK, Duration::from_millis(100))
            .await?,
        "the instance is locked",
    )?;
    Turn::after(&item).commit(&p, &item).await?;
    let next = fetch(&p).await?;
    ensure_eq!(payloads(&next), payloads_of(&[done]), "messages of the next turn");
    Ok(())
}
