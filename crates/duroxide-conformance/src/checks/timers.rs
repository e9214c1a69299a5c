//! Timer visibility: a message with `visible_at_ms` in the future is invisible until then, does not hold
//! back visible messages, and counts in the timer queue meanwhile.

use crate::support::*;

const HOUR_MS: u64 = 3_600_000;

/// A message visible only in an hour is not fetchable now, and counts in `timer_queue`, not in
/// `orchestrator_queue`.
pub async fn future_message_is_invisible(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| {
        t.message(timer_message("i1", 2, now_ms() + HOUR_MS))
    })
    .await?;
    no_item(try_fetch(&p).await?, "a timer due in an hour")?;
    let depths = p.get_queue_depths().await?;
    ensure_eq!(
        (depths.orchestrator_queue, depths.timer_queue),
        (0, 1),
        "(orchestrator_queue, timer_queue)"
    );
    Ok(())
}

/// A timer becomes fetchable once its time has come, not before.
pub async fn timer_becomes_visible_when_due(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let due = now_ms() + 400;
    let timer = timer_message("i1", 2, due);
    start_with(&p, "i1", |t| t.message(timer.clone())).await?;
    // Polls from the start: a timer handed out early shows as fetched before its due time.
    let item = wait_for("the due timer", CONDITION_TIMEOUT, || try_fetch(&p)).await?;
    let fetched_at = now_ms();
    ensure!(
        fetched_at + CLOCK_SLACK_MS >= due,
        "the timer was fetched at {fetched_at}, before it was due at {due}"
    );
    ensure_eq!(payloads(&item), payloads_of(&[timer]), "messages");
    Ok(())
}

/// A message whose visibility time has already passed is fetchable at once.
pub async fn past_due_message_is_visible_at_once(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| {
        t.message(timer_message("i1", 2, now_ms().saturating_sub(1_000)))
    })
    .await?;
    let item = try_fetch(&p)
        .await?
        .ok_or_else(|| fail("a past-due timer is not fetchable"))?;
    ensure_eq!(item.messages.len(), 1, "messages");
    Ok(())
}

/// A pending timer does not hold back the instance's visible messages: the fetch returns the visible
/// ones only, and the timer stays queued after the ack.
pub async fn pending_timer_does_not_hold_back_visible_messages(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| {
        t.message(timer_message("i1", 2, now_ms() + HOUR_MS))
    })
    .await?;
    let event = external_event("i1", "e", "1");
    p.enqueue_message(event.clone()).await?;
    let item = fetch(&p).await?;
    ensure_eq!(payloads(&item), payloads_of(&[event]), "messages of the turn");
    Turn::after(&item).commit(&p, &item).await?;
    no_item(try_fetch(&p).await?, "only the pending timer is left")?;
    ensure_eq!(
        p.get_queue_depths().await?.timer_queue,
        1,
        "timer queue after the ack"
    );
    Ok(())
}

/// Only due messages are returned: of two timers, the one due sooner arrives alone even though it was
/// enqueued second.
pub async fn only_due_timers_are_returned(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let now = now_ms();
    let late = timer_message("i1", 2, now + HOUR_MS);
    let soon = timer_message("i1", 3, now + 200);
    start_with(&p, "i1", |t| t.message(late).message(soon.clone())).await?;
    let item = wait_for("the sooner timer", CONDITION_TIMEOUT, || try_fetch(&p)).await?;
    ensure_eq!(payloads(&item), payloads_of(&[soon]), "messages");
    Ok(())
}

/// Once a timer is due it takes its enqueue place among the visible messages: a timer enqueued before
/// an event comes before it.
pub async fn due_timer_keeps_its_enqueue_position(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let due = now_ms() + 200;
    let timer = timer_message("i1", 2, due);
    start_with(&p, "i1", |t| t.message(timer.clone())).await?;
    let event = external_event("i1", "e", "1");
    p.enqueue_message(event.clone()).await?;
    sleep_until_ms(due).await;
    let item = fetch(&p).await?;
    ensure_eq!(payloads(&item), payloads_of(&[timer, event]), "messages");
    Ok(())
}

/// A client's `enqueue_message` with `visible_at_ms` is delayed like a timer.
pub async fn client_message_with_visibility_time_is_delayed(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let mut delayed = external_event("i1", "later", "1");
    delayed.visible_at_ms = Some(now_ms() + HOUR_MS);
    p.enqueue_message(delayed).await?;
    no_item(try_fetch(&p).await?, "a delayed client message")?;
    ensure_eq!(p.get_queue_depths().await?.timer_queue, 1, "timer queue");
    Ok(())
}

/// A start message with `visible_at_ms` creates the instance at once but runs it only later.
pub async fn delayed_start_creates_but_waits(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let mut msg = start_message("i1");
    msg.visible_at_ms = Some(now_ms() + HOUR_MS);
    ensure!(p.create_instance(msg).await?, "create_instance returns true");
    ensure!(
        p.get_instance_info("i1").await?.is_some(),
        "the instance exists before its start is visible"
    );
    no_item(try_fetch(&p).await?, "a start due in an hour")
}

/// A timer sent to another instance stays invisible to it until due.
pub async fn timer_for_another_instance_waits(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "b").await?;
    start_with(&p, "a", |t| t.message(timer_message("b", 5, now_ms() + HOUR_MS))).await?;
    no_item(try_fetch(&p).await?, "b's timer is due in an hour")
}

/// Queue depths split the orchestrator queue by visibility: visible messages in `orchestrator_queue`,
/// future ones in `timer_queue`.
pub async fn queue_depths_split_visible_and_future(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let later = now_ms() + HOUR_MS;
    start_with(&p, "i1", |t| {
        t.message(timer_message("i1", 2, later))
            .message(timer_message("i1", 3, later))
            .message(timer_message("i1", 4, later))
            .message(external_event("i1", "e", "1"))
            .message(external_event("i1", "e", "2"))
    })
    .await?;
    let depths = p.get_queue_depths().await?;
    ensure_eq!(
        (depths.orchestrator_queue, depths.timer_queue),
        (2, 3),
        "(orchestrator_queue, timer_queue)"
    );
    Ok(())
}
