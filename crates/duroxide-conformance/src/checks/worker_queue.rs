//! Worker queue semantics: one item per fetch in enqueue order, peek-lock, ack with completion, and
//! cancelled or unknown items.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use duroxide_core::provider::*;

use crate::support::*;

/// Worker items are fetched one at a time in enqueue order, also across turns.
pub async fn work_items_are_fetched_in_enqueue_order(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", (2..5).map(|e| work_item("i1", e)).collect()).await?;
    add_work(&p, "i1", (5..8).map(|e| work_item("i1", e)).collect()).await?;
    for expected in 2..8 {
        let lease = fetch_work(&p, &worker()).await?;
        ensure_eq!(
            lease.activity.event_id,
            expected,
            "event id of the next worker item"
        );
    }
    no_work(try_fetch_work(&p, &worker()).await?, "all items are locked")
}

/// A lease carries the item exactly as enqueued: activity identity, payload, tag, session, attempt 1.
pub async fn lease_carries_the_enqueued_item(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let item = work_item("i1", 2).tagged("gpu");
    seed_work(&p, "i1", vec![item.clone()]).await?;
    let lease = fetch_work(&p, &worker_with(TagFilter::Any)).await?;
    ensure_eq!(lease.activity, item.activity, "activity");
    ensure_eq!(lease.payload, item.payload, "payload");
    ensure_eq!(lease.tag, item.tag, "tag");
    ensure_eq!(lease.session_id, None, "session");
    ensure_eq!(lease.attempt, 1, "attempt");
    Ok(())
}

/// A locked worker item is not handed out again while its lease lasts.
pub async fn locked_work_item_is_not_fetched_again(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    fetch_work(&p, &worker()).await?;
    no_work(try_fetch_work(&p, &worker()).await?, "the only item is locked")
}

/// `ack_work_item` deletes the item: it is never fetched again and the worker queue is empty.
pub async fn ack_work_item_deletes_it(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    ensure_eq!(
        p.get_queue_depths().await?.worker_queue,
        1,
        "worker queue before the ack"
    );
    let lease = fetch_work(&p, &worker()).await?;
    p.ack_work_item(&lease.lock_token, None).await?;
    ensure_eq!(
        p.get_queue_depths().await?.worker_queue,
        0,
        "worker queue after the ack"
    );
    no_work(try_fetch_work(&p, &worker()).await?, "after the ack")
}

/// `ack_work_item` with a completion enqueues it for the item's instance, which becomes fetchable with
/// exactly that message.
pub async fn ack_work_item_enqueues_the_completion(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    let done = activity_completion("i1", 1, 2);
    p.ack_work_item(&lease.lock_token, Some(done.clone())).await?;
    let item = fetch_instance(&p, "i1").await?;
    ensure_eq!(
        payloads(&item),
        payloads_of(&[done]),
        "messages after the completion"
    );
    Ok(())
}

/// Failed activities report back the same way: the failure message is enqueued.
pub async fn ack_work_item_enqueues_a_failure(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    let failed = activity_failure("i1", 1, 2);
    p.ack_work_item(&lease.lock_token, Some(failed.clone())).await?;
    let item = fetch_instance(&p, "i1").await?;
    ensure_eq!(
        payloads(&item),
        payloads_of(&[failed]),
        "messages after the failure"
    );
    Ok(())
}

/// `ack_work_item` without a completion only deletes the item; no orchestrator message appears.
pub async fn ack_without_completion_enqueues_nothing(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    p.ack_work_item(&lease.lock_token, None).await?;
    no_item(try_fetch(&p).await?, "no completion was given")
}

/// A completion addressed to an instance that does not exist is dropped: the ack succeeds, the item is
/// gone and no instance appears.
pub async fn completion_for_missing_instance_is_dropped(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    p.ack_work_item(&lease.lock_token, Some(activity_completion("ghost", 1, 2)))
        .await?;
    ensure_eq!(p.get_instance_info("ghost").await?, None, "ghost instance");
    ensure_eq!(
        p.get_queue_depths().await?,
        QueueDepths::default(),
        "queue depths"
    );
    Ok(())
}

/// Acking the same lease twice fails the second time with `LockLost` and delivers one completion only.
pub async fn ack_work_item_twice_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    p.ack_work_item(&lease.lock_token, Some(activity_completion("i1", 1, 2)))
        .await?;
    let again = p
        .ack_work_item(&lease.lock_token, Some(activity_completion("i1", 1, 3)))
        .await;
    expect_kind(again, ProviderErrorKind::LockLost, "second ack of one lease")?;
    let item = fetch_instance(&p, "i1").await?;
    ensure_eq!(item.messages.len(), 1, "completions delivered");
    Ok(())
}

/// `ack_work_item` with an unknown token is `LockLost`, enqueues nothing and leaves the real lease alone.
pub async fn ack_work_item_with_unknown_token_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    let bogus = p
        .ack_work_item("no-such-token", Some(activity_completion("i1", 1, 2)))
        .await;
    expect_kind(bogus, ProviderErrorKind::LockLost, "ack with an unknown token")?;
    no_item(
        try_fetch(&p).await?,
        "the refused ack must not enqueue its completion",
    )?;
    ensure_eq!(
        p.get_queue_depths().await?.worker_queue,
        1,
        "the item stays queued"
    );
    p.ack_work_item(&lease.lock_token, None).await?;
    Ok(())
}

/// `renew_work_item_lock` with an unknown token is `LockLost`.
pub async fn renew_work_item_with_unknown_token_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let result = p.renew_work_item_lock("no-such-token", LONG_LOCK).await;
    expect_kind(result, ProviderErrorKind::LockLost, "renew with an unknown token")
}

/// An item cancelled by a turn while a worker holds it: the worker's ack fails with `LockLost` and its
/// completion is not delivered.
pub async fn cancelled_work_item_ack_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let item = work_item("i1", 2);
    seed_work(&p, "i1", vec![item.clone()]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    turn(&p, "i1", |t| t.cancel(item.activity.clone())).await?;
    let ack = p
        .ack_work_item(&lease.lock_token, Some(activity_completion("i1", 1, 2)))
        .await;
    expect_kind(ack, ProviderErrorKind::LockLost, "ack of a cancelled item")?;
    no_item(
        try_fetch(&p).await?,
        "the cancelled item's completion must be discarded",
    )
}

/// Renewing an item that a turn cancelled fails with `LockLost`: that is how a worker learns of the
/// cancellation.
pub async fn cancelled_work_item_renew_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let item = work_item("i1", 2);
    seed_work(&p, "i1", vec![item.clone()]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    p.renew_work_item_lock(&lease.lock_token, LONG_LOCK).await?;
    turn(&p, "i1", |t| t.cancel(item.activity.clone())).await?;
    let renew = p.renew_work_item_lock(&lease.lock_token, LONG_LOCK).await;
    expect_kind(renew, ProviderErrorKind::LockLost, "renew of a cancelled item")
}

/// A fetch on an empty worker queue returns `None`.
pub async fn fetch_work_on_empty_queue_returns_none(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    no_work(try_fetch_work(&p, &worker()).await?, "empty worker queue")?;
    no_work(
        try_fetch_work(&p, &worker_with(TagFilter::Any)).await?,
        "empty worker queue, any tag",
    )
}

/// Items of several instances are all served.
pub async fn items_of_all_instances_are_served(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    for id in ["a", "b", "c"] {
        seed_work(&p, id, vec![work_item(id, 2), work_item(id, 3)]).await?;
    }
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let lease = fetch_work(&p, &worker()).await?;
        ensure!(
            seen.insert(lease.activity.clone()),
            "{:?} handed out twice",
            lease.activity
        );
    }
    no_work(try_fetch_work(&p, &worker()).await?, "all six items are locked")
}

/// Many concurrent workers never get the same item: each of 40 items is leased exactly once.
pub async fn concurrent_workers_never_share_an_item(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", (2..42).map(|e| work_item("i1", e)).collect()).await?;
    let leased = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (p, leased) = (p.clone(), leased.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(lease) = p.fetch_work_item(&worker(), std::time::Duration::ZERO).await? {
                leased.lock().expect("not poisoned").push(lease.activity.event_id);
                tokio::task::yield_now().await;
            }
            Ok::<_, ProviderError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| fail(format!("worker task panicked: {e}")))??;
    }
    let mut ids = leased.lock().expect("not poisoned").clone();
    ids.sort_unstable();
    ensure_eq!(
        ids,
        (2..42).collect::<Vec<u64>>(),
        "event ids leased across all workers"
    );
    Ok(())
}
