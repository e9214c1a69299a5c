//! Removing data: deleting instance trees (one or in bulk) and pruning old executions.

use deadpool_postgres::GenericClient;
use duroxide_core::provider::{
    DeleteResult, InstanceFilter, ProviderError, ProviderErrorKind, PruneOptions, PruneResult,
};

use crate::db::Db;
use crate::management::instance_tree;
use crate::rows::{self, get, to_u64};

/// Deletes the listed instances with all their rows in one statement, counting what went. The
/// instance rows go in the same statement as their messages; callers lock them first, so an enqueue
/// racing with the delete either lands before (and is deleted) or finds the instance gone.
const DELETE_TREE: &str = "
    WITH h AS (DELETE FROM __schema__.history WHERE instance_id = ANY ($1) RETURNING 1),
         e AS (DELETE FROM __schema__.executions WHERE instance_id = ANY ($1) RETURNING 1),
         q AS (DELETE FROM __schema__.orchestrator_queue WHERE instance_id = ANY ($1) RETURNING 1),
         w AS (DELETE FROM __schema__.worker_queue WHERE instance_id = ANY ($1) RETURNING 1),
         k AS (DELETE FROM __schema__.kv WHERE instance_id = ANY ($1) RETURNING 1),
         s AS (DELETE FROM __schema__.kv_snapshot WHERE instance_id = ANY ($1) RETURNING 1),
         i AS (DELETE FROM __schema__.instances WHERE instance_id = ANY ($1) RETURNING 1)
    SELECT (SELECT count(*) FROM i), (SELECT count(*) FROM e), (SELECT count(*) FROM h),
           (SELECT count(*) FROM q) + (SELECT count(*) FROM w)";

/// Locks the listed instances (in a stable order, so concurrent deletes cannot deadlock) and returns
/// the ids of those that are still running.
const LOCK_TREE: &str = "
    SELECT instance_id, status FROM __schema__.instances WHERE instance_id = ANY ($1)
    ORDER BY instance_id FOR UPDATE";

async fn delete_tree<C: GenericClient>(
    db: &Db,
    client: &C,
    operation: &'static str,
    tree: &[String],
) -> Result<DeleteResult, ProviderError> {
    let row = db
        .query_one_on(client, operation, &db.render(DELETE_TREE), &[&tree])
        .await?;
    let count =
        |idx: usize| -> Result<u64, ProviderError> { to_u64(operation, "count", get(operation, &row, idx)?) };
    Ok(DeleteResult {
        instances_deleted: count(0)?,
        executions_deleted: count(1)?,
        events_deleted: count(2)?,
        queue_messages_deleted: count(3)?,
    })
}

/// Locks the tree's rows and, without `force`, refuses (naming who) if any instance is running.
async fn lock_tree<C: GenericClient>(
    db: &Db,
    client: &C,
    operation: &'static str,
    root: &str,
    tree: &[String],
    force: bool,
) -> Result<(), ProviderError> {
    let rows = db
        .query_on(client, operation, &db.render(LOCK_TREE), &[&tree])
        .await?;
    if force {
        return Ok(());
    }
    for row in &rows {
        let id: String = get(operation, row, 0)?;
        let status: String = get(operation, row, 1)?;
        if !rows::instance_status(operation, &status)?.is_terminal() {
            let whose = if id == root {
                "it".to_owned()
            } else {
                format!("its descendant {id:?}")
            };
            return Err(ProviderError::new(
                ProviderErrorKind::StillRunning,
                operation,
                format!("instance {root:?} was not deleted: {whose} is still running (use force)"),
            ));
        }
    }
    Ok(())
}

/// `Provider::delete_instance`.
pub(crate) async fn delete_instance(
    db: &Db,
    instance_id: &str,
    force: bool,
) -> Result<DeleteResult, ProviderError> {
    const OP: &str = "delete_instance";
    let mut client = db.client(OP).await?;
    let tx = db.begin(&mut client, OP).await?;
    let tree = instance_tree(db, &tx, OP, instance_id).await?;
    if tree.is_empty() {
        return Err(ProviderError::not_found(
            OP,
            format!("instance {instance_id:?} does not exist"),
        ));
    }
    lock_tree(db, &tx, OP, instance_id, &tree, force).await?;
    let result = delete_tree(db, &tx, OP, &tree).await?;
    db.commit(tx, OP).await?;
    Ok(result)
}

/// An `InstanceFilter` needs a criterion: `limit` alone is a cap, not a selection, and an empty
/// filter selecting every instance is far more likely a mistake than an intent.
fn check_filter(operation: &'static str, filter: &InstanceFilter) -> Result<(), ProviderError> {
    if filter.instance_ids.is_none() && filter.completed_before_ms.is_none() {
        return Err(ProviderError::invalid_input(
            operation,
            "the instance filter needs instance_ids or completed_before_ms (a limit alone selects nothing)",
        ));
    }
    Ok(())
}

fn check_prune_options(operation: &'static str, options: &PruneOptions) -> Result<(), ProviderError> {
    if options.keep_last.is_none() && options.completed_before_ms.is_none() {
        return Err(ProviderError::invalid_input(
            operation,
            "pruning needs keep_last or completed_before_ms",
        ));
    }
    Ok(())
}

/// Instances selected by `filter` (by id list and/or `updated_at_ms` before a time), oldest first, at
/// most `limit`; with `terminal_roots_only`, only terminal instances without a parent.
async fn select_instances<C: GenericClient>(
    db: &Db,
    client: &C,
    operation: &'static str,
    filter: &InstanceFilter,
    terminal_roots_only: bool,
) -> Result<Vec<String>, ProviderError> {
    let sql = db.render(
        "SELECT instance_id FROM __schema__.instances
         WHERE ($1::text[] IS NULL OR instance_id = ANY ($1))
           AND ($2::bigint IS NULL OR updated_at_ms < $2)
           AND (NOT $3 OR (parent_instance_id IS NULL AND status IN ('Completed', 'Failed')))
         ORDER BY updated_at_ms, instance_id
         LIMIT $4",
    );
    let before = filter.completed_before_ms.map(rows::time_to_i64);
    let limit = filter.limit.map(i64::from);
    db.query_on(
        client,
        operation,
        &sql,
        &[&filter.instance_ids, &before, &terminal_roots_only, &limit],
    )
    .await?
    .iter()
    .map(|row| get(operation, row, 0))
    .collect()
}

/// `Provider::delete_instances_bulk`: terminal roots matching the filter, each with its whole tree.
pub(crate) async fn delete_instances_bulk(
    db: &Db,
    filter: &InstanceFilter,
) -> Result<DeleteResult, ProviderError> {
    const OP: &str = "delete_instances_bulk";
    check_filter(OP, filter)?;
    let mut client = db.client(OP).await?;
    let tx = db.begin(&mut client, OP).await?;
    let mut total = DeleteResult::default();
    for root in select_instances(db, &tx, OP, filter, true).await? {
        let tree = instance_tree(db, &tx, OP, &root).await?;
        // The root is terminal; its whole tree goes with it, as `delete_instance` with force would.
        lock_tree(db, &tx, OP, &root, &tree, true).await?;
        let deleted = delete_tree(db, &tx, OP, &tree).await?;
        total.instances_deleted += deleted.instances_deleted;
        total.executions_deleted += deleted.executions_deleted;
        total.events_deleted += deleted.events_deleted;
        total.queue_messages_deleted += deleted.queue_messages_deleted;
    }
    db.commit(tx, OP).await?;
    Ok(total)
}

/// Deletes old executions of one instance: both criteria must hold for an execution to go, and the
/// current one always stays. `None` when the instance does not exist.
const PRUNE_ONE: &str = "
    WITH inst AS (SELECT current_execution_id FROM __schema__.instances WHERE instance_id = $1),
         ranked AS (
             SELECT execution_id, completed_at_ms,
                    row_number() OVER (ORDER BY execution_id DESC) AS newest_first
             FROM __schema__.executions WHERE instance_id = $1),
         doomed AS (
             SELECT r.execution_id FROM ranked AS r
             WHERE r.execution_id <> (SELECT current_execution_id FROM inst)
               AND ($2::bigint IS NULL OR r.newest_first > $2)
               AND ($3::bigint IS NULL OR r.completed_at_ms < $3)),
         h AS (DELETE FROM __schema__.history AS h USING doomed AS d
               WHERE h.instance_id = $1 AND h.execution_id = d.execution_id RETURNING 1),
         e AS (DELETE FROM __schema__.executions AS e USING doomed AS d
               WHERE e.instance_id = $1 AND e.execution_id = d.execution_id RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM inst), (SELECT count(*) FROM e), (SELECT count(*) FROM h)";

async fn prune_one<C: GenericClient>(
    db: &Db,
    client: &C,
    operation: &'static str,
    instance_id: &str,
    options: &PruneOptions,
) -> Result<Option<PruneResult>, ProviderError> {
    let keep_last = options.keep_last.map(i64::from);
    let before = options.completed_before_ms.map(rows::time_to_i64);
    let row = db
        .query_one_on(
            client,
            operation,
            &db.render(PRUNE_ONE),
            &[&instance_id, &keep_last, &before],
        )
        .await?;
    if !get::<bool>(operation, &row, 0)? {
        return Ok(None);
    }
    Ok(Some(PruneResult {
        instances_processed: 1,
        executions_deleted: to_u64(operation, "count", get(operation, &row, 1)?)?,
        events_deleted: to_u64(operation, "count", get(operation, &row, 2)?)?,
    }))
}

/// `Provider::prune_executions`; an unknown instance is `NotFound`.
pub(crate) async fn prune_executions(
    db: &Db,
    instance_id: &str,
    options: &PruneOptions,
) -> Result<PruneResult, ProviderError> {
    const OP: &str = "prune_executions";
    check_prune_options(OP, options)?;
    let client = db.client(OP).await?;
    prune_one(db, &client, OP, instance_id, options)
        .await?
        .ok_or_else(|| ProviderError::not_found(OP, format!("instance {instance_id:?} does not exist")))
}

/// `Provider::prune_executions_bulk`: every instance the filter selects (running ones too: pruning
/// matters most for long-lived instances that continue as new), counted in `instances_processed`.
pub(crate) async fn prune_executions_bulk(
    db: &Db,
    filter: &InstanceFilter,
    options: &PruneOptions,
) -> Result<PruneResult, ProviderError> {
    const OP: &str = "prune_executions_bulk";
    check_filter(OP, filter)?;
    check_prune_options(OP, options)?;
    let mut client = db.client(OP).await?;
    let tx = db.begin(&mut client, OP).await?;
    let mut total = PruneResult::default();
    for id in select_instances(db, &tx, OP, filter, false).await? {
        if let Some(one) = prune_one(db, &tx, OP, &id, options).await? {
            total.instances_processed += one.instances_processed;
            total.executions_deleted += one.executions_deleted;
            total.events_deleted += one.events_deleted;
        }
    }
    db.commit(tx, OP).await?;
    Ok(total)
}
