//! The orchestrator queue: creating instances, enqueueing messages, and the peek-lock turn cycle
//! (fetch, ack, abandon, renew). Each function runs inside the writer's transaction.

use duroxide_core::limits::validate_instance_id;
use duroxide_core::provider::{
    CachedFetch, HistoryCache, InstanceCreation, NewMessage, OrchestrationItem, ProviderError, StoredMessage,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::sql;
use crate::lock_token;
use crate::rows::{instance_from_row, kv_from_row, text_lossy};
use crate::wakeups::Polled;

// Why no `RETURNING` and no `IN (list)` in the fetch's statements: SQLite builds a temporary B-tree
// for each (a fresh page zeroed, a page cache created and dropped), which cost a turn more than the
// extra statement of a SELECT followed by an UPDATE by key.

/// The instance whose oldest visible message is the oldest of all unlocked instances. An instance
/// whose status this version does not know (written by a newer one) is left alone: it waits for the
/// code that understands it, and blocks no one. The visibility index yields messages oldest first
/// (rowid breaks ties), so the first row whose instance is free is the answer; rows of locked
/// instances are skipped. Selects the columns of [`INSTANCE_COLUMNS`](crate::rows::INSTANCE_COLUMNS).
pub(crate) const NEXT_INSTANCE: &str = "
    SELECT i.instance_id, i.name, i.version, i.current_execution_id, i.status, i.output,
           i.created_at_ms, i.updated_at_ms, i.parent_instance_id, i.custom_status, i.custom_status_version
    FROM orchestrator_queue AS q
    JOIN instances AS i ON i.instance_id = q.instance_id
    WHERE q.visible_at_ms <= ?1 AND (i.locked_until_ms IS NULL OR i.locked_until_ms <= ?1)
      AND CASE +i.status WHEN 'Running' THEN 1 WHEN 'Completed' THEN 1 WHEN 'Failed' THEN 1 ELSE 0 END
    ORDER BY q.visible_at_ms, q.id
    LIMIT 1";

pub(crate) const LOCK_INSTANCE: &str =
    "UPDATE instances SET lock_token = ?1, locked_until_ms = ?2 WHERE instance_id = ?3";

/// The instance's visible messages in enqueue order, with the attempt count the claim gives them.
pub(crate) const VISIBLE_MESSAGES: &str = "
    SELECT payload, attempt + 1 FROM orchestrator_queue
    WHERE instance_id = ?1 AND visible_at_ms <= ?2 ORDER BY id";

/// Stamps the instance's visible messages with the fetch's token and counts the attempt.
pub(crate) const CLAIM_MESSAGES: &str = "
    UPDATE orchestrator_queue SET attempt = attempt + 1, lock_token = ?1
    WHERE instance_id = ?2 AND visible_at_ms <= ?3";

/// Whether another instance is fetchable now (run after locking one, which it then skips as locked).
pub(crate) const ANOTHER_FETCHABLE: &str = "
    SELECT EXISTS (
        SELECT 1 FROM orchestrator_queue AS q
        JOIN instances AS i ON i.instance_id = q.instance_id
        WHERE q.visible_at_ms <= ?1 AND (i.locked_until_ms IS NULL OR i.locked_until_ms <= ?1)
          AND CASE +i.status WHEN 'Running' THEN 1 WHEN 'Completed' THEN 1 WHEN 'Failed' THEN 1 ELSE 0 END)";

pub(crate) const READ_HISTORY: &str = "
    SELECT event_id, kind, payload FROM history
    WHERE instance_id = ?1 AND execution_id = ?2 ORDER BY event_id";

/// The stored history's length (event ids are dense from 1), read from the primary key alone.
pub(crate) const HISTORY_LEN: &str = "
    SELECT COALESCE(MAX(event_id), 0) FROM history WHERE instance_id = ?1 AND execution_id = ?2";

pub(crate) const READ_KV_SNAPSHOT: &str =
    "SELECT key, value, updated_at_ms FROM kv_snapshot WHERE instance_id = ?1 ORDER BY key";

/// The earliest moment something stored becomes fetchable: a message coming due, or the lock or
/// backoff of an instance with visible messages running out. Driven from the queue's visibility index
/// so that an idle look never scans the instances table.
pub(crate) const NEXT_DUE: &str = "
    SELECT MIN(t) FROM (
        SELECT MIN(visible_at_ms) AS t FROM orchestrator_queue WHERE visible_at_ms > ?1
        UNION ALL
        SELECT MIN(i.locked_until_ms) FROM orchestrator_queue AS q
        JOIN instances AS i ON i.instance_id = q.instance_id
        WHERE q.visible_at_ms <= ?1 AND i.locked_until_ms > ?1)";

pub(crate) const LOCKED_INSTANCE: &str = "
    SELECT current_execution_id FROM instances WHERE instance_id = ?1 AND lock_token = ?2 AND locked_until_ms > ?3";

/// A message is stored only when its instance exists: the check and the insert are one statement.
pub(crate) const ENQUEUE_IF_INSTANCE_EXISTS: &str = "
    INSERT INTO orchestrator_queue (instance_id, payload, visible_at_ms)
    SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM instances WHERE instance_id = ?1)";

const INSERT_INSTANCE: &str = "
    INSERT INTO instances (instance_id, name, version, current_execution_id, status, created_at_ms,
                           updated_at_ms, parent_instance_id)
    VALUES (?1, ?2, ?3, 1, 'Running', ?4, ?4, ?5)
    ON CONFLICT (instance_id) DO NOTHING";

const INSERT_EXECUTION: &str = "
    INSERT INTO executions (instance_id, execution_id, status, started_at_ms) VALUES (?1, ?2, 'Running', ?3)";

const INSERT_MESSAGE: &str =
    "INSERT INTO orchestrator_queue (instance_id, payload, visible_at_ms) VALUES (?1, ?2, ?3)";

/// Creates the instance with execution 1 and enqueues `message`, unless the instance exists. Returns
/// whether it was created.
pub(crate) fn create_instance(
    conn: &Connection,
    operation: &'static str,
    message: &NewMessage,
    creation: &InstanceCreation,
    now: i64,
) -> Result<bool, ProviderError> {
    let created = conn
        .prepare_cached(INSERT_INSTANCE)
        .and_then(|mut stmt| {
            stmt.execute(params![
                message.instance_id,
                creation.name,
                creation.version,
                now,
                creation.parent_instance_id
            ])
        })
        .map_err(sql(operation))?;
    if created == 0 {
        return Ok(false);
    }
    conn.prepare_cached(INSERT_EXECUTION)
        .and_then(|mut stmt| stmt.execute(params![message.instance_id, 1_u64, now]))
        .map_err(sql(operation))?;
    conn.prepare_cached(INSERT_MESSAGE)
        .and_then(|mut stmt| {
            stmt.execute(params![
                message.instance_id,
                message.payload,
                visible_at(message, now)
            ])
        })
        .map_err(sql(operation))?;
    Ok(true)
}

/// `Provider::create_instance`.
pub(crate) fn create_instance_from_client(
    conn: &Connection,
    message: &NewMessage,
) -> Result<bool, ProviderError> {
    const OP: &str = "create_instance";
    let Some(creation) = &message.creates else {
        return Err(ProviderError::invalid_input(
            OP,
            "the start message has no `creates` (instance metadata)",
        ));
    };
    validate_instance_id(&message.instance_id).map_err(|reason| ProviderError::invalid_input(OP, reason))?;
    create_instance(conn, OP, message, creation, crate::clock::now_ms())
}

/// `Provider::enqueue_message`: refused with `NotFound` when the instance does not exist.
pub(crate) fn enqueue_from_client(conn: &Connection, message: &NewMessage) -> Result<(), ProviderError> {
    const OP: &str = "enqueue_message";
    let now = crate::clock::now_ms();
    let stored = conn
        .prepare_cached(ENQUEUE_IF_INSTANCE_EXISTS)
        .and_then(|mut stmt| {
            stmt.execute(params![
                message.instance_id,
                message.payload,
                visible_at(message, now)
            ])
        })
        .map_err(sql(OP))?;
    if stored == 0 {
        return Err(ProviderError::not_found(
            OP,
            format!("instance {:?} does not exist", message.instance_id),
        ));
    }
    Ok(())
}

/// Enqueues a message produced by an ack (a turn's or an activity's): a message with `creates` creates
/// its instance unless it exists (then it is dropped, as an idempotent start); a message for an
/// instance that does not exist is dropped. Returns whether it was stored.
pub(crate) fn enqueue_from_ack(
    conn: &Connection,
    operation: &'static str,
    message: &NewMessage,
    now: i64,
) -> Result<bool, ProviderError> {
    match &message.creates {
        Some(creation) => create_instance(conn, operation, message, creation, now),
        None => conn
            .prepare_cached(ENQUEUE_IF_INSTANCE_EXISTS)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    message.instance_id,
                    message.payload,
                    visible_at(message, now)
                ])
            })
            .map(|stored| stored > 0)
            .map_err(sql(operation)),
    }
}

/// Messages without a visibility time are visible from now on; storing "now" rather than 0 orders them
/// with timers that came due at the same moment.
fn visible_at(message: &NewMessage, now: i64) -> i64 {
    message
        .visible_at_ms
        .map_or(now, |at| i64::try_from(at).unwrap_or(i64::MAX))
}

/// `Provider::fetch_orchestration_item(_cached)`, one look: locks the next instance and reads its turn
/// input. `find_more`: also find out whether another instance is fetchable (worth it only when another
/// fetch is waiting to be told). `cache`: what the caller holds; a history it holds whole is left out.
pub(crate) fn fetch(
    conn: &Connection,
    lock_ms: i64,
    find_more: bool,
    cache: Option<&dyn HistoryCache>,
) -> Result<Polled<CachedFetch>, ProviderError> {
    const OP: &str = "fetch_orchestration_item";
    let now = crate::clock::now_ms();
    let secret = lock_token::new_secret();
    let found = conn
        .prepare_cached(NEXT_INSTANCE)
        .and_then(|mut stmt| stmt.query_row([now], instance_from_row).optional())
        .map_err(sql(OP))?;
    let Some((instance, custom_status)) = found else {
        let next_due_ms = conn
            .prepare_cached(NEXT_DUE)
            .and_then(|mut stmt| stmt.query_row([now], |row| row.get::<_, Option<i64>>(0)))
            .map_err(sql(OP))?;
        return Ok(Polled::Empty { next_due_ms });
    };
    conn.prepare_cached(LOCK_INSTANCE)
        .and_then(|mut stmt| stmt.execute(params![secret, now.saturating_add(lock_ms), instance.instance_id]))
        .map_err(sql(OP))?;

    let claimed: Vec<(String, u32)> = conn
        .prepare_cached(VISIBLE_MESSAGES)
        .and_then(|mut stmt| {
            stmt.query_map(params![instance.instance_id, now], |row| {
                Ok((text_lossy(row, 0)?, row.get(1)?))
            })?
            .collect()
        })
        .map_err(sql(OP))?;
    conn.prepare_cached(CLAIM_MESSAGES)
        .and_then(|mut stmt| stmt.execute(params![secret, instance.instance_id, now]))
        .map_err(sql(OP))?;
    let attempt = claimed.iter().map(|(_, attempt)| *attempt).max().unwrap_or(1);
    let messages = claimed
        .into_iter()
        .map(|(payload, _)| StoredMessage { payload })
        .collect();

    let omitted_history_len = match cache
        .and_then(|c| c.cached_history_len(&instance.instance_id, instance.current_execution_id))
    {
        Some(cached_len) => {
            let stored_len: u64 = conn
                .prepare_cached(HISTORY_LEN)
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![instance.instance_id, instance.current_execution_id],
                        |row| row.get(0),
                    )
                })
                .map_err(sql(OP))?;
            (stored_len == cached_len).then_some(stored_len)
        }
        None => None,
    };
    let history = if omitted_history_len.is_some() {
        Vec::new()
    } else {
        crate::reads::history(conn, OP, &instance.instance_id, instance.current_execution_id)?
    };
    let kv_snapshot = conn
        .prepare_cached(READ_KV_SNAPSHOT)
        .and_then(|mut stmt| stmt.query_map([&instance.instance_id], kv_from_row)?.collect())
        .map_err(sql(OP))?;

    // A zero lock timeout leaves this instance fetchable, which is then "more" too: harmless.
    let more = find_more
        && conn
            .prepare_cached(ANOTHER_FETCHABLE)
            .and_then(|mut stmt| stmt.query_row([now], |row| row.get::<_, bool>(0)))
            .map_err(sql(OP))?;

    Ok(Polled::Found {
        item: CachedFetch {
            item: OrchestrationItem {
                instance_id: instance.instance_id.clone(),
                lock_token: lock_token::token(&secret, &instance.instance_id),
                attempt,
                instance,
                history,
                messages,
                kv_snapshot,
                custom_status,
            },
            omitted_history_len,
        },
        more,
    })
}

/// An instance under a live lock, found by its token.
#[derive(Debug)]
pub(crate) struct Locked {
    pub(crate) instance_id: String,
    /// The secret part of the token, which also stamps the messages the fetch returned.
    pub(crate) secret: String,
    pub(crate) current_execution: u64,
}

/// The instance holding a live lock with this token.
pub(crate) fn locked_instance(
    conn: &Connection,
    operation: &'static str,
    token: &str,
    now: i64,
) -> Result<Locked, ProviderError> {
    let (secret, instance_id) = lock_token::parse(token).ok_or_else(|| lock_lost(operation))?;
    conn.prepare_cached(LOCKED_INSTANCE)
        .and_then(|mut stmt| {
            stmt.query_row(params![instance_id, secret, now], |row| row.get(0))
                .optional()
        })
        .map_err(sql(operation))?
        .map(|current_execution| Locked {
            instance_id: instance_id.to_owned(),
            secret: secret.to_owned(),
            current_execution,
        })
        .ok_or_else(|| lock_lost(operation))
}

pub(crate) fn lock_lost(operation: &'static str) -> ProviderError {
    ProviderError::lock_lost(
        operation,
        "the lock token is unknown or its lease expired; nothing was changed",
    )
}

/// `Provider::abandon_orchestration_item`. Releases the lock. The fetched messages go behind the work
/// that was already waiting (so an instance abandoned again and again cannot starve the others); with
/// a delay, the whole instance stays unfetchable until then, which keeps its messages in order.
pub(crate) fn abandon(conn: &Connection, token: &str, delay_ms: Option<i64>) -> Result<(), ProviderError> {
    const OP: &str = "abandon_orchestration_item";
    let now = crate::clock::now_ms();
    let Locked {
        instance_id, secret, ..
    } = locked_instance(conn, OP, token, now)?;
    let visible_again = now.saturating_add(delay_ms.unwrap_or(0));
    conn.prepare_cached(
        "UPDATE orchestrator_queue SET lock_token = NULL, visible_at_ms = MAX(visible_at_ms, ?3)
         WHERE instance_id = ?1 AND lock_token = ?2",
    )
    .and_then(|mut stmt| stmt.execute(params![instance_id, secret, visible_again]))
    .map_err(sql(OP))?;
    conn.prepare_cached(
        "UPDATE instances SET lock_token = NULL, locked_until_ms = ?2 WHERE instance_id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![instance_id, delay_ms.map(|_| visible_again)]))
    .map_err(sql(OP))?;
    Ok(())
}

/// `Provider::renew_orchestration_item_lock`.
pub(crate) fn renew(conn: &Connection, token: &str, extend_ms: i64) -> Result<(), ProviderError> {
    const OP: &str = "renew_orchestration_item_lock";
    let now = crate::clock::now_ms();
    let (secret, instance_id) = lock_token::parse(token).ok_or_else(|| lock_lost(OP))?;
    let renewed = conn
        .prepare_cached(
            "UPDATE instances SET locked_until_ms = ?3
             WHERE instance_id = ?1 AND lock_token = ?2 AND locked_until_ms > ?4",
        )
        .and_then(|mut stmt| stmt.execute(params![instance_id, secret, now.saturating_add(extend_ms), now]))
        .map_err(sql(OP))?;
    if renewed == 0 {
        return Err(lock_lost(OP));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_instance_selects_the_columns_instance_from_row_decodes() {
        let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let columns = NEXT_INSTANCE
            .split("SELECT")
            .nth(1)
            .and_then(|rest| rest.split("FROM").next())
            .map(|list| squash(&list.replace("i.", "")));
        assert_eq!(columns, Some(squash(crate::rows::INSTANCE_COLUMNS)));
    }
}
