//! Leases on both queues: expiry hands work to the next fetcher and voids the old token, renewal
//! extends the lease, and abandon releases at once or after a delay.

use std::time::{Duration, Instant};

use duroxide_core::provider::*;

use crate::support::*;

/// Waits until the instance is fetchable again (its lease ran out) and returns the new item.
async fn refetch_after_expiry(p: &P) -> Result<OrchestrationItem, CheckError> {
    wait_for(
        "the expired instance lock to be fetchable",
        CONDITION_TIMEOUT,
        || try_fetch(p),
    )
    .await
}

async fn refetch_work_after_expiry(p: &P, request: &WorkerFetch) -> Result<WorkItemLease, CheckError> {
    wait_for(
        "the expired worker lease to be fetchable",
        CONDITION_TIMEOUT,
        || try_fetch_work(p, request),
    )
    .await
}

/// When an instance lock's lease runs out, the instance is fetched again with the same messages.
pub async fn expired_instance_lock_is_fetched_again(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let first = fetch_with_lock(&p, SHORT_LOCK).await?;
    let second = refetch_after_expiry(&p).await?;
    ensure_eq!(second.instance_id, first.instance_id, "instance");
    ensure_eq!(second.messages, first.messages, "messages");
    ensure!(
        second.lock_token != first.lock_token,
        "the new lock reused the old token"
    );
    Ok(())
}

/// An ack after the lease ran out fails with `LockLost` and changes nothing, even when no other fetch
/// took the instance meanwhile.
pub async fn ack_after_expiry_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "b").await?;
    create(&p, "a").await?;
    let item = fetch_with_lock(&p, SHORT_LOCK).await?;
    let before = snapshot(&p, "a").await?;
    outlive(SHORT_LOCK).await;
    let result = p
        .ack_orchestration_item(&item.lock_token, everything(Turn::after(&item), "b").build())
        .await;
    expect_kind(result, ProviderErrorKind::LockLost, "ack after the lease ran out")?;
    ensure_unchanged(&p, "a", &before, "after the late ack").await?;
    let again = fetch_instance(&p, "a").await?;
    ensure_eq!(again.messages, item.messages, "messages after the late ack");
    Ok(())
}

/// Once another fetch holds the instance, the old holder's ack fails with `LockLost` and writes
/// nothing; the new holder's ack succeeds.
pub async fn stale_holder_cannot_ack_after_relock(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "a").await?;
    let stale = fetch_with_lock(&p, SHORT_LOCK).await?;
    let fresh = refetch_after_expiry(&p).await?;
    let late = p
        .ack_orchestration_item(&stale.lock_token, Turn::after(&stale).events(3).build())
        .await;
    expect_kind(late, ProviderErrorKind::LockLost, "ack by the stale holder")?;
    ensure!(
        p.read_history("a", 1).await?.is_empty(),
        "the stale ack must not append history"
    );
    let ack = Turn::after(&fresh).events(1).build();
    let expected = ack.history.clone();
    p.ack_orchestration_item(&fresh.lock_token, ack).await?;
    ensure_eq!(
        p.read_history("a", 1).await?,
        expected,
        "history written by the new holder"
    );
    Ok(())
}

/// The stale holder cannot abandon or renew the new holder's lock: both fail with `LockLost` and the
/// instance stays locked.
pub async fn stale_holder_cannot_abandon_or_renew(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "a").await?;
    let stale = fetch_with_lock(&p, SHORT_LOCK).await?;
    let fresh = refetch_after_expiry(&p).await?;
    let abandon = p.abandon_orchestration_item(&stale.lock_token, None).await;
    expect_kind(
        abandon,
        ProviderErrorKind::LockLost,
        "abandon by the stale holder",
    )?;
    let renew = p
        .renew_orchestration_item_lock(&stale.lock_token, LONG_LOCK)
        .await;
    expect_kind(renew, ProviderErrorKind::LockLost, "renew by the stale holder")?;
    no_item(try_fetch(&p).await?, "the new holder's lock must still hold")?;
    Turn::after(&fresh).commit(&p, &fresh).await
}

/// Renewing extends the lease from now: the instance stays locked well past its original lease and the
/// holder can still ack.
pub async fn renew_extends_the_instance_lease(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch_with_lock(&p, RENEWABLE_LOCK).await?;
    p.renew_orchestration_item_lock(&item.lock_token, LONG_LOCK)
        .await?;
    outlive(RENEWABLE_LOCK).await;
    no_item(try_fetch(&p).await?, "the renewed lock must still hold")?;
    Turn::after(&item).commit(&p, &item).await
}

/// Renewing after the lease ran out fails with `LockLost`.
pub async fn renew_after_expiry_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch_with_lock(&p, SHORT_LOCK).await?;
    outlive(SHORT_LOCK).await;
    let renew = p.renew_orchestration_item_lock(&item.lock_token, LONG_LOCK).await;
    expect_kind(
        renew,
        ProviderErrorKind::LockLost,
        "renew after the lease ran out",
    )
}

/// Abandon without delay releases at once: the next fetch returns the instance immediately.
pub async fn abandon_releases_at_once(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    p.abandon_orchestration_item(&item.lock_token, None).await?;
    let again = try_fetch(&p)
        .await?
        .ok_or_else(|| fail("the abandoned instance is not fetchable at once"))?;
    ensure_eq!(again.instance_id, "i1", "instance");
    Ok(())
}

/// Abandon with a delay hides the messages for that long, then they are fetched again.
pub async fn abandon_with_delay_hides_messages_for_the_delay(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let delay = Duration::from_millis(400);
    let abandoned_at = Instant::now();
    p.abandon_orchestration_item(&item.lock_token, Some(delay))
        .await?;
    // Polls from the start: an instance released early shows as coming back before the delay.
    let again = wait_for("the delayed instance", CONDITION_TIMEOUT, || try_fetch(&p)).await?;
    let waited = abandoned_at.elapsed();
    ensure!(
        waited + Duration::from_millis(CLOCK_SLACK_MS) >= delay,
        "the instance came back after {waited:?}, before the {delay:?} delay"
    );
    ensure_eq!(again.messages, item.messages, "messages after the delay");
    Ok(())
}

/// A second abandon with the same token fails with `LockLost`.
pub async fn abandon_twice_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    p.abandon_orchestration_item(&item.lock_token, None).await?;
    let again = p.abandon_orchestration_item(&item.lock_token, None).await;
    expect_kind(again, ProviderErrorKind::LockLost, "second abandon")
}

/// When a worker item's lease runs out, it is fetched again; the old token's ack then fails with
/// `LockLost` and delivers no completion.
pub async fn expired_work_item_is_fetched_again(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let short = WorkerFetch {
        lock_timeout: SHORT_LOCK,
        ..worker()
    };
    let first = fetch_work(&p, &short).await?;
    let second = refetch_work_after_expiry(&p, &worker()).await?;
    ensure_eq!(second.activity, first.activity, "activity");
    ensure!(
        second.lock_token != first.lock_token,
        "the new lease reused the old token"
    );
    let late = p
        .ack_work_item(&first.lock_token, Some(activity_completion("i1", 1, 2)))
        .await;
    expect_kind(late, ProviderErrorKind::LockLost, "ack by the expired holder")?;
    no_item(
        try_fetch(&p).await?,
        "the expired holder's completion must not arrive",
    )?;
    p.ack_work_item(&second.lock_token, None).await?;
    Ok(())
}

/// A worker ack after the lease ran out fails with `LockLost` even if nobody took the item, and the
/// item stays queued.
pub async fn work_item_ack_after_expiry_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(
        &p,
        &WorkerFetch {
            lock_timeout: SHORT_LOCK,
            ..worker()
        },
    )
    .await?;
    outlive(SHORT_LOCK).await;
    let late = p
        .ack_work_item(&lease.lock_token, Some(activity_completion("i1", 1, 2)))
        .await;
    expect_kind(late, ProviderErrorKind::LockLost, "ack after the lease ran out")?;
    no_item(try_fetch(&p).await?, "the late completion must not arrive")?;
    let again = fetch_work(&p, &worker()).await?;
    ensure_eq!(again.activity, lease.activity, "the item is still queued");
    Ok(())
}

/// Renewing a worker lease keeps the item locked past its original lease.
pub async fn renew_extends_the_work_item_lease(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(
        &p,
        &WorkerFetch {
            lock_timeout: RENEWABLE_LOCK,
            ..worker()
        },
    )
    .await?;
    p.renew_work_item_lock(&lease.lock_token, LONG_LOCK).await?;
    outlive(RENEWABLE_LOCK).await;
    no_work(
        try_fetch_work(&p, &worker()).await?,
        "the renewed lease must still hold",
    )?;
    p.ack_work_item(&lease.lock_token, None).await?;
    Ok(())
}

/// Renewing a worker lease after it ran out fails with `LockLost`.
pub async fn work_item_renew_after_expiry_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(
        &p,
        &WorkerFetch {
            lock_timeout: SHORT_LOCK,
            ..worker()
        },
    )
    .await?;
    outlive(SHORT_LOCK).await;
    let renew = p.renew_work_item_lock(&lease.lock_token, LONG_LOCK).await;
    expect_kind(
        renew,
        ProviderErrorKind::LockLost,
        "renew after the lease ran out",
    )
}

/// Abandoning a worker item releases it at once.
pub async fn work_item_abandon_releases_at_once(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    p.abandon_work_item(&lease.lock_token, None).await?;
    let again = try_fetch_work(&p, &worker())
        .await?
        .ok_or_else(|| fail("the abandoned item is not fetchable at once"))?;
    ensure_eq!(again.activity, lease.activity, "activity");
    Ok(())
}

/// Abandoning a worker item with a delay hides it for that long, then it is fetched again.
pub async fn work_item_abandon_with_delay_hides_it(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    let delay = Duration::from_millis(400);
    let abandoned_at = Instant::now();
    p.abandon_work_item(&lease.lock_token, Some(delay)).await?;
    // Polls from the start: an item released early shows as coming back before the delay.
    let any_worker = worker();
    let again = wait_for("the delayed worker item", CONDITION_TIMEOUT, || {
        try_fetch_work(&p, &any_worker)
    })
    .await?;
    let waited = abandoned_at.elapsed();
    ensure!(
        waited + Duration::from_millis(CLOCK_SLACK_MS) >= delay,
        "the item came back after {waited:?}, before the {delay:?} delay"
    );
    ensure_eq!(again.activity, lease.activity, "activity");
    Ok(())
}
