//! Removing data: deleting instance trees (one or in bulk) and pruning old executions.

use duroxide_core::provider::{DeleteResult, InstanceFilter, ProviderError, PruneOptions, PruneResult};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::sql;
use crate::management::instance_tree;
use crate::rows::instance_status;

/// `Provider::delete_instance`.
pub(crate) fn delete_instance(
    conn: &Connection,
    instance_id: &str,
    force: bool,
) -> Result<DeleteResult, ProviderError> {
    const OP: &str = "delete_instance";
    let tree = instance_tree(conn, OP, instance_id)?;
    if tree.is_empty() {
        return Err(ProviderError::not_found(
            OP,
            format!("instance {instance_id:?} does not exist"),
        ));
    }
    if !force {
        let mut status = conn
            .prepare_cached("SELECT status FROM instances WHERE instance_id = ?1")
            .map_err(sql(OP))?;
        for id in &tree {
            let current = status
                .query_row([id], |row| instance_status(row, 0))
                .map_err(sql(OP))?;
            if !current.is_terminal() {
                let whose = if id == instance_id {
                    "it".to_owned()
                } else {
                    format!("its descendant {id:?}")
                };
                return Err(ProviderError::new(
                    duroxide_core::provider::ProviderErrorKind::StillRunning,
                    OP,
                    format!("instance {instance_id:?} was not deleted: {whose} is still running (use force)"),
                ));
            }
        }
    }
    delete_tree(conn, OP, &tree)
}

/// Deletes every listed instance with all its rows, counting what went.
fn delete_tree(
    conn: &Connection,
    operation: &'static str,
    tree: &[String],
) -> Result<DeleteResult, ProviderError> {
    let mut result = DeleteResult::default();
    for id in tree {
        let delete = |statement: &str| -> Result<u64, ProviderError> {
            conn.prepare_cached(statement)
                .and_then(|mut stmt| stmt.execute([id]))
                .map(|n| n as u64)
                .map_err(sql(operation))
        };
        result.events_deleted += delete("DELETE FROM history WHERE instance_id = ?1")?;
        result.executions_deleted += delete("DELETE FROM executions WHERE instance_id = ?1")?;
        result.queue_messages_deleted += delete("DELETE FROM orchestrator_queue WHERE instance_id = ?1")?;
        result.queue_messages_deleted += delete("DELETE FROM worker_queue WHERE instance_id = ?1")?;
        delete("DELETE FROM kv WHERE instance_id = ?1")?;
        delete("DELETE FROM kv_snapshot WHERE instance_id = ?1")?;
        result.instances_deleted += delete("DELETE FROM instances WHERE instance_id = ?1")?;
    }
    Ok(result)
}

/// Instances selected by `filter`: by id list and/or `updated_at_ms` before a time, oldest first, at
/// most `limit`. `terminal_roots_only` narrows to terminal instances without a parent.
fn select_instances(
    conn: &Connection,
    operation: &'static str,
    filter: &InstanceFilter,
    terminal_roots_only: bool,
) -> Result<Vec<String>, ProviderError> {
    let before = filter
        .completed_before_ms
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let limit = filter.limit.map_or(-1, i64::from);
    let conditions = "(?1 IS NULL OR updated_at_ms < ?1)
         AND (NOT ?2 OR (parent_instance_id IS NULL AND status IN ('Completed', 'Failed')))";
    match &filter.instance_ids {
        None => conn
            .prepare_cached(&format!(
                "SELECT instance_id FROM instances WHERE {conditions}
                 ORDER BY updated_at_ms, instance_id LIMIT ?3"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![before, terminal_roots_only, limit], |row| row.get(0))?
                    .collect()
            })
            .map_err(sql(operation)),
        Some(ids) => {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT instance_id FROM instances WHERE instance_id = ?3 AND {conditions}"
                ))
                .map_err(sql(operation))?;
            let mut selected = Vec::new();
            for id in ids {
                if limit >= 0 && selected.len() as i64 >= limit {
                    break;
                }
                if selected.contains(id) {
                    continue;
                }
                let found: Option<String> = stmt
                    .query_row(params![before, terminal_roots_only, id], |row| row.get(0))
                    .optional()
                    .map_err(sql(operation))?;
                selected.extend(found);
            }
            Ok(selected)
        }
    }
}

/// `Provider::delete_instances_bulk`: terminal roots matching the filter, each with its whole tree.
pub(crate) fn delete_instances_bulk(
    conn: &Connection,
    filter: &InstanceFilter,
) -> Result<DeleteResult, ProviderError> {
    const OP: &str = "delete_instances_bulk";
    check_filter(OP, filter)?;
    let mut total = DeleteResult::default();
    for root in select_instances(conn, OP, filter, true)? {
        let tree = instance_tree(conn, OP, &root)?;
        let deleted = delete_tree(conn, OP, &tree)?;
        total.instances_deleted += deleted.instances_deleted;
        total.executions_deleted += deleted.executions_deleted;
        total.events_deleted += deleted.events_deleted;
        total.queue_messages_deleted += deleted.queue_messages_deleted;
    }
    Ok(total)
}

/// An `InstanceFilter` needs at least one criterion (`limit` counts as one): an empty filter selecting
/// every instance is far more likely a mistake than an intent.
fn check_filter(operation: &'static str, filter: &InstanceFilter) -> Result<(), ProviderError> {
    if filter.instance_ids.is_none() && filter.completed_before_ms.is_none() && filter.limit.is_none() {
        return Err(ProviderError::invalid_input(
            operation,
            "the instance filter is empty: set instance_ids, completed_before_ms or limit",
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

/// Prunes one instance; `None` when it does not exist.
fn prune_one(
    conn: &Connection,
    operation: &'static str,
    instance_id: &str,
    options: &PruneOptions,
) -> Result<Option<PruneResult>, ProviderError> {
    let current: Option<u64> = conn
        .prepare_cached("SELECT current_execution_id FROM instances WHERE instance_id = ?1")
        .and_then(|mut stmt| stmt.query_row([instance_id], |row| row.get(0)).optional())
        .map_err(sql(operation))?;
    let Some(current) = current else { return Ok(None) };
    let executions: Vec<(u64, Option<i64>)> = conn
        .prepare_cached(
            "SELECT execution_id, completed_at_ms FROM executions WHERE instance_id = ?1 ORDER BY execution_id DESC",
        )
        .and_then(|mut stmt| stmt.query_map([instance_id], |row| Ok((row.get(0)?, row.get(1)?)))?.collect())
        .map_err(sql(operation))?;
    let keep_last = options.keep_last.map(|n| n as usize);
    let before = options
        .completed_before_ms
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let mut result = PruneResult {
        instances_processed: 1,
        ..PruneResult::default()
    };
    for (newest_first, (execution_id, completed_at)) in executions.into_iter().enumerate() {
        // Both criteria must hold for an execution to go; the current one always stays.
        let old_enough = keep_last.is_none_or(|keep| newest_first >= keep);
        let completed_early = before.is_none_or(|t| completed_at.is_some_and(|at| at < t));
        if execution_id == current || !old_enough || !completed_early {
            continue;
        }
        result.events_deleted += conn
            .prepare_cached("DELETE FROM history WHERE instance_id = ?1 AND execution_id = ?2")
            .and_then(|mut stmt| stmt.execute(params![instance_id, execution_id]))
            .map_err(sql(operation))? as u64;
        result.executions_deleted += conn
            .prepare_cached("DELETE FROM executions WHERE instance_id = ?1 AND execution_id = ?2")
            .and_then(|mut stmt| stmt.execute(params![instance_id, execution_id]))
            .map_err(sql(operation))? as u64;
    }
    Ok(Some(result))
}

/// `Provider::prune_executions`; an unknown instance is `NotFound`.
pub(crate) fn prune_executions(
    conn: &Connection,
    instance_id: &str,
    options: &PruneOptions,
) -> Result<PruneResult, ProviderError> {
    const OP: &str = "prune_executions";
    check_prune_options(OP, options)?;
    prune_one(conn, OP, instance_id, options)?
        .ok_or_else(|| ProviderError::not_found(OP, format!("instance {instance_id:?} does not exist")))
}

/// `Provider::prune_executions_bulk`: every instance the filter selects (running ones too: pruning
/// matters most for long-lived instances that continue as new), counted in `instances_processed`.
/// The filter's `completed_before_ms` compares with the instance's `updated_at_ms`, as in bulk deletes.
pub(crate) fn prune_executions_bulk(
    conn: &Connection,
    filter: &InstanceFilter,
    options: &PruneOptions,
) -> Result<PruneResult, ProviderError> {
    const OP: &str = "prune_executions_bulk";
    check_filter(OP, filter)?;
    check_prune_options(OP, options)?;
    let mut total = PruneResult::default();
    for id in select_instances(conn, OP, filter, false)? {
        if let Some(one) = prune_one(conn, OP, &id, options)? {
            total.instances_processed += one.instances_processed;
            total.executions_deleted += one.executions_deleted;
            total.events_deleted += one.events_deleted;
        }
    }
    Ok(total)
}
