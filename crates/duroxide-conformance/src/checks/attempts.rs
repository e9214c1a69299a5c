//! Attempt counts: every fetch counts, abandon and expiry keep the count, and the provider never drops
//! work on its own; deciding that something is poison is the runtime's job.

use std::time::Duration;

use duroxide_core::provider::*;

use crate::support::*;

/// The first fetch of new messages is attempt 1.
pub async fn first_fetch_is_attempt_one(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    ensure_eq!(fetch(&p).await?.attempt, 1, "attempt of the first fetch");
    Ok(())
}

/// Each fetch after an abandon counts one more attempt.
pub async fn abandon_and_refetch_counts_attempts(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    for expected in 1..=5 {
        let item = fetch(&p).await?;
        ensure_eq!(item.attempt, expected, "attempt");
        p.abandon_orchestration_item(&item.lock_token, None).await?;
    }
    Ok(())
}

/// A fetch after the lease ran out counts as another attempt.
pub async fn lease_expiry_counts_an_attempt(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    fetch_with_lock(&p, SHORT_LOCK).await?;
    let again = wait_for("the expired lock", CONDITION_TIMEOUT, || try_fetch(&p)).await?;
    ensure_eq!(again.attempt, 2, "attempt after expiry");
    Ok(())
}

/// The item's attempt is the highest among its messages: a message fetched twice before keeps the
/// item's count even when a fresh message joins it.
pub async fn attempt_is_the_highest_among_messages(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    p.abandon_orchestration_item(&item.lock_token, None).await?;
    p.enqueue_message(external_event("i1", "fresh", "1")).await?;
    let item = fetch(&p).await?;
    ensure_eq!(item.messages.len(), 2, "messages");
    ensure_eq!(item.attempt, 2, "attempt with one old and one fresh message");
    p.abandon_orchestration_item(&item.lock_token, None).await?;
    ensure_eq!(fetch(&p).await?.attempt, 3, "attempt after another abandon");
    Ok(())
}

/// Messages that arrive after a turn's ack start again at attempt 1: the count belongs to messages,
/// not to the instance.
pub async fn new_messages_start_at_attempt_one(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    p.abandon_orchestration_item(&item.lock_token, None).await?;
    let item = fetch(&p).await?;
    ensure_eq!(item.attempt, 2, "attempt before the ack");
    Turn::after(&item).commit(&p, &item).await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    ensure_eq!(fetch(&p).await?.attempt, 1, "attempt of messages after the ack");
    Ok(())
}

/// The provider does not drop messages however often they fail: twelve abandons later, the same
/// messages are still there with attempt 13.
pub async fn provider_never_drops_repeatedly_abandoned_messages(
    factory: &dyn ProviderFactory,
) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let first = fetch(&p).await?;
    p.abandon_orchestration_item(&first.lock_token, None).await?;
    for _ in 0..11 {
        let item = fetch(&p).await?;
        p.abandon_orchestration_item(&item.lock_token, None).await?;
    }
    let item = fetch(&p).await?;
    ensure_eq!(item.attempt, 13, "attempt");
    ensure_eq!(item.messages, first.messages, "messages");
    Ok(())
}

/// An abandon with a delay keeps the count: the fetch after the delay is attempt 2.
pub async fn delayed_abandon_keeps_the_count(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    p.abandon_orchestration_item(&item.lock_token, Some(Duration::from_millis(100)))
        .await?;
    let again = wait_for("the delayed instance", CONDITION_TIMEOUT, || try_fetch(&p)).await?;
    ensure_eq!(again.attempt, 2, "attempt after a delayed abandon");
    Ok(())
}

/// Attempt counts are per instance: retries of one instance do not raise another's count.
pub async fn attempts_are_counted_per_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "a").await?;
    for _ in 0..3 {
        let item = fetch_instance(&p, "a").await?;
        p.abandon_orchestration_item(&item.lock_token, None).await?;
    }
    let a = fetch_instance(&p, "a").await?;
    ensure_eq!(a.attempt, 4, "attempt of a");
    create(&p, "b").await?;
    let b = fetch_instance(&p, "b").await?;
    ensure_eq!(b.attempt, 1, "attempt of b");
    Ok(())
}

/// Worker items count attempts too: 1 on the first fetch, then one more per abandon or expired lease.
pub async fn work_item_attempts_count_every_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let first = fetch_work(
        &p,
        &WorkerFetch {
            lock_timeout: LONG_LOCK,
            ..worker()
        },
    )
    .await?;
    ensure_eq!(first.attempt, 1, "first attempt");
    p.abandon_work_item(&first.lock_token, None).await?;
    let second = fetch_work(
        &p,
        &WorkerFetch {
            lock_timeout: SHORT_LOCK,
            ..worker()
        },
    )
    .await?;
    ensure_eq!(second.attempt, 2, "attempt after abandon");
    let any_worker = worker();
    let third = wait_for("the expired worker lease", CONDITION_TIMEOUT, || {
        try_fetch_work(&p, &any_worker)
    })
    .await?;
    ensure_eq!(third.attempt, 3, "attempt after expiry");
    Ok(())
}

/// The provider does not drop worker items however often they fail: ten abandons later the item is
/// still there with attempt 11.
pub async fn provider_never_drops_repeatedly_abandoned_work(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    for _ in 0..10 {
        let lease = fetch_work(&p, &worker()).await?;
        p.abandon_work_item(&lease.lock_token, None).await?;
    }
    let lease = fetch_work(&p, &worker()).await?;
    ensure_eq!(lease.attempt, 11, "attempt");
    ensure_eq!(lease.activity.event_id, 2, "activity");
    Ok(())
}
