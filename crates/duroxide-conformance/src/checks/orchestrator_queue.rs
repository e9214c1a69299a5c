//! Orchestrator queue semantics: creating instances, enqueueing, FIFO delivery, one instance per item,
//! and messages addressed to instances that do not exist.

use std::sync::Arc;

use duroxide_core::provider::*;

use crate::support::*;

/// `create_instance` enqueues its start message: the first fetch returns the new instance with exactly
/// that message, byte for byte.
pub async fn create_instance_enqueues_start_message(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let start = start_message("i1");
    ensure!(
        p.create_instance(start.clone()).await?,
        "create_instance of a new id returns true"
    );
    let item = fetch(&p).await?;
    ensure_eq!(item.instance_id, "i1", "fetched instance");
    ensure_eq!(payloads(&item), payloads_of(&[start]), "fetched messages");
    Ok(())
}

/// A second `create_instance` for an existing id returns `false` and changes nothing: the instance keeps
/// its metadata and only the first start message is queued (idempotent start).
pub async fn create_instance_is_idempotent(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let first = start_message("i1");
    create(&p, "i1").await?;
    let before = p.get_instance_info("i1").await?;
    let mut second = start_message("i1");
    second.payload = external_event("i1", "different", "1").payload;
    second.creates = Some(InstanceCreation {
        name: "Other".into(),
        version: Some("9".into()),
        parent_instance_id: None,
    });
    ensure_eq!(
        p.create_instance(second).await?,
        false,
        "create_instance of an existing id"
    );
    ensure_eq!(
        p.get_instance_info("i1").await?,
        before,
        "instance info after the duplicate create"
    );
    let item = fetch(&p).await?;
    ensure_eq!(
        payloads(&item),
        payloads_of(&[first]),
        "queued messages after the duplicate create"
    );
    Ok(())
}

/// `create_instance` with a message that has no `creates` is `InvalidInput` and creates nothing.
pub async fn create_instance_without_creates_is_invalid_input(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let result = p.create_instance(external_event("i1", "e", "1")).await;
    expect_kind(
        result,
        ProviderErrorKind::InvalidInput,
        "create_instance without creates",
    )?;
    ensure_eq!(
        p.get_instance_info("i1").await?,
        None,
        "instance after the refused create"
    );
    no_item(try_fetch(&p).await?, "after the refused create")
}

/// A created instance records name, version and parent from `creates`, is `Running` on execution 1,
/// and has no output yet.
pub async fn create_instance_records_metadata(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let mut msg = start_message("i1");
    msg.creates = Some(InstanceCreation {
        name: "Billing".into(),
        version: Some("2.1.0".into()),
        parent_instance_id: None,
    });
    ensure!(p.create_instance(msg).await?, "create_instance returns true");
    let info = p
        .get_instance_info("i1")
        .await?
        .ok_or_else(|| fail("created instance has no info"))?;
    ensure_eq!(info.instance_id, "i1", "instance id");
    ensure_eq!(info.name, "Billing", "name");
    ensure_eq!(info.version.as_deref(), Some("2.1.0"), "version");
    ensure_eq!(info.parent_instance_id, None, "parent");
    ensure_eq!(info.status, InstanceStatus::Running, "status");
    ensure_eq!(info.current_execution_id, 1, "current execution");
    ensure_eq!(info.output, None, "output");
    Ok(())
}

/// `create_instance` also creates execution 1: `Running`, no events, not completed.
pub async fn create_instance_creates_execution_one(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    ensure_eq!(p.list_executions("i1").await?, vec![1], "executions");
    let exec = p
        .get_execution_info("i1", 1)
        .await?
        .ok_or_else(|| fail("execution 1 has no info"))?;
    ensure_eq!(exec.execution_id, 1, "execution id");
    ensure_eq!(exec.status, ExecutionStatus::Running, "execution status");
    ensure_eq!(exec.event_count, 0, "event count");
    ensure_eq!(exec.completed_at_ms, None, "completed_at");
    ensure!(
        p.read_history("i1", 1).await?.is_empty(),
        "execution 1 starts without history"
    );
    Ok(())
}

/// `enqueue_message` to an instance that does not exist fails with `NotFound` and queues nothing.
pub async fn enqueue_to_missing_instance_is_not_found(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let result = p.enqueue_message(external_event("ghost", "e", "1")).await;
    expect_kind(
        result,
        ProviderErrorKind::NotFound,
        "enqueue to a missing instance",
    )?;
    ensure_eq!(
        p.get_instance_info("ghost").await?,
        None,
        "the message must not create the instance"
    );
    ensure_eq!(
        p.get_queue_depths().await?,
        QueueDepths::default(),
        "queue depths"
    );
    no_item(try_fetch(&p).await?, "after the refused enqueue")
}

/// One fetch returns every visible message of the instance, in enqueue order.
pub async fn messages_are_delivered_in_enqueue_order(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let mut sent = vec![start_message("i1")];
    create(&p, "i1").await?;
    for n in 0..20 {
        let m = external_event("i1", "e", &n.to_string());
        p.enqueue_message(m.clone()).await?;
        sent.push(m);
    }
    let item = fetch(&p).await?;
    ensure_eq!(
        payloads(&item),
        payloads_of(&sent),
        "messages of the fetched item"
    );
    Ok(())
}

/// A fetched item holds only its own instance's messages, even when several instances have work.
pub async fn items_hold_only_their_own_instance_messages(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let ids = ["a", "b", "c"];
    let mut sent = std::collections::HashMap::new();
    for id in ids {
        create(&p, id).await?;
        sent.insert(id.to_string(), vec![start_message(id)]);
    }
    // Interleave the enqueues so a provider that batches by arrival instead of by instance is caught.
    for n in 0..3 {
        for id in ids {
            let m = queue_message(id, "q", &format!("{id}{n}"));
            p.enqueue_message(m.clone()).await?;
            sent.get_mut(id).expect("known id").push(m);
        }
    }
    let mut seen = Vec::new();
    for _ in ids {
        let item = fetch(&p).await?;
        let expected = sent
            .get(&item.instance_id)
            .ok_or_else(|| fail("fetched an unknown instance"))?;
        ensure_eq!(
            payloads(&item),
            payloads_of(expected),
            "messages of {}",
            item.instance_id
        );
        seen.push(item.instance_id.clone());
    }
    seen.sort();
    ensure_eq!(seen, vec!["a", "b", "c"], "instances fetched");
    Ok(())
}

/// Every instance with work is handed out: ten fetches without acks return ten different instances,
/// and an eleventh finds nothing.
pub async fn every_instance_with_work_is_fetched(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    for n in 0..10 {
        create(&p, &format!("i{n}")).await?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let item = fetch(&p).await?;
        ensure!(
            seen.insert(item.instance_id.clone()),
            "{} was handed out twice",
            item.instance_id
        );
    }
    no_item(try_fetch(&p).await?, "every instance is locked")
}

/// A fetch on an empty store returns `None`.
pub async fn fetch_on_empty_store_returns_none(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    no_item(try_fetch(&p).await?, "empty store")
}

/// Payloads are opaque text stored verbatim: quotes, escapes, non-ASCII and a 256 KiB message come back
/// unchanged.
pub async fn payloads_round_trip_verbatim(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let tricky = external_event(
        "i1",
        "ünïcødé \"quoted\" 'single' \\ back\nslash",
        "{\"json\": [1, 2.5e10, null]} 🚀",
    );
    let big = external_event("i1", "big", &"x".repeat(256 * 1024));
    p.enqueue_message(tricky.clone()).await?;
    p.enqueue_message(big.clone()).await?;
    let item = fetch(&p).await?;
    ensure_eq!(
        payloads(&item)[1..].to_vec(),
        payloads_of(&[tricky, big]),
        "payloads"
    );
    Ok(())
}

/// Instance ids are opaque text: an id with spaces, slashes, quotes and non-ASCII works for create,
/// enqueue, fetch and info.
pub async fn instance_ids_are_opaque_text(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let id = "órder 42/'x'\"y\" %_*";
    create(&p, id).await?;
    p.enqueue_message(external_event(id, "e", "1")).await?;
    let item = fetch(&p).await?;
    ensure_eq!(item.instance_id.as_str(), id, "fetched id");
    ensure_eq!(item.messages.len(), 2, "messages");
    let info = p
        .get_instance_info(id)
        .await?
        .ok_or_else(|| fail("no info for the odd id"))?;
    ensure_eq!(info.instance_id.as_str(), id, "info id");
    // `%` and `_` are LIKE wildcards: an id lookup that pattern-matches would find this one too.
    ensure_eq!(
        p.get_instance_info("órder 42/'x'\"y\" ab*").await?,
        None,
        "lookup by a similar id"
    );
    Ok(())
}

/// The fetched item carries the instance's metadata as `get_instance_info` reports it.
pub async fn fetched_item_carries_instance_info(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let msg = child_start_message("child", "parent-id");
    ensure!(p.create_instance(msg).await?, "create_instance returns true");
    let info = p
        .get_instance_info("child")
        .await?
        .ok_or_else(|| fail("no info"))?;
    let item = fetch(&p).await?;
    let got = &item.instance;
    ensure_eq!(got.instance_id, info.instance_id, "instance id");
    ensure_eq!(got.name, info.name, "name");
    ensure_eq!(got.version, info.version, "version");
    ensure_eq!(got.parent_instance_id, info.parent_instance_id, "parent");
    ensure_eq!(got.status, info.status, "status");
    ensure_eq!(
        got.current_execution_id,
        info.current_execution_id,
        "current execution"
    );
    ensure_eq!(got.created_at_ms, info.created_at_ms, "created_at");
    Ok(())
}

/// Before the first turn, a fetched item has no history, an empty KV snapshot and custom status
/// version 0.
pub async fn first_fetch_has_empty_state(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    ensure!(
        item.history.is_empty(),
        "history before the first turn: {:?}",
        item.history
    );
    ensure!(item.kv_snapshot.is_empty(), "kv snapshot before the first turn");
    ensure_eq!(item.custom_status, CustomStatus::default(), "custom status");
    Ok(())
}

/// A later fetch returns the current execution's history exactly as the turns acked it.
pub async fn fetch_returns_the_acked_history(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    let first = Turn::after(&item).events(2).build();
    let mut expected = first.history.clone();
    p.ack_orchestration_item(&item.lock_token, first).await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let item = fetch(&p).await?;
    ensure_eq!(item.history, expected, "history after one turn");
    let second = Turn::after(&item).events(3).build();
    expected.extend(second.history.clone());
    p.ack_orchestration_item(&item.lock_token, second).await?;
    p.enqueue_message(external_event("i1", "e", "2")).await?;
    let item = fetch(&p).await?;
    ensure_eq!(item.history, expected, "history after two turns");
    Ok(())
}

/// A cache that claims to hold `len` events of one execution of one instance.
struct Holds {
    instance: &'static str,
    execution: u64,
    len: u64,
}

impl HistoryCache for Holds {
    fn cached_history_len(&self, instance_id: &str, execution_id: u64) -> Option<u64> {
        (instance_id == self.instance && execution_id == self.execution).then_some(self.len)
    }
}

async fn fetch_cached(p: &P, cache: Holds) -> Result<CachedFetch, CheckError> {
    p.fetch_orchestration_item_cached(LONG_LOCK, EXPECT_WAIT, Arc::new(cache))
        .await?
        .ok_or_else(|| fail("fetch_orchestration_item_cached found no work"))
}

/// A fetch told that the caller holds exactly the stored history may leave it out, and then says how
/// long it is; whatever it does, the rest of the item is a plain fetch's.
pub async fn cached_fetch_leaves_out_only_a_history_held_whole(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    // The starting event and two more.
    let turn = Turn::after(&item).events(2).build();
    let history = turn.history.clone();
    p.ack_orchestration_item(&item.lock_token, turn).await?;
    let event = external_event("i1", "e", "1");
    p.enqueue_message(event.clone()).await?;
    let holds = Holds {
        instance: "i1",
        execution: 1,
        len: 3,
    };
    let fetched = fetch_cached(&p, holds).await?;
    match fetched.omitted_history_len {
        Some(len) => {
            ensure_eq!(len, 3, "the length of the history left out");
            ensure!(fetched.item.history.is_empty(), "a left-out history is empty");
        }
        None => ensure_eq!(fetched.item.history, history, "the history returned in full"),
    }
    ensure_eq!(payloads(&fetched.item), payloads_of(&[event]), "the messages");
    ensure_eq!(fetched.item.instance.current_execution_id, 1, "the execution");
    // The lock is a real one: the ack works.
    Turn::after_len(&fetched.item, 3)
        .events(1)
        .commit(&p, &fetched.item)
        .await?;
    Ok(())
}

/// A fetch whose cache holds a different length, or another execution, returns the whole history.
pub async fn cached_fetch_returns_history_the_cache_lacks(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "i1").await?;
    let item = fetch(&p).await?;
    // The starting event and three more.
    let turn = Turn::after(&item).events(3).build();
    let history = turn.history.clone();
    p.ack_orchestration_item(&item.lock_token, turn).await?;
    for (round, holds) in [
        Holds {
            instance: "i1",
            execution: 1,
            len: 3,
        },
        Holds {
            instance: "i1",
            execution: 1,
            len: 6,
        },
        Holds {
            instance: "i1",
            execution: 2,
            len: 5,
        },
        Holds {
            instance: "other",
            execution: 1,
            len: 5,
        },
    ]
    .into_iter()
    .enumerate()
    {
        p.enqueue_message(external_event("i1", "e", &round.to_string()))
            .await?;
        let (len, execution) = (holds.len, holds.execution);
        let fetched = fetch_cached(&p, holds).await?;
        ensure_eq!(
            fetched.omitted_history_len,
            None,
            "left out with a cache holding {len} events of execution {execution}"
        );
        ensure_eq!(fetched.item.history, history, "the history");
        // Consume the message without growing the history, so every round sees the same one.
        p.ack_orchestration_item(&fetched.item.lock_token, Turn::after(&fetched.item).build())
            .await?;
    }
    Ok(())
}

/// A turn's message for another existing instance is enqueued for it.
pub async fn ack_delivers_messages_to_other_instances(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "b").await?;
    create(&p, "a").await?;
    let item = fetch_instance(&p, "a").await?;
    let msg = external_event("b", "from-a", "42");
    Turn::after(&item).message(msg.clone()).commit(&p, &item).await?;
    let item = fetch_instance(&p, "b").await?;
    ensure_eq!(payloads(&item), payloads_of(&[msg]), "b's messages");
    Ok(())
}

/// A turn's message for an instance that does not exist is dropped: the ack succeeds, no instance is
/// created and nothing stays queued.
pub async fn ack_drops_messages_to_missing_instances(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "a").await?;
    let item = fetch(&p).await?;
    Turn::after(&item)
        .message(external_event("ghost", "e", "1"))
        .commit(&p, &item)
        .await?;
    ensure_eq!(p.get_instance_info("ghost").await?, None, "ghost instance");
    ensure_eq!(
        p.get_queue_depths().await?.orchestrator_queue,
        0,
        "orchestrator queue depth"
    );
    no_item(try_fetch(&p).await?, "after dropping the message")
}

/// A turn's message with `creates` starts its target: the instance exists with name, version and
/// parent link, has execution 1, and is fetchable with that message.
pub async fn ack_message_with_creates_starts_the_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "parent").await?;
    let item = fetch(&p).await?;
    let child = child_start_message("child", "parent");
    Turn::after(&item)
        .message(child.clone())
        .commit(&p, &item)
        .await?;
    let info = p
        .get_instance_info("child")
        .await?
        .ok_or_else(|| fail("child was not created"))?;
    ensure_eq!(info.name, "ChildOrchestration", "child name");
    ensure_eq!(info.version.as_deref(), Some(VERSION), "child version");
    ensure_eq!(info.parent_instance_id.as_deref(), Some("parent"), "child parent");
    ensure_eq!(info.status, InstanceStatus::Running, "child status");
    ensure_eq!(p.list_executions("child").await?, vec![1], "child executions");
    let item = fetch_instance(&p, "child").await?;
    ensure_eq!(payloads(&item), payloads_of(&[child]), "child messages");
    Ok(())
}

/// A turn's message with `creates` for an instance that already exists is dropped: the existing
/// instance keeps its metadata and receives nothing.
pub async fn ack_message_with_creates_for_existing_instance_is_dropped(
    factory: &dyn ProviderFactory,
) -> CheckResult {
    let p = factory.create().await;
    start(&p, "child").await?;
    let before = p.get_instance_info("child").await?;
    create(&p, "parent").await?;
    let item = fetch_instance(&p, "parent").await?;
    Turn::after(&item)
        .message(child_start_message("child", "parent"))
        .commit(&p, &item)
        .await?;
    let after = p.get_instance_info("child").await?;
    ensure_eq!(
        after.as_ref().map(|i| (&i.name, &i.parent_instance_id)),
        before.as_ref().map(|i| (&i.name, &i.parent_instance_id)),
        "existing instance metadata"
    );
    no_item(try_fetch(&p).await?, "the duplicate start must not be queued")
}

/// A turn may send a message to its own instance; it is fetched by the next turn, not lost with the
/// consumed ones.
pub async fn ack_message_to_own_instance_arrives_next_turn(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "a").await?;
    let item = fetch(&p).await?;
    let own = external_event("a", "self", "1");
    Turn::after(&item).message(own.clone()).commit(&p, &item).await?;
    let item = fetch_instance(&p, "a").await?;
    ensure_eq!(payloads(&item), payloads_of(&[own]), "messages of the next turn");
    Ok(())
}

/// Messages addressed to missing instances, refused or dropped, never hold back other instances'
/// work.
pub async fn missing_instance_messages_never_block_work(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "sender").await?;
    let item = fetch(&p).await?;
    let mut t = Turn::after(&item);
    for n in 0..5 {
        t = t.message(external_event(&format!("ghost{n}"), "e", "1"));
        let refused = p
            .enqueue_message(external_event(&format!("ghost{n}"), "e", "2"))
            .await;
        expect_kind(
            refused,
            ProviderErrorKind::NotFound,
            "enqueue to a missing instance",
        )?;
    }
    t.commit(&p, &item).await?;
    create(&p, "worker").await?;
    let item = fetch_instance(&p, "worker").await?;
    ensure_eq!(item.messages.len(), 1, "worker's messages");
    Ok(())
}
