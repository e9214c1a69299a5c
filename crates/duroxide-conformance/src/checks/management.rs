//! Management reads and deletes: listing, instance and execution info with real timestamps, history,
//! instance trees, delete with cascade, bulk delete, pruning, metrics, queue depths and instance stats.

use std::fmt::Debug;

use duroxide_core::provider::*;

use crate::support::*;

async fn info(p: &P, instance: &str) -> Result<InstanceInfo, CheckError> {
    p.get_instance_info(instance)
        .await?
        .ok_or_else(|| fail(format!("{instance} has no info")))
}

async fn sorted_instances(p: &P, status: Option<InstanceStatus>) -> Result<Vec<String>, CheckError> {
    let mut ids = p.list_instances(status).await?;
    ids.sort();
    Ok(ids)
}

/// Starts `child` as a sub-orchestration of the idle `parent` and commits the child's first turn
/// (built by `extra`).
async fn start_child_with(p: &P, parent: &str, child: &str, extra: impl FnOnce(Turn) -> Turn) -> CheckResult {
    turn(p, parent, |t| t.message(child_start_message(child, parent))).await?;
    let item = fetch_instance(p, child).await?;
    extra(Turn::after(&item)).commit(p, &item).await
}

/// Reads of a deleted instance may say `NotFound` or return nothing; anything else is left behind.
#[track_caller]
fn gone<T: Debug + Default + PartialEq>(result: Result<T, ProviderError>, what: &str) -> CheckResult {
    match result {
        Ok(v) if v == T::default() => Ok(()),
        Err(e) if e.kind == ProviderErrorKind::NotFound => Ok(()),
        Ok(v) => Err(fail(format!("{what} of a deleted instance: {v:?}"))),
        Err(e) => Err(fail(format!("{what} of a deleted instance failed: {e}"))),
    }
}

/// Everything of `instance` is gone as far as clients can tell.
async fn ensure_deleted(p: &P, instance: &str) -> CheckResult {
    ensure_eq!(
        p.get_instance_info(instance).await?,
        None,
        "info of deleted {instance}"
    );
    ensure_eq!(
        p.get_execution_info(instance, 1).await?,
        None,
        "execution 1 of deleted {instance}"
    );
    ensure_eq!(
        p.get_custom_status(instance).await?,
        None,
        "custom status of deleted {instance}"
    );
    ensure_eq!(
        p.get_kv_value(instance, "k").await?,
        None,
        "KV of deleted {instance}"
    );
    gone(p.list_executions(instance).await, "list_executions")?;
    gone(p.read_history(instance, 1).await, "read_history")?;
    gone(p.get_kv_entries(instance).await, "get_kv_entries")
}

fn total_events(results: &[usize]) -> u64 {
    results.iter().map(|n| *n as u64).sum()
}

// ---- listing and info -------------------------------------------------------------------------------

/// `list_instances(None)` lists every instance.
pub async fn list_instances_lists_every_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    ensure!(
        p.list_instances(None).await?.is_empty(),
        "an empty store lists no instances"
    );
    for id in ["c", "a", "b"] {
        create(&p, id).await?;
    }
    ensure_eq!(
        sorted_instances(&p, None).await?,
        vec!["a", "b", "c"],
        "instances"
    );
    Ok(())
}

/// `list_instances(Some(status))` lists exactly the instances in that status.
pub async fn list_instances_filters_by_status(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "running").await?;
    start_completed(&p, "completed").await?;
    start_with(&p, "failed", |t| t.fail("boom")).await?;
    create(&p, "fresh").await?;
    ensure_eq!(
        sorted_instances(&p, Some(InstanceStatus::Running)).await?,
        vec!["fresh", "running"],
        "running"
    );
    ensure_eq!(
        sorted_instances(&p, Some(InstanceStatus::Completed)).await?,
        vec!["completed"],
        "completed"
    );
    ensure_eq!(
        sorted_instances(&p, Some(InstanceStatus::Failed)).await?,
        vec!["failed"],
        "failed"
    );
    Ok(())
}

/// `get_instance_info` of an unknown id is `None`.
pub async fn instance_info_of_unknown_is_none(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    create(&p, "known").await?;
    ensure_eq!(p.get_instance_info("unknown").await?, None, "info");
    Ok(())
}

/// Instance timestamps are real epoch milliseconds: `created_at_ms` lies around the create call (not
/// zero, not seconds) and `updated_at_ms` is not before it.
pub async fn instance_info_has_real_timestamps(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let before = now_ms();
    create(&p, "i1").await?;
    let after = now_ms();
    let i = info(&p, "i1").await?;
    // A minute of slack admits a database clock that differs from ours; seconds or zero would not pass.
    ensure!(
        i.created_at_ms + 60_000 >= before && i.created_at_ms <= after + 60_000,
        "created_at_ms {} is not near the create call at {before}..{after}",
        i.created_at_ms
    );
    ensure!(
        i.updated_at_ms >= i.created_at_ms,
        "updated_at_ms {} precedes created_at_ms {}",
        i.updated_at_ms,
        i.created_at_ms
    );
    Ok(())
}

/// `updated_at_ms` moves forward with a turn that changes the instance.
pub async fn updated_at_advances_with_turns(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    let first = info(&p, "i1").await?.updated_at_ms;
    sleep_until_ms(first + 20).await;
    turn(&p, "i1", |t| t.complete("1")).await?;
    let second = info(&p, "i1").await?.updated_at_ms;
    ensure!(
        second > first,
        "updated_at_ms did not advance: {first} then {second}"
    );
    Ok(())
}

/// `list_executions` lists every execution id in ascending order.
pub async fn list_executions_lists_in_order(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    continue_as_new(&p, "i1").await?;
    continue_as_new(&p, "i1").await?;
    ensure_eq!(p.list_executions("i1").await?, vec![1, 2, 3], "executions");
    Ok(())
}

/// `get_execution_info` of an execution that does not exist (or of an unknown instance) is `None`.
pub async fn execution_info_of_unknown_is_none(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "i1").await?;
    ensure_eq!(p.get_execution_info("i1", 2).await?, None, "execution 2");
    ensure_eq!(
        p.get_execution_info("ghost", 1).await?,
        None,
        "execution of an unknown instance"
    );
    Ok(())
}

/// Execution info reports status, output, event count and ordered real times of a completed execution.
pub async fn execution_info_reports_a_completed_execution(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    let before = now_ms();
    start_with(&p, "i1", |t| t.events(2)).await?;
    turn(&p, "i1", |t| t.complete("\"ok\"")).await?;
    let e = p
        .get_execution_info("i1", 1)
        .await?
        .ok_or_else(|| fail("no execution info"))?;
    ensure_eq!(e.execution_id, 1, "execution id");
    ensure_eq!(e.status, ExecutionStatus::Completed, "status");
    ensure_eq!(e.output.as_deref(), Some("\"ok\""), "output");
    ensure_eq!(e.event_count, 4, "event count");
    ensure!(
        e.started_at_ms + 60_000 >= before,
        "started_at_ms {} is not a real time near {before}",
        e.started_at_ms
    );
    let done = e.completed_at_ms.ok_or_else(|| fail("no completed_at_ms"))?;
    ensure!(
        done >= e.started_at_ms,
        "completed_at_ms {done} precedes started_at_ms {}",
        e.started_at_ms
    );
    Ok(())
}

/// `read_history` returns one execution's events in event-id order across several acks.
pub async fn read_history_returns_events_in_id_order(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.events(1)).await?;
    turn(&p, "i1", |t| t.events(3)).await?;
    turn(&p, "i1", |t| t.events(1)).await?;
    let ids: Vec<u64> = p
        .read_history("i1", 1)
        .await?
        .iter()
        .map(|r| r.event_id)
        .collect();
    ensure_eq!(ids, (1..=6).collect::<Vec<u64>>(), "event ids");
    Ok(())
}

// ---- trees ------------------------------------------------------------------------------------------

/// Builds root → (c1 → g1, c2) plus an unrelated instance.
async fn build_tree(p: &P) -> CheckResult {
    start(p, "unrelated").await?;
    start(p, "root").await?;
    start_child_with(p, "root", "c1", |t| t).await?;
    start_child_with(p, "root", "c2", |t| t).await?;
    start_child_with(p, "c1", "g1", |t| t).await
}

/// `get_instance_tree` lists the instance first, then all its descendants (grandchildren too) and
/// nothing else.
pub async fn instance_tree_lists_root_then_descendants(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    build_tree(&p).await?;
    let tree = p.get_instance_tree("root").await?;
    ensure_eq!(tree.first().map(String::as_str), Some("root"), "first entry");
    let mut rest = tree[1..].to_vec();
    rest.sort();
    ensure_eq!(rest, vec!["c1", "c2", "g1"], "descendants");
    Ok(())
}

/// The tree of an inner node is its subtree; a leaf's tree is the leaf alone.
pub async fn instance_tree_of_a_subtree_and_a_leaf(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    build_tree(&p).await?;
    ensure_eq!(p.get_instance_tree("c1").await?, vec!["c1", "g1"], "tree of c1");
    ensure_eq!(p.get_instance_tree("g1").await?, vec!["g1"], "tree of g1");
    Ok(())
}

// ---- delete -----------------------------------------------------------------------------------------

/// Deleting an unknown instance is `NotFound`.
pub async fn delete_unknown_instance_is_not_found(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    expect_kind(
        p.delete_instance("ghost", false).await,
        ProviderErrorKind::NotFound,
        "delete without force",
    )?;
    expect_kind(
        p.delete_instance("ghost", true).await,
        ProviderErrorKind::NotFound,
        "delete with force",
    )
}

/// Deleting a running instance without `force` is `StillRunning` and deletes nothing.
pub async fn delete_running_without_force_is_still_running(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.kv_set("k", "v", 1).work(work_item("i1", 2))).await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    let before = snapshot(&p, "i1").await?;
    expect_kind(
        p.delete_instance("i1", false).await,
        ProviderErrorKind::StillRunning,
        "delete of a running instance",
    )?;
    ensure_unchanged(&p, "i1", &before, "after the refused delete").await
}

/// Deleting a running instance with `force` removes it with its executions, history, KV, custom status,
/// queued messages, timers and worker items.
pub async fn forced_delete_removes_everything(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| {
        t.kv_set("k", "v", 1)
            .custom_status(Some("s"))
            .work(work_item("i1", 2))
            .message(timer_message("i1", 3, now_ms() + 3_600_000))
    })
    .await?;
    continue_as_new(&p, "i1").await?;
    p.enqueue_message(external_event("i1", "e", "1")).await?;
    p.delete_instance("i1", true).await?;
    ensure_deleted(&p, "i1").await?;
    gone(p.read_history("i1", 2).await, "history of execution 2")?;
    ensure!(
        p.list_instances(None).await?.is_empty(),
        "instances after the delete"
    );
    ensure_eq!(
        p.get_queue_depths().await?,
        QueueDepths::default(),
        "queue depths after the delete"
    );
    no_work(
        try_fetch_work(&p, &worker()).await?,
        "the deleted instance's worker item",
    )
}

/// Deleting a completed instance needs no `force` and reports what it removed: one instance, its
/// executions, its events and its queued messages.
pub async fn delete_reports_what_it_removed(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| t.events(2)).await?;
    turn(&p, "i1", Turn::continue_as_new).await?;
    let item = fetch_instance(&p, "i1").await?;
    Turn::next_execution(&item)
        .complete("1")
        .commit(&p, &item)
        .await?;
    for n in 0..2 {
        p.enqueue_message(external_event("i1", "late", &n.to_string()))
            .await?;
    }
    let events = total_events(&[
        p.read_history("i1", 1).await?.len(),
        p.read_history("i1", 2).await?.len(),
    ]);
    let result = p.delete_instance("i1", false).await?;
    let expected = DeleteResult {
        instances_deleted: 1,
        executions_deleted: 2,
        events_deleted: events,
        queue_messages_deleted: 2,
    };
    ensure_eq!(result, expected, "delete result");
    ensure_deleted(&p, "i1").await
}

/// Delete cascades: deleting a finished root removes its children and grandchildren too, and leaves
/// unrelated instances alone.
pub async fn delete_cascades_to_descendants(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "unrelated").await?;
    start(&p, "root").await?;
    start_child_with(&p, "root", "c1", |t| t.complete("1")).await?;
    start_child_with(&p, "root", "c2", |t| t.complete("2")).await?;
    turn(&p, "root", |t| t.complete("r")).await?;
    let result = p.delete_instance("root", false).await?;
    ensure_eq!(
        (result.instances_deleted, result.executions_deleted),
        (3, 3),
        "(instances, executions) deleted"
    );
    for id in ["root", "c1", "c2"] {
        ensure_deleted(&p, id).await?;
    }
    ensure_eq!(
        sorted_instances(&p, None).await?,
        vec!["unrelated"],
        "instances left"
    );
    Ok(())
}

/// A finished root with a running descendant needs `force`: without it the delete is `StillRunning` and
/// nothing of the tree is removed; with it the whole tree goes.
pub async fn running_descendant_needs_force(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "root").await?;
    start_child_with(&p, "root", "child", |t| t).await?;
    turn(&p, "root", |t| t.complete("r")).await?;
    let before = snapshot(&p, "child").await?;
    expect_kind(
        p.delete_instance("root", false).await,
        ProviderErrorKind::StillRunning,
        "delete with a running child",
    )?;
    ensure_eq!(
        info(&p, "root").await?.status,
        InstanceStatus::Completed,
        "root survives"
    );
    ensure_unchanged(&p, "child", &before, "child after the refused delete").await?;
    let result = p.delete_instance("root", true).await?;
    ensure_eq!(result.instances_deleted, 2, "instances deleted with force");
    ensure!(
        p.list_instances(None).await?.is_empty(),
        "instances after the forced delete"
    );
    Ok(())
}

/// Deleting a child leaves its parent and the parent's other data alone.
pub async fn deleting_a_child_leaves_the_parent(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "root", |t| t.kv_set("k", "v", 1)).await?;
    start_child_with(&p, "root", "child", |t| t.complete("1")).await?;
    let before = info(&p, "root").await?;
    p.delete_instance("child", false).await?;
    ensure_deleted(&p, "child").await?;
    ensure_eq!(info(&p, "root").await?, before, "root info");
    ensure_eq!(p.get_kv_value("root", "k").await?, Some("v".into()), "root KV");
    ensure_eq!(p.get_instance_tree("root").await?, vec!["root"], "root's tree");
    Ok(())
}

/// A deleted id can be created again from scratch: execution 1, no history, no KV, custom status
/// version 0.
pub async fn deleted_id_can_be_created_again(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| {
        t.kv_set("k", "v", 1).custom_status(Some("s")).complete("1")
    })
    .await?;
    p.delete_instance("i1", false).await?;
    create(&p, "i1").await?;
    let i = info(&p, "i1").await?;
    ensure_eq!(
        (i.status, i.current_execution_id, i.output),
        (InstanceStatus::Running, 1, None),
        "(status, execution, output)"
    );
    let item = fetch(&p).await?;
    ensure!(item.history.is_empty(), "history of the new instance");
    ensure!(item.kv_snapshot.is_empty(), "KV snapshot of the new instance");
    ensure_eq!(
        item.custom_status,
        CustomStatus::default(),
        "custom status of the new instance"
    );
    ensure_eq!(p.get_kv_value("i1", "k").await?, None, "KV of the new instance");
    Ok(())
}

/// A worker holding an item of an instance that is then deleted loses it: its ack is `LockLost` and
/// brings nothing back.
pub async fn worker_lease_of_a_deleted_instance_is_lost(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(&p, "i1", vec![work_item("i1", 2)]).await?;
    let lease = fetch_work(&p, &worker()).await?;
    p.delete_instance("i1", true).await?;
    let ack = p
        .ack_work_item(&lease.lock_token, Some(activity_completion("i1", 1, 2)))
        .await;
    expect_kind(
        ack,
        ProviderErrorKind::LockLost,
        "ack after the instance was deleted",
    )?;
    ensure_eq!(
        p.get_instance_info("i1").await?,
        None,
        "the completion must not recreate the instance"
    );
    Ok(())
}

// ---- bulk delete ------------------------------------------------------------------------------------

/// Bulk delete with an empty filter is `InvalidInput` and deletes nothing.
pub async fn bulk_delete_without_criteria_is_invalid_input(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_completed(&p, "done").await?;
    let result = p.delete_instances_bulk(&InstanceFilter::default()).await;
    expect_kind(
        result,
        ProviderErrorKind::InvalidInput,
        "bulk delete without criteria",
    )?;
    ensure_eq!(sorted_instances(&p, None).await?, vec!["done"], "instances");
    Ok(())
}

/// Bulk delete by ids takes only terminal roots: running instances and children are skipped.
pub async fn bulk_delete_takes_only_terminal_roots(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_completed(&p, "done").await?;
    start(&p, "running").await?;
    start_child_with(&p, "running", "finished-child", |t| t.complete("1")).await?;
    let filter = InstanceFilter {
        instance_ids: Some(vec!["done".into(), "running".into(), "finished-child".into()]),
        ..InstanceFilter::default()
    };
    let result = p.delete_instances_bulk(&filter).await?;
    ensure_eq!(result.instances_deleted, 1, "instances deleted");
    ensure_eq!(
        sorted_instances(&p, None).await?,
        vec!["finished-child", "running"],
        "instances left"
    );
    Ok(())
}

/// Bulk delete by `completed_before_ms` compares with `updated_at_ms`: an instance finished before the
/// cutoff goes, one finished after it stays.
pub async fn bulk_delete_by_completion_time(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_completed(&p, "old").await?;
    let old = info(&p, "old").await?.updated_at_ms;
    sleep_until_ms(old + 20).await;
    start_completed(&p, "new").await?;
    let new = info(&p, "new").await?.updated_at_ms;
    ensure!(
        new > old + 1,
        "the second instance's updated_at_ms {new} is not after the first's {old}"
    );
    let filter = InstanceFilter {
        completed_before_ms: Some(old + 1),
        ..InstanceFilter::default()
    };
    let result = p.delete_instances_bulk(&filter).await?;
    ensure_eq!(result.instances_deleted, 1, "instances deleted");
    ensure_eq!(sorted_instances(&p, None).await?, vec!["new"], "instances left");
    Ok(())
}

/// Bulk delete honours `limit`.
pub async fn bulk_delete_respects_the_limit(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    for id in ["a", "b", "c"] {
        start_completed(&p, id).await?;
    }
    let filter = InstanceFilter {
        instance_ids: Some(vec!["a".into(), "b".into(), "c".into()]),
        limit: Some(2),
        ..InstanceFilter::default()
    };
    let result = p.delete_instances_bulk(&filter).await?;
    ensure_eq!(result.instances_deleted, 2, "instances deleted");
    ensure_eq!(p.list_instances(None).await?.len(), 1, "instances left");
    Ok(())
}

/// Bulk delete removes the trees of the roots it deletes, and counts their instances.
pub async fn bulk_delete_cascades_to_descendants(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start(&p, "root").await?;
    start_child_with(&p, "root", "child", |t| t.complete("1")).await?;
    turn(&p, "root", |t| t.complete("r")).await?;
    let filter = InstanceFilter {
        instance_ids: Some(vec!["root".into()]),
        ..InstanceFilter::default()
    };
    let result = p.delete_instances_bulk(&filter).await?;
    ensure_eq!(result.instances_deleted, 2, "instances deleted");
    ensure_deleted(&p, "child").await
}

// ---- prune ------------------------------------------------------------------------------------------

/// An instance with `n` executions (each with a couple of events), the last one current and running.
async fn with_executions(p: &P, instance: &str, n: u64) -> CheckResult {
    start_with(p, instance, |t| t.events(1)).await?;
    for _ in 1..n {
        continue_as_new_with(p, instance, |t| t.events(1)).await?;
    }
    Ok(())
}

/// Prune without `keep_last` or `completed_before_ms` is `InvalidInput`, for one instance and in bulk,
/// and prunes nothing.
pub async fn prune_without_options_is_invalid_input(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    with_executions(&p, "i1", 2).await?;
    let none = PruneOptions::default();
    expect_kind(
        p.prune_executions("i1", &none).await,
        ProviderErrorKind::InvalidInput,
        "prune without options",
    )?;
    let filter = InstanceFilter {
        instance_ids: Some(vec!["i1".into()]),
        ..InstanceFilter::default()
    };
    expect_kind(
        p.prune_executions_bulk(&filter, &none).await,
        ProviderErrorKind::InvalidInput,
        "bulk prune without options",
    )?;
    ensure_eq!(p.list_executions("i1").await?, vec![1, 2], "executions");
    Ok(())
}

/// Bulk prune with an empty instance filter is `InvalidInput` (an `InstanceFilter` needs at least one
/// criterion) and prunes nothing, rather than pruning every instance.
pub async fn bulk_prune_without_criteria_is_invalid_input(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    with_executions(&p, "i1", 2).await?;
    let keep = PruneOptions {
        keep_last: Some(1),
        ..PruneOptions::default()
    };
    let empty = InstanceFilter::default();
    let result = p.prune_executions_bulk(&empty, &keep).await;
    expect_kind(
        result,
        ProviderErrorKind::InvalidInput,
        "bulk prune without a filter",
    )?;
    ensure_eq!(p.list_executions("i1").await?, vec![1, 2], "executions");
    Ok(())
}

/// `keep_last` keeps the newest executions and deletes the older ones with their history, reporting the
/// counts.
pub async fn prune_keep_last_keeps_the_newest(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    with_executions(&p, "i1", 4).await?;
    let events = total_events(&[
        p.read_history("i1", 1).await?.len(),
        p.read_history("i1", 2).await?.len(),
    ]);
    let result = p
        .prune_executions(
            "i1",
            &PruneOptions {
                keep_last: Some(2),
                ..PruneOptions::default()
            },
        )
        .await?;
    ensure_eq!(
        result,
        PruneResult {
            instances_processed: 1,
            executions_deleted: 2,
            events_deleted: events
        },
        "prune result"
    );
    ensure_eq!(p.list_executions("i1").await?, vec![3, 4], "executions left");
    ensure_eq!(p.get_execution_info("i1", 1).await?, None, "pruned execution 1");
    gone(p.read_history("i1", 2).await, "history of pruned execution 2")?;
    ensure!(
        !p.read_history("i1", 3).await?.is_empty(),
        "kept execution 3 keeps its history"
    );
    Ok(())
}

/// Prune never deletes the current execution, even with `keep_last = 0`, and the instance keeps
/// running on it.
pub async fn prune_never_deletes_the_current_execution(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    with_executions(&p, "i1", 3).await?;
    let result = p
        .prune_executions(
            "i1",
            &PruneOptions {
                keep_last: Some(0),
                ..PruneOptions::default()
            },
        )
        .await?;
    ensure_eq!(result.executions_deleted, 2, "executions deleted");
    ensure_eq!(p.list_executions("i1").await?, vec![3], "executions left");
    turn(&p, "i1", |t| t.events(1)).await?;
    ensure_eq!(info(&p, "i1").await?.current_execution_id, 3, "current execution");
    Ok(())
}

/// `completed_before_ms` alone prunes executions completed before the cutoff: a cutoff in the distant
/// past prunes nothing, one in the future prunes every old execution.
pub async fn prune_by_completion_time(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    with_executions(&p, "i1", 3).await?;
    let past = PruneOptions {
        completed_before_ms: Some(1),
        ..PruneOptions::default()
    };
    ensure_eq!(
        p.prune_executions("i1", &past).await?.executions_deleted,
        0,
        "pruned with a cutoff in 1970"
    );
    let future = PruneOptions {
        completed_before_ms: Some(now_ms() + 3_600_000),
        ..PruneOptions::default()
    };
    ensure_eq!(
        p.prune_executions("i1", &future).await?.executions_deleted,
        2,
        "pruned with a future cutoff"
    );
    ensure_eq!(p.list_executions("i1").await?, vec![3], "executions left");
    Ok(())
}

/// With both criteria, an execution goes only if both hold.
pub async fn prune_needs_both_criteria_to_hold(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    with_executions(&p, "i1", 3).await?;
    let old_cutoff = PruneOptions {
        keep_last: Some(1),
        completed_before_ms: Some(1),
    };
    ensure_eq!(
        p.prune_executions("i1", &old_cutoff).await?.executions_deleted,
        0,
        "keep_last holds, cutoff does not"
    );
    let keep_all = PruneOptions {
        keep_last: Some(10),
        completed_before_ms: Some(now_ms() + 3_600_000),
    };
    ensure_eq!(
        p.prune_executions("i1", &keep_all).await?.executions_deleted,
        0,
        "cutoff holds, keep_last does not"
    );
    let both = PruneOptions {
        keep_last: Some(2),
        completed_before_ms: Some(now_ms() + 3_600_000),
    };
    ensure_eq!(
        p.prune_executions("i1", &both).await?.executions_deleted,
        1,
        "both hold for execution 1"
    );
    ensure_eq!(p.list_executions("i1").await?, vec![2, 3], "executions left");
    Ok(())
}

/// Bulk prune applies the options to every instance the filter selects and counts them.
pub async fn bulk_prune_covers_every_selected_instance(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    for id in ["a", "b", "untouched"] {
        with_executions(&p, id, 3).await?;
    }
    let filter = InstanceFilter {
        instance_ids: Some(vec!["a".into(), "b".into()]),
        ..InstanceFilter::default()
    };
    let result = p
        .prune_executions_bulk(
            &filter,
            &PruneOptions {
                keep_last: Some(1),
                ..PruneOptions::default()
            },
        )
        .await?;
    ensure_eq!(
        (result.instances_processed, result.executions_deleted),
        (2, 4),
        "(instances processed, executions deleted)"
    );
    ensure_eq!(p.list_executions("a").await?, vec![3], "a's executions");
    ensure_eq!(p.list_executions("b").await?, vec![3], "b's executions");
    ensure_eq!(
        p.list_executions("untouched").await?,
        vec![1, 2, 3],
        "untouched executions"
    );
    Ok(())
}

// ---- metrics, depths, stats -------------------------------------------------------------------------

/// An empty store reports zero metrics and empty queues.
pub async fn empty_store_reports_zeros(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    ensure_eq!(
        p.get_system_metrics().await?,
        SystemMetrics::default(),
        "system metrics"
    );
    ensure_eq!(
        p.get_queue_depths().await?,
        QueueDepths::default(),
        "queue depths"
    );
    Ok(())
}

/// System metrics count instances by status, all executions and all history events.
pub async fn system_metrics_count_instances_executions_and_events(
    factory: &dyn ProviderFactory,
) -> CheckResult {
    let p = factory.create().await;
    with_executions(&p, "running", 2).await?;
    start_completed(&p, "completed").await?;
    start_with(&p, "failed", |t| t.fail("boom")).await?;
    let mut events = 0;
    for (id, execs) in [("running", 2), ("completed", 1), ("failed", 1)] {
        for e in 1..=execs {
            events += p.read_history(id, e).await?.len() as u64;
        }
    }
    let expected = SystemMetrics {
        total_instances: 3,
        total_executions: 4,
        running_instances: 1,
        completed_instances: 1,
        failed_instances: 1,
        total_events: events,
    };
    ensure_eq!(p.get_system_metrics().await?, expected, "system metrics");
    Ok(())
}

/// Queue depths count visible orchestrator messages across instances and every worker item.
pub async fn queue_depths_count_messages_and_work(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    seed_work(
        &p,
        "w",
        vec![
            work_item("w", 2),
            work_item("w", 3).tagged("gpu"),
            work_item("w", 4).in_session("s"),
        ],
    )
    .await?;
    create(&p, "a").await?;
    p.enqueue_message(external_event("a", "e", "1")).await?;
    create(&p, "b").await?;
    for n in 0..2 {
        p.enqueue_message(external_event("b", "e", &n.to_string()))
            .await?;
    }
    let depths = p.get_queue_depths().await?;
    ensure_eq!(
        depths,
        QueueDepths {
            orchestrator_queue: 5,
            worker_queue: 3,
            timer_queue: 0
        },
        "queue depths"
    );
    Ok(())
}

/// Instance stats of an unknown instance are `None`.
pub async fn instance_stats_of_unknown_is_none(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    ensure_eq!(p.get_instance_stats("ghost").await?, None, "stats");
    Ok(())
}

/// Instance stats report the history's event count and (at least) its payload bytes, pending messages,
/// and the KV key count with the exact bytes of the values.
pub async fn instance_stats_report_history_queue_and_kv(factory: &dyn ProviderFactory) -> CheckResult {
    let p = factory.create().await;
    start_with(&p, "i1", |t| {
        t.events(3)
            .kv_set("short", "12", 1)
            .kv_set("long", "123456789", 2)
    })
    .await?;
    for n in 0..2 {
        p.enqueue_message(external_event("i1", "e", &n.to_string()))
            .await?;
    }
    let history = p.read_history("i1", 1).await?;
    let payload_bytes: u64 = history.iter().map(|r| r.payload.len() as u64).sum();
    let stats = p
        .get_instance_stats("i1")
        .await?
        .ok_or_else(|| fail("no stats"))?;
    ensure_eq!(
        stats.history_event_count,
        history.len() as u64,
        "history_event_count"
    );
    ensure!(
        stats.history_size_bytes >= payload_bytes,
        "history_size_bytes {} is less than the {payload_bytes} bytes of the payloads",
        stats.history_size_bytes
    );
    ensure_eq!(stats.queue_pending_count, 2, "queue_pending_count");
    ensure_eq!(stats.kv_user_key_count, 2, "kv_user_key_count");
    ensure_eq!(stats.kv_total_value_bytes, 11, "kv_total_value_bytes");
    Ok(())
}
