//! Committing one orchestration turn (`ack_orchestration_item`): everything a turn writes, in the
//! writer's single transaction, or nothing.

use duroxide_core::provider::{CustomStatusChange, ExecutionStatus, KvChange, ProviderError, TurnAck};
use rusqlite::{params, Connection, ErrorCode};

use crate::error::{sql, sql_error};
use crate::orchestrator_queue::{enqueue_from_ack, locked_instance, Locked};

const OP: &str = "ack_orchestration_item";

/// What an ack made fetchable, so the provider wakes only the dispatchers that have something to do.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AckEffects {
    pub(crate) orchestrator_work: bool,
    pub(crate) worker_work: bool,
}

pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO history (instance_id, execution_id, event_id, kind, payload) VALUES (?1, ?2, ?3, ?4, ?5)";

const UPDATE_EXECUTION: &str = "
    UPDATE executions SET status = COALESCE(?3, status), output = COALESCE(?4, output),
                          completed_at_ms = COALESCE(?5, completed_at_ms)
    WHERE instance_id = ?1 AND execution_id = ?2";

const INSERT_WORK_ITEM: &str = "
    INSERT INTO worker_queue (instance_id, execution_id, event_id, payload, session_id, tag, visible_at_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

pub(crate) const CANCEL_WORK_ITEM: &str =
    "DELETE FROM worker_queue WHERE instance_id = ?1 AND execution_id = ?2 AND event_id = ?3";

pub(crate) const DELETE_FETCHED: &str =
    "DELETE FROM orchestrator_queue WHERE instance_id = ?1 AND lock_token = ?2";

/// Writes the instance's metadata and releases its lock in one statement, and reports whether the
/// instance still has messages (ones that arrived during the turn). `?6` resets the output when a new
/// execution starts without one.
pub(crate) const UPDATE_INSTANCE: &str = "
    UPDATE instances SET
        lock_token = NULL, locked_until_ms = NULL, updated_at_ms = ?2, current_execution_id = ?3,
        status = COALESCE(?4, status),
        output = CASE WHEN ?5 IS NOT NULL THEN ?5 WHEN ?6 THEN NULL ELSE output END,
        name = COALESCE(?7, name), version = COALESCE(?8, version),
        custom_status = CASE WHEN ?9 THEN ?10 ELSE custom_status END,
        custom_status_version = custom_status_version + ?9
    WHERE instance_id = ?1";

/// Whether messages wait for the instance (they arrived during the turn). A separate statement rather
/// than `RETURNING`, which makes SQLite build a temporary B-tree.
pub(crate) const HAS_MESSAGES: &str =
    "SELECT EXISTS (SELECT 1 FROM orchestrator_queue WHERE instance_id = ?1)";

/// How many rows `ack` inserts or deletes besides its fixed statements: a measure of its duration.
pub(crate) fn rows_written(ack: &TurnAck) -> usize {
    ack.history.len()
        + ack.worker_items.len()
        + ack.messages.len()
        + ack.cancel_activities.len()
        + ack.kv_changes.len()
}

/// `Provider::ack_orchestration_item`.
pub(crate) fn ack(conn: &Connection, token: &str, ack: &TurnAck) -> Result<AckEffects, ProviderError> {
    let now = crate::clock::now_ms();
    let Locked {
        instance_id,
        secret,
        current_execution,
    } = locked_instance(conn, OP, token, now)?;
    if ack.execution_id < current_execution {
        return Err(ProviderError::invalid_input(
            OP,
            format!(
                "the ack is for execution {} but instance {instance_id:?} is already on execution {current_execution}",
                ack.execution_id
            ),
        ));
    }
    let new_execution = ack.execution_id > current_execution;
    if new_execution {
        start_execution(conn, &instance_id, ack.execution_id, now)?;
    }

    append_history(conn, &instance_id, ack)?;

    if ack.status.is_some() || ack.output.is_some() {
        let completed_at = ack.status.filter(|s| *s != ExecutionStatus::Running).map(|_| now);
        conn.prepare_cached(UPDATE_EXECUTION)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    instance_id,
                    ack.execution_id,
                    ack.status.map(ExecutionStatus::as_str),
                    ack.output,
                    completed_at
                ])
            })
            .map_err(sql(OP))?;
    }

    apply_kv_changes(conn, &instance_id, &ack.kv_changes)?;

    let mut effects = AckEffects {
        worker_work: !ack.worker_items.is_empty(),
        ..AckEffects::default()
    };
    if !ack.worker_items.is_empty() {
        let mut insert = conn.prepare_cached(INSERT_WORK_ITEM).map_err(sql(OP))?;
        for item in &ack.worker_items {
            let a = &item.activity;
            insert
                .execute(params![
                    a.instance_id,
                    a.execution_id,
                    a.event_id,
                    item.payload,
                    item.session_id,
                    item.tag,
                    now
                ])
                .map_err(sql(OP))?;
        }
    }

    for message in &ack.messages {
        effects.orchestrator_work |= enqueue_from_ack(conn, OP, message, now)?;
    }

    if !ack.cancel_activities.is_empty() {
        let mut cancel = conn.prepare_cached(CANCEL_WORK_ITEM).map_err(sql(OP))?;
        for a in &ack.cancel_activities {
            cancel
                .execute(params![a.instance_id, a.execution_id, a.event_id])
                .map_err(sql(OP))?;
        }
    }

    conn.prepare_cached(DELETE_FETCHED)
        .and_then(|mut stmt| stmt.execute(params![instance_id, secret]))
        .map_err(sql(OP))?;

    let instance_status = match ack.status {
        Some(status) => Some(status.instance_status()),
        None if new_execution => Some(duroxide_core::provider::InstanceStatus::Running),
        None => None,
    };
    let (custom_set, custom_value) = match &ack.custom_status {
        CustomStatusChange::Unchanged => (false, None),
        CustomStatusChange::Set(value) => (true, value.as_deref()),
    };
    conn.prepare_cached(UPDATE_INSTANCE)
        .and_then(|mut stmt| {
            stmt.execute(params![
                instance_id,
                now,
                ack.execution_id,
                instance_status.map(|s| s.as_str()),
                ack.output,
                new_execution,
                ack.name,
                ack.version,
                custom_set,
                custom_value
            ])
        })
        .map_err(sql(OP))?;
    let has_messages: bool = conn
        .prepare_cached(HAS_MESSAGES)
        .and_then(|mut stmt| stmt.query_row([instance_id], |row| row.get(0)))
        .map_err(sql(OP))?;
    // Messages that arrived during the turn wait for this lock's release; their fetchers must hear of it.
    effects.orchestrator_work |= has_messages;
    Ok(effects)
}

/// Creates the new execution (continue-as-new) and freezes the KV state before this ack as the
/// snapshot the new execution replays against.
fn start_execution(
    conn: &Connection,
    instance_id: &str,
    execution_id: u64,
    now: i64,
) -> Result<(), ProviderError> {
    conn.prepare_cached(
        "INSERT INTO executions (instance_id, execution_id, status, started_at_ms) VALUES (?1, ?2, 'Running', ?3)",
    )
    .and_then(|mut stmt| stmt.execute(params![instance_id, execution_id, now]))
    .map_err(|err| match err.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => ProviderError::permanent(
            OP,
            format!("execution {execution_id} of instance {instance_id:?} already exists; the ack was rolled back"),
        ),
        _ => sql_error(OP, err),
    })?;
    conn.prepare_cached("DELETE FROM kv_snapshot WHERE instance_id = ?1")
        .and_then(|mut stmt| stmt.execute([instance_id]))
        .map_err(sql(OP))?;
    conn.prepare_cached(
        "INSERT INTO kv_snapshot (instance_id, key, value, updated_at_ms)
         SELECT instance_id, key, value, updated_at_ms FROM kv WHERE instance_id = ?1",
    )
    .and_then(|mut stmt| stmt.execute([instance_id]))
    .map_err(sql(OP))?;
    Ok(())
}

fn append_history(conn: &Connection, instance_id: &str, ack: &TurnAck) -> Result<(), ProviderError> {
    if ack.history.is_empty() {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(INSERT_EVENT).map_err(sql(OP))?;
    for record in &ack.history {
        insert
            .execute(params![
                instance_id,
                ack.execution_id,
                record.event_id,
                record.kind,
                record.payload
            ])
            .map_err(|err| match err.sqlite_error_code() {
                Some(ErrorCode::ConstraintViolation) => ProviderError::permanent(
                    OP,
                    format!(
                        "history event {} already exists in execution {} of instance {instance_id:?}; \
                         the whole ack was rolled back",
                        record.event_id, ack.execution_id
                    ),
                ),
                _ => sql_error(OP, err),
            })?;
    }
    Ok(())
}

fn apply_kv_changes(conn: &Connection, instance_id: &str, changes: &[KvChange]) -> Result<(), ProviderError> {
    for change in changes {
        match change {
            KvChange::Set {
                key,
                value,
                updated_at_ms,
            } => conn
                .prepare_cached(
                    "INSERT INTO kv (instance_id, key, value, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (instance_id, key) DO UPDATE
                     SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
                )
                .and_then(|mut stmt| stmt.execute(params![instance_id, key, value, updated_at_ms])),
            KvChange::Delete { key } => conn
                .prepare_cached("DELETE FROM kv WHERE instance_id = ?1 AND key = ?2")
                .and_then(|mut stmt| stmt.execute(params![instance_id, key])),
        }
        .map_err(sql(OP))?;
    }
    Ok(())
}
