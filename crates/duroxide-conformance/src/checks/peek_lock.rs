//! Peek-lock on the orchestrator queue: fetched messages stay until acked, the ack deletes exactly what
//! was fetched, and lock tokens are unique and single-use.

use std::collections::HashSet;

use duroxide_core::provider::*;

use crate::support::*;

/// Abandoned messages are not lost: the next fetch returns the same messages again.
pub async fn abandoned_messages_are_fetched_again(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let first = fetch(&p).await?;
    p.abandon_orchestration_item(&first.lock_token, None).await?;
    let second = fetch(&p).await?;
    ensure_eq!(second.instance_id, first.instance_id, "instance");
    ensure_eq!(second.messages, first.messages, "messages after abandon");
    Ok(())
}

/// Messages enqueued after the fetch survive its ack: the ack deletes only the messages it fetched.
pub async fn ack_keeps_messages_enqueued_after_the_fetch(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let late = external_event("i1", "late", "1");
    p.enqueue_message(late.clone()).await?;
    Turn::after(&item).commit(&p, &item).await?;
    let next = fetch_instance(&p, "i1").await?;
    ensure_eq!(payloads(&next), payloads_of(&[late]), "messages of the next turn");
    Ok(())
}

/// While locked, an instance is not fetched again, not even when new messages arrive for it.
pub async fn locked_instance_is_not_fetched_again(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let _held = fetch(&p).await?;
    no_item(try_fetch(&p).await?, "the instance is locked")?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    no_item(try_fetch(&p).await?, "a new message must not unlock the instance")
}

/// After an ack that consumed every message, the instance is idle: nothing is fetchable.
pub async fn acked_instance_without_messages_is_idle(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let item = fetch(&p).await?;
    Turn::after(&item).commit(&p, &item).await?;
    no_item(try_fetch(&p).await?, "every message was consumed")?;
    ensure_eq!(
        p.get_queue_depths().await?.orchestrator_queue,
        0,
        "orchestrator queue depth"
    );
    Ok(())
}

/// A lock token is single-use: a second ack fails with `LockLost` and appends nothing.
pub async fn second_ack_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let ack = Turn::after(&item).build();
    let appended = ack.history.len();
    p.ack_orchestration_item(&item.lock_token, ack).await?;
    let again = TurnAck {
        execution_id: 1,
        history: vec![record(10, filler_kind(10))],
        ..TurnAck::default()
    };
    expect_kind(
        p.ack_orchestration_item(&item.lock_token, again).await,
        ProviderErrorKind::LockLost,
        "second ack",
    )?;
    ensure_eq!(p.read_history("i1", 1).await?.len(), appended, "history length");
    Ok(())
}

/// After an ack, the token cannot abandon: `LockLost`.
pub async fn abandon_after_ack_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    Turn::after(&item).commit(&p, &item).await?;
    let result = p.abandon_orchestration_item(&item.lock_token, None).await;
    expect_kind(result, ProviderErrorKind::LockLost, "abandon after ack")
}

/// After an ack, the token cannot renew: `LockLost`.
pub async fn renew_after_ack_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    Turn::after(&item).commit(&p, &item).await?;
    let result = p.renew_orchestration_item_lock(&item.lock_token, LONG_LOCK).await;
    expect_kind(result, ProviderErrorKind::LockLost, "renew after ack")
}

/// An ack with an unknown token fails with `LockLost`, and the real lock is untouched: the instance
/// stays locked and its holder can still ack.
pub async fn ack_with_unknown_token_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let bogus = p
        .ack_orchestration_item("no-such-token", Turn::after(&item).build())
        .await;
    expect_kind(bogus, ProviderErrorKind::LockLost, "ack with an unknown token")?;
    ensure!(
        p.read_history("i1", 1).await?.is_empty(),
        "the refused ack must not append history"
    );
    no_item(try_fetch(&p).await?, "the real lock is still held")?;
    Turn::after(&item).commit(&p, &item).await
}

/// Abandon with an unknown token fails with `LockLost` and does not release the real lock.
pub async fn abandon_with_unknown_token_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let result = p.abandon_orchestration_item("no-such-token", None).await;
    expect_kind(
        result,
        ProviderErrorKind::LockLost,
        "abandon with an unknown token",
    )?;
    no_item(try_fetch(&p).await?, "the real lock is still held")?;
    Turn::after(&item).commit(&p, &item).await
}

/// Renew with an unknown token fails with `LockLost`.
pub async fn renew_with_unknown_token_is_lock_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let result = p.renew_orchestration_item_lock("no-such-token", LONG_LOCK).await;
    expect_kind(result, ProviderErrorKind::LockLost, "renew with an unknown token")
}

/// A token acks only its own instance: acking `a`'s token writes `a`'s history and leaves `b` locked
/// and untouched.
pub async fn token_acks_only_its_own_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "a").await?;
    create(&p, "b").await?;
    let first = fetch(&p).await?;
    let second = fetch(&p).await?;
    Turn::after(&first).commit(&p, &first).await?;
    ensure!(
        !p.read_history(&first.instance_id, 1).await?.is_empty(),
        "the acked instance has history"
    );
    ensure!(
        p.read_history(&second.instance_id, 1).await?.is_empty(),
        "the other instance is untouched"
    );
    no_item(try_fetch(&p).await?, "the other instance is still locked")?;
    Turn::after(&second).commit(&p, &second).await
}

/// Lock tokens of both queues are distinct, and each is at least 16 bytes long, the least that can hold
/// the 122 random bits the contract asks for.
pub async fn lock_tokens_are_distinct_and_long_enough(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let mut tokens = HashSet::new();
    for n in 0..10 {
        seed_work(&p, &format!("i{n}"), vec![work_item(&format!("i{n}"), 2)]).await?;
    }
    for n in 0..10 {
        p.enqueue_message(external_event(&format!("i{n}"), "e", "1"))
            .await?;
    }
    for _ in 0..10 {
        let item = fetch(&p).await?;
        let work = fetch_work(&p, &worker()).await?;
        for token in [item.lock_token, work.lock_token] {
            ensure!(
                token.len() >= 16,
                "lock token {token:?} is too short to hold 122 random bits"
            );
            ensure!(
                tokens.insert(token.clone()),
                "lock token {token:?} was issued twice"
            );
        }
    }
    Ok(())
}

/// Tokens are unique across stores, as across hosts: two independent stores doing the same thing hand
/// out different tokens (a counter or a clock-based token would collide).
pub async fn lock_tokens_differ_across_stores(factory: &dyn ProviderFactory) -> CheckResult {
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let p = factory.create().await;
        seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
        p.enqueue_message(external_event("i1", "e", "1")).await?;
        let item = fetch(&p).await?;
        let work = fetch_work(&p, &worker()).await?;
        tokens.push((item.lock_token, work.lock_token));
    }
    ensure!(
        tokens[0].0 != tokens[1].0,
        "two stores issued the same orchestration token {:?}",
        tokens[0].0
    );
    ensure!(
        tokens[0].1 != tokens[1].1,
        "two stores issued the same worker token {:?}",
        tokens[0].1
    );
    Ok(())
}

/// Each fetch of an instance issues a new token; the abandoned one no longer acks.
pub async fn relocked_instance_gets_a_new_token(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let first = fetch(&p).await?;
    p.abandon_orchestration_item(&first.lock_token, None).await?;
    let second = fetch(&p).await?;
    ensure!(
        first.lock_token != second.lock_token,
        "the second fetch reused the token {:?}",
        first.lock_token
    );
    let stale = p
        .ack_orchestration_item(&first.lock_token, Turn::after(&first).build())
        .await;
    expect_kind(stale, ProviderErrorKind::LockLost, "ack with the abandoned token")?;
    Turn::after(&second).commit(&p, &second).await
}

/// Abandon keeps the messages in their order, and messages that arrived meanwhile follow them.
pub async fn abandon_keeps_message_order(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let mut sent = vec![start_message("i1")];
    create(&p, "i1").await?;
    for n in 0..3 {
        let m = external_event("i1", "e", &n.to_string());
        p.enqueue_message(m.clone()).await?;
        sent.push(m);
    }
    let item = fetch(&p).await?;
    let late = external_event("i1", "late", "1");
    p.enqueue_message(late.clone()).await?;
    sent.push(late);
    p.abandon_orchestration_item(&item.lock_token, None).await?;
    let item = fetch(&p).await?;
    ensure_eq!(payloads(&item), payloads_of(&sent), "messages after abandon");
    Ok(())
}
