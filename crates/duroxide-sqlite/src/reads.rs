//! Reads for clients: instance metadata, custom status, one execution's history, KV as clients see it.

use duroxide_core::provider::{CustomStatus, HistoryRecord, InstanceInfo, KvEntry, ProviderError};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::sql;
use crate::orchestrator_queue::READ_HISTORY;
use crate::rows::{instance_from_row, kv_from_row, text_lossy, INSTANCE_COLUMNS};

pub(crate) fn instance_info(
    conn: &Connection,
    instance_id: &str,
) -> Result<Option<InstanceInfo>, ProviderError> {
    Ok(instance_row(conn, "get_instance_info", instance_id)?.map(|(info, _)| info))
}

/// Metadata and custom status from the instance's row, in one statement.
pub(crate) fn instance_state(
    conn: &Connection,
    instance_id: &str,
) -> Result<Option<(InstanceInfo, CustomStatus)>, ProviderError> {
    instance_row(conn, "get_instance_state", instance_id)
}

fn instance_row(
    conn: &Connection,
    operation: &'static str,
    instance_id: &str,
) -> Result<Option<(InstanceInfo, CustomStatus)>, ProviderError> {
    conn.prepare_cached(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([instance_id], instance_from_row).optional())
    .map_err(sql(operation))
}

/// Reads two columns of one row: cheap enough for clients to poll.
pub(crate) fn custom_status(
    conn: &Connection,
    instance_id: &str,
) -> Result<Option<CustomStatus>, ProviderError> {
    conn.prepare_cached("SELECT custom_status, custom_status_version FROM instances WHERE instance_id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([instance_id], |row| {
                Ok(CustomStatus {
                    status: row.get(0)?,
                    version: row.get(1)?,
                })
            })
            .optional()
        })
        .map_err(sql("get_custom_status"))
}

/// One execution's history in event-id order; empty for an unknown instance or execution.
pub(crate) fn history(
    conn: &Connection,
    operation: &'static str,
    instance_id: &str,
    execution_id: u64,
) -> Result<Vec<HistoryRecord>, ProviderError> {
    conn.prepare_cached(READ_HISTORY)
        .and_then(|mut stmt| {
            stmt.query_map(params![instance_id, execution_id], |row| {
                Ok(HistoryRecord {
                    event_id: row.get(0)?,
                    kind: text_lossy(row, 1)?,
                    payload: text_lossy(row, 2)?,
                })
            })?
            .collect()
        })
        .map_err(sql(operation))
}

pub(crate) fn kv_value(
    conn: &Connection,
    instance_id: &str,
    key: &str,
) -> Result<Option<String>, ProviderError> {
    conn.prepare_cached("SELECT value FROM kv WHERE instance_id = ?1 AND key = ?2")
        .and_then(|mut stmt| stmt.query_row([instance_id, key], |row| row.get(0)).optional())
        .map_err(sql("get_kv_value"))
}

pub(crate) fn kv_entries(conn: &Connection, instance_id: &str) -> Result<Vec<KvEntry>, ProviderError> {
    conn.prepare_cached("SELECT key, value, updated_at_ms FROM kv WHERE instance_id = ?1 ORDER BY key")
        .and_then(|mut stmt| stmt.query_map([instance_id], kv_from_row)?.collect())
        .map_err(sql("get_kv_entries"))
}
