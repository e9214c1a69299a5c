//! Instance KV: turns change the current state that clients read; a fetched item carries the state as
//! it was when its execution started (the execution's own changes replay from history instead).

use std::collections::BTreeMap;

use duroxide_core::provider::*;

use crate::support::*;

fn as_map(entries: &[KvEntry]) -> BTreeMap<String, String> {
    entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The next fetch of `instance` (after a nudge), to look at its KV snapshot.
async fn next_item(p: &P, instance: &str) -> Result<OrchestrationItem, CheckError> {
    p.enqueue_message(external_event(instance, "look", "null"))
        .await?;
    fetch_instance(p, instance).await
}

/// A `Set` is visible to clients at once: `get_kv_value` and `get_kv_entries` return value and
/// timestamp as written.
pub async fn set_is_visible_to_clients(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let at = now_ms();
    start_with(&p, "i1", |t| t.kv_set("color", "\"blue\"", at)).await?;
    ensure_eq!(
        p.get_kv_value("i1", "color").await?,
        Some("\"blue\"".into()),
        "get_kv_value"
    );
    let entries = p.get_kv_entries("i1").await?;
    ensure_eq!(
        entries,
        vec![KvEntry {
            key: "color".into(),
            value: "\"blue\"".into(),
            updated_at_ms: at
        }],
        "get_kv_entries"
    );
    Ok(())
}

/// The current execution's changes are not in the snapshot: a fetch in the same execution still sees
/// the KV state of the execution's start (empty here).
pub async fn current_execution_changes_are_not_in_the_snapshot(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("a", "1", now_ms())).await?;
    let item = next_item(&p, "i1").await?;
    ensure!(
        item.kv_snapshot.is_empty(),
        "snapshot of execution 1 holds its own changes: {:?}",
        item.kv_snapshot
    );
    ensure_eq!(p.get_kv_value("i1", "a").await?, Some("1".into()), "client read");
    Ok(())
}

/// The snapshot is frozen for the execution: a key the execution overwrites keeps its start value in
/// the snapshot, while clients read the new value.
pub async fn snapshot_is_frozen_for_the_execution(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("a", "old", 1)).await?;
    continue_as_new(&p, "i1").await?;
    turn(&p, "i1", |t| t.kv_set("a", "new", 2)).await?;
    let item = next_item(&p, "i1").await?;
    ensure_eq!(
        as_map(&item.kv_snapshot),
        map(&[("a", "old")]),
        "snapshot of execution 2"
    );
    ensure_eq!(
        p.get_kv_value("i1", "a").await?,
        Some("new".into()),
        "client read"
    );
    Ok(())
}

/// A new execution's snapshot holds the previous executions' changes, with their timestamps.
pub async fn next_execution_snapshot_has_previous_changes(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("a", "1", 111)).await?;
    turn(&p, "i1", |t| t.kv_set("b", "2", 222)).await?;
    continue_as_new(&p, "i1").await?;
    let item = next_item(&p, "i1").await?;
    let mut snapshot = item.kv_snapshot.clone();
    snapshot.sort_by(|x, y| x.key.cmp(&y.key));
    let expected = vec![
        KvEntry {
            key: "a".into(),
            value: "1".into(),
            updated_at_ms: 111,
        },
        KvEntry {
            key: "b".into(),
            value: "2".into(),
            updated_at_ms: 222,
        },
    ];
    ensure_eq!(snapshot, expected, "snapshot of execution 2");
    Ok(())
}

/// Changes made by the ack that starts the next execution belong to that execution: they are not in
/// its snapshot, but changes of the previous execution's last turn are; clients see all of them.
pub async fn starting_ack_changes_stay_out_of_the_new_snapshot(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("first", "1", 1)).await?;
    turn(&p, "i1", |t| t.kv_set("last-turn", "2", 2).continue_as_new()).await?;
    let item = fetch_instance(&p, "i1").await?;
    Turn::next_execution(&item)
        .kv_set("starting", "3", 3)
        .commit(&p, &item)
        .await?;
    let item = next_item(&p, "i1").await?;
    ensure_eq!(
        as_map(&item.kv_snapshot),
        map(&[("first", "1"), ("last-turn", "2")]),
        "snapshot of execution 2"
    );
    let clients = as_map(&p.get_kv_entries("i1").await?);
    ensure_eq!(
        clients,
        map(&[("first", "1"), ("last-turn", "2"), ("starting", "3")]),
        "client view"
    );
    Ok(())
}

/// A `Delete` removes the key for clients.
pub async fn delete_removes_the_key(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("a", "1", 1).kv_set("b", "2", 2)).await?;
    turn(&p, "i1", |t| t.kv_delete("a")).await?;
    ensure_eq!(p.get_kv_value("i1", "a").await?, None, "deleted key");
    ensure_eq!(
        as_map(&p.get_kv_entries("i1").await?),
        map(&[("b", "2")]),
        "entries"
    );
    Ok(())
}

/// Setting an existing key replaces its value and timestamp; the key is not duplicated.
pub async fn set_overwrites_value_and_timestamp(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("a", "1", 10)).await?;
    turn(&p, "i1", |t| t.kv_set("a", "2", 20)).await?;
    let entries = p.get_kv_entries("i1").await?;
    ensure_eq!(
        entries,
        vec![KvEntry {
            key: "a".into(),
            value: "2".into(),
            updated_at_ms: 20
        }],
        "entries"
    );
    Ok(())
}

/// Reading a key that was never set gives `None`; an instance without KV has no entries.
pub async fn missing_key_reads_none(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    ensure_eq!(p.get_kv_value("i1", "nope").await?, None, "missing key");
    ensure!(
        p.get_kv_entries("i1").await?.is_empty(),
        "entries of an instance without KV"
    );
    Ok(())
}

/// KV is per instance: the same key in two instances holds two values.
pub async fn kv_is_per_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "a", |t| t.kv_set("k", "from a", 1)).await?;
    start_with(&p, "b", |t| t.kv_set("k", "from b", 2)).await?;
    ensure_eq!(
        p.get_kv_value("a", "k").await?,
        Some("from a".into()),
        "a's value"
    );
    ensure_eq!(
        p.get_kv_value("b", "k").await?,
        Some("from b".into()),
        "b's value"
    );
    turn(&p, "a", |t| t.kv_delete("k")).await?;
    ensure_eq!(
        p.get_kv_value("b", "k").await?,
        Some("from b".into()),
        "b's value after a's delete"
    );
    Ok(())
}

/// A refused ack applies none of its KV changes, neither sets nor deletes.
pub async fn refused_ack_applies_no_kv_change(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("keep", "1", 1)).await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let item = fetch(&p).await?;
    let ack = Turn::after(&item)
        .kv_delete("keep")
        .kv_set("new", "2", 2)
        .raw_record(1)
        .build();
    expect_kind(
        p.ack_orchestration_item(&item.lock_token, ack).await,
        ProviderErrorKind::Permanent,
        "refused ack",
    )?;
    ensure_eq!(
        as_map(&p.get_kv_entries("i1").await?),
        map(&[("keep", "1")]),
        "entries"
    );
    Ok(())
}

/// Changes within one ack apply in order: set-then-delete leaves nothing, set-then-set keeps the last.
pub async fn changes_within_one_ack_apply_in_order(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| {
        t.kv_set("gone", "1", 1)
            .kv_delete("gone")
            .kv_set("j", "1", 1)
            .kv_set("j", "2", 2)
    })
    .await?;
    turn(&p, "i1", |t| t.kv_delete("back").kv_set("back", "3", 3)).await?;
    ensure_eq!(
        as_map(&p.get_kv_entries("i1").await?),
        map(&[("back", "3"), ("j", "2")]),
        "entries"
    );
    Ok(())
}

/// Deleting a key that does not exist is harmless: the ack succeeds and other keys stay.
pub async fn delete_of_a_missing_key_is_harmless(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("a", "1", 1)).await?;
    turn(&p, "i1", |t| t.kv_delete("never-set")).await?;
    ensure_eq!(
        as_map(&p.get_kv_entries("i1").await?),
        map(&[("a", "1")]),
        "entries"
    );
    Ok(())
}

/// A delete in an earlier execution is reflected in the next snapshot: the key is absent.
pub async fn snapshot_reflects_earlier_deletes(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("a", "1", 1).kv_set("b", "2", 2)).await?;
    turn(&p, "i1", |t| t.kv_delete("b")).await?;
    continue_as_new(&p, "i1").await?;
    let item = next_item(&p, "i1").await?;
    ensure_eq!(
        as_map(&item.kv_snapshot),
        map(&[("a", "1")]),
        "snapshot of execution 2"
    );
    Ok(())
}

/// Snapshots accumulate over executions: execution 3 starts with what executions 1 and 2 wrote.
pub async fn snapshots_accumulate_over_executions(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("one", "1", 1)).await?;
    continue_as_new(&p, "i1").await?;
    turn(&p, "i1", |t| t.kv_set("two", "2", 2)).await?;
    continue_as_new(&p, "i1").await?;
    let item = next_item(&p, "i1").await?;
    ensure_eq!(item.instance.current_execution_id, 3, "execution");
    ensure_eq!(
        as_map(&item.kv_snapshot),
        map(&[("one", "1"), ("two", "2")]),
        "snapshot of execution 3"
    );
    Ok(())
}
