//! Management reads: listing instances and executions, instance trees, metrics, queue depths, stats.

use deadpool_postgres::GenericClient;
use duroxide_core::provider::{
    ExecutionInfo, InstanceStats, InstanceStatus, ProviderError, QueueDepths, SystemMetrics,
};

use crate::db::Db;
use crate::rows::{self, get, opt_u64, to_u64};

pub(crate) async fn list_instances(
    db: &Db,
    status: Option<InstanceStatus>,
) -> Result<Vec<String>, ProviderError> {
    const OP: &str = "list_instances";
    // Oldest first; the id breaks ties so the order is stable.
    let sql = db.render(
        "SELECT instance_id FROM __schema__.instances WHERE $1::text IS NULL OR status = $1
         ORDER BY created_at_ms, instance_id",
    );
    let status = status.map(InstanceStatus::as_str);
    // A scan of every instance: on a pooled connection, not ahead of the hot calls on a shared one.
    db.query_pooled(OP, &sql, &[&status])
        .await?
        .iter()
        .map(|row| get(OP, row, 0))
        .collect()
}

/// Execution ids in ascending order; empty for an unknown instance.
pub(crate) async fn list_executions(db: &Db, instance_id: &str) -> Result<Vec<u64>, ProviderError> {
    const OP: &str = "list_executions";
    let sql = db.render(
        "SELECT execution_id FROM __schema__.executions WHERE instance_id = $1 ORDER BY execution_id",
    );
    db.query(OP, &sql, &[&instance_id])
        .await?
        .iter()
        .map(|row| to_u64(OP, "execution id", get(OP, row, 0)?))
        .collect()
}

pub(crate) async fn execution_info(
    db: &Db,
    instance_id: &str,
    execution_id: u64,
) -> Result<Option<ExecutionInfo>, ProviderError> {
    const OP: &str = "get_execution_info";
    let Ok(execution_id) = i64::try_from(execution_id) else {
        return Ok(None);
    };
    let sql = db.render(
        "SELECT e.execution_id, e.status, e.output, e.started_at_ms, e.completed_at_ms,
                (SELECT count(*) FROM __schema__.history AS h
                 WHERE h.instance_id = e.instance_id AND h.execution_id = e.execution_id)
         FROM __schema__.executions AS e WHERE e.instance_id = $1 AND e.execution_id = $2",
    );
    let Some(row) = db.query_opt(OP, &sql, &[&instance_id, &execution_id]).await? else {
        return Ok(None);
    };
    let status: String = get(OP, &row, 1)?;
    Ok(Some(ExecutionInfo {
        execution_id: to_u64(OP, "execution id", get(OP, &row, 0)?)?,
        status: rows::execution_status(OP, &status)?,
        output: get(OP, &row, 2)?,
        started_at_ms: to_u64(OP, "started_at_ms", get(OP, &row, 3)?)?,
        completed_at_ms: opt_u64(OP, "completed_at_ms", get(OP, &row, 4)?)?,
        event_count: to_u64(OP, "event count", get(OP, &row, 5)?)?,
    }))
}

/// The SQL of an instance tree walk: the instance and its descendants by parent link, root first
/// (breadth first). `UNION` (not `UNION ALL`) ends the walk even if damaged data links a cycle.
pub(crate) const INSTANCE_TREE: &str = "
    WITH RECURSIVE tree (id, depth) AS (
        SELECT instance_id, 0 FROM __schema__.instances WHERE instance_id = $1
        UNION
        SELECT i.instance_id, t.depth + 1 FROM __schema__.instances AS i
        JOIN tree AS t ON i.parent_instance_id = t.id
        WHERE t.depth < 10000)
    SELECT id FROM tree GROUP BY id ORDER BY min(depth), id";

/// The instance and its descendants, root first; empty for an unknown instance.
pub(crate) async fn instance_tree<C: GenericClient>(
    db: &Db,
    client: &C,
    operation: &'static str,
    instance_id: &str,
) -> Result<Vec<String>, ProviderError> {
    db.query_on(client, operation, &db.render(INSTANCE_TREE), &[&instance_id])
        .await?
        .iter()
        .map(|row| get(operation, row, 0))
        .collect()
}

pub(crate) async fn get_instance_tree(db: &Db, instance_id: &str) -> Result<Vec<String>, ProviderError> {
    const OP: &str = "get_instance_tree";
    let client = db.client(OP).await?;
    instance_tree(db, &client, OP, instance_id).await
}

pub(crate) async fn system_metrics(db: &Db) -> Result<SystemMetrics, ProviderError> {
    const OP: &str = "get_system_metrics";
    let sql = db.render(
        "SELECT (SELECT count(*) FROM __schema__.instances),
                (SELECT count(*) FROM __schema__.executions),
                (SELECT count(*) FROM __schema__.instances WHERE status = 'Running'),
                (SELECT count(*) FROM __schema__.instances WHERE status = 'Completed'),
                (SELECT count(*) FROM __schema__.instances WHERE status = 'Failed'),
                (SELECT count(*) FROM __schema__.history)",
    );
    // Whole-table counts: pooled, as in `list_instances`.
    let row = db.query_one_pooled(OP, &sql, &[]).await?;
    let count = |idx: usize| -> Result<u64, ProviderError> { to_u64(OP, "count", get(OP, &row, idx)?) };
    Ok(SystemMetrics {
        total_instances: count(0)?,
        total_executions: count(1)?,
        running_instances: count(2)?,
        completed_instances: count(3)?,
        failed_instances: count(4)?,
        total_events: count(5)?,
    })
}

/// Orchestrator messages split at the database's "now" into visible (including those a turn holds)
/// and not yet visible.
pub(crate) async fn queue_depths(db: &Db) -> Result<QueueDepths, ProviderError> {
    const OP: &str = "get_queue_depths";
    let sql = db.render(
        "SELECT count(*) FILTER (WHERE visible_at_ms <= __schema__.now_ms()),
                (SELECT count(*) FROM __schema__.worker_queue),
                count(*) FILTER (WHERE visible_at_ms > __schema__.now_ms())
         FROM __schema__.orchestrator_queue",
    );
    let row = db.query_one_pooled(OP, &sql, &[]).await?;
    let count = |idx: usize| -> Result<u64, ProviderError> { to_u64(OP, "count", get(OP, &row, idx)?) };
    Ok(QueueDepths {
        orchestrator_queue: count(0)?,
        worker_queue: count(1)?,
        timer_queue: count(2)?,
    })
}

/// History figures are for the current execution (what the next turn replays); KV figures for the
/// state clients see. Sizes are in bytes of the stored text.
pub(crate) async fn instance_stats(
    db: &Db,
    instance_id: &str,
) -> Result<Option<InstanceStats>, ProviderError> {
    const OP: &str = "get_instance_stats";
    let sql = db.render(
        "SELECT (SELECT count(*) FROM __schema__.history AS h
                 WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id),
                (SELECT coalesce(sum(octet_length(h.payload)), 0)::bigint FROM __schema__.history AS h
                 WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id),
                (SELECT count(*) FROM __schema__.orchestrator_queue AS q WHERE q.instance_id = i.instance_id),
                (SELECT count(*) FROM __schema__.kv AS k WHERE k.instance_id = i.instance_id),
                (SELECT coalesce(sum(octet_length(k.value)), 0)::bigint FROM __schema__.kv AS k
                 WHERE k.instance_id = i.instance_id)
         FROM __schema__.instances AS i WHERE i.instance_id = $1",
    );
    let Some(row) = db.query_opt(OP, &sql, &[&instance_id]).await? else {
        return Ok(None);
    };
    let count = |idx: usize| -> Result<u64, ProviderError> { to_u64(OP, "count", get(OP, &row, idx)?) };
    Ok(Some(InstanceStats {
        history_event_count: count(0)?,
        history_size_bytes: count(1)?,
        queue_pending_count: count(2)?,
        kv_user_key_count: count(3)?,
        kv_total_value_bytes: count(4)?,
    }))
}
