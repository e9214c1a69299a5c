//! Management reads: listing instances and executions, instance trees, metrics, queue depths, stats.

use duroxide_core::provider::{
    ExecutionInfo, InstanceStats, InstanceStatus, ProviderError, QueueDepths, SystemMetrics,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::now_ms;
use crate::error::sql;
use crate::rows::execution_status;

pub(crate) fn list_instances(
    conn: &Connection,
    status: Option<InstanceStatus>,
) -> Result<Vec<String>, ProviderError> {
    // Oldest first; the instance id breaks ties so the order is stable.
    conn.prepare_cached(
        "SELECT instance_id FROM instances WHERE ?1 IS NULL OR status = ?1 ORDER BY created_at_ms, instance_id",
    )
    .and_then(|mut stmt| stmt.query_map([status.map(InstanceStatus::as_str)], |row| row.get(0))?.collect())
    .map_err(sql("list_instances"))
}

/// Execution ids in ascending order; empty for an unknown instance.
pub(crate) fn list_executions(conn: &Connection, instance_id: &str) -> Result<Vec<u64>, ProviderError> {
    conn.prepare_cached("SELECT execution_id FROM executions WHERE instance_id = ?1 ORDER BY execution_id")
        .and_then(|mut stmt| stmt.query_map([instance_id], |row| row.get(0))?.collect())
        .map_err(sql("list_executions"))
}

pub(crate) fn execution_info(
    conn: &Connection,
    instance_id: &str,
    execution_id: u64,
) -> Result<Option<ExecutionInfo>, ProviderError> {
    conn.prepare_cached(
        "SELECT e.execution_id, e.status, e.output, e.started_at_ms, e.completed_at_ms,
                (SELECT COUNT(*) FROM history AS h
                 WHERE h.instance_id = e.instance_id AND h.execution_id = e.execution_id)
         FROM executions AS e WHERE e.instance_id = ?1 AND e.execution_id = ?2",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![instance_id, execution_id], |row| {
            Ok(ExecutionInfo {
                execution_id: row.get(0)?,
                status: execution_status(row, 1)?,
                output: row.get(2)?,
                started_at_ms: row.get(3)?,
                completed_at_ms: row.get(4)?,
                event_count: row.get(5)?,
            })
        })
        .optional()
    })
    .map_err(sql("get_execution_info"))
}

/// The instance and its descendants by parent link, root first (breadth first). `UNION` (not
/// `UNION ALL`) makes the walk terminate even if damaged data linked instances in a cycle. Empty for
/// an unknown instance.
pub(crate) fn instance_tree(
    conn: &Connection,
    operation: &'static str,
    instance_id: &str,
) -> Result<Vec<String>, ProviderError> {
    conn.prepare_cached(
        "WITH RECURSIVE tree (id) AS (
             SELECT instance_id FROM instances WHERE instance_id = ?1
             UNION
             SELECT i.instance_id FROM instances AS i JOIN tree AS t ON i.parent_instance_id = t.id)
         SELECT id FROM tree",
    )
    .and_then(|mut stmt| stmt.query_map([instance_id], |row| row.get(0))?.collect())
    .map_err(sql(operation))
}

pub(crate) fn system_metrics(conn: &Connection) -> Result<SystemMetrics, ProviderError> {
    conn.prepare_cached(
        "SELECT (SELECT COUNT(*) FROM instances),
                (SELECT COUNT(*) FROM executions),
                (SELECT COUNT(*) FROM instances WHERE status = 'Running'),
                (SELECT COUNT(*) FROM instances WHERE status = 'Completed'),
                (SELECT COUNT(*) FROM instances WHERE status = 'Failed'),
                (SELECT COUNT(*) FROM history)",
    )
    .and_then(|mut stmt| {
        stmt.query_row([], |row| {
            Ok(SystemMetrics {
                total_instances: row.get(0)?,
                total_executions: row.get(1)?,
                running_instances: row.get(2)?,
                completed_instances: row.get(3)?,
                failed_instances: row.get(4)?,
                total_events: row.get(5)?,
            })
        })
    })
    .map_err(sql("get_system_metrics"))
}

/// Orchestrator messages split at "now" into visible (including those a turn holds) and not yet visible.
pub(crate) fn queue_depths(conn: &Connection) -> Result<QueueDepths, ProviderError> {
    conn.prepare_cached(
        "SELECT (SELECT COUNT(*) FROM orchestrator_queue WHERE visible_at_ms <= ?1),
                (SELECT COUNT(*) FROM worker_queue),
                (SELECT COUNT(*) FROM orchestrator_queue WHERE visible_at_ms > ?1)",
    )
    .and_then(|mut stmt| {
        stmt.query_row([now_ms()], |row| {
            Ok(QueueDepths {
                orchestrator_queue: row.get(0)?,
                worker_queue: row.get(1)?,
                timer_queue: row.get(2)?,
            })
        })
    })
    .map_err(sql("get_queue_depths"))
}

/// History figures are for the current execution (what the next turn replays); KV figures for the
/// state clients see.
pub(crate) fn instance_stats(
    conn: &Connection,
    instance_id: &str,
) -> Result<Option<InstanceStats>, ProviderError> {
    conn.prepare_cached(
        "SELECT (SELECT COUNT(*) FROM history AS h
                 WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id),
                (SELECT COALESCE(SUM(LENGTH(CAST(payload AS BLOB))), 0) FROM history AS h
                 WHERE h.instance_id = i.instance_id AND h.execution_id = i.current_execution_id),
                (SELECT COUNT(*) FROM orchestrator_queue AS q WHERE q.instance_id = i.instance_id),
                (SELECT COUNT(*) FROM kv WHERE kv.instance_id = i.instance_id),
                (SELECT COALESCE(SUM(LENGTH(CAST(value AS BLOB))), 0) FROM kv WHERE kv.instance_id = i.instance_id)
         FROM instances AS i WHERE i.instance_id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([instance_id], |row| {
            Ok(InstanceStats {
                history_event_count: row.get(0)?,
                history_size_bytes: row.get(1)?,
                queue_pending_count: row.get(2)?,
                kv_user_key_count: row.get(3)?,
                kv_total_value_bytes: row.get(4)?,
            })
        })
        .optional()
    })
    .map_err(sql("get_instance_stats"))
}
