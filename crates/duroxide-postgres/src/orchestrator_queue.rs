//! The orchestrator queue: creating instances, enqueueing messages, and the peek-lock turn cycle
//! (fetch, abandon, renew; the ack is in `turn_ack`). Each call is one statement, one round trip.

use std::sync::Arc;
use std::time::Duration;

use duroxide_core::limits::validate_instance_id;
use duroxide_core::provider::{
    CachedFetch, HistoryRecord, KvEntry, NewMessage, OrchestrationItem, ProviderError, StoredMessage,
};
use tokio_postgres::Row;

use crate::coalesce::Batch;
use crate::db::Db;
use crate::lock_token;
use crate::mux::Conn;
use crate::rows::{self, get, to_u32, to_u64};

/// `Provider::create_instance`. Returns whether the instance was created.
/// `Provider::create_instance`: whether the instance was created. With `lease` (for a message
/// visible at once), the new instance is locked that long and returned as a fetch would.
pub(crate) async fn create_instance(
    db: &Db,
    message: &NewMessage,
    lease: Option<Duration>,
) -> Result<(bool, Option<CachedFetch>), ProviderError> {
    const OP: &str = "create_instance";
    let Some(creation) = &message.creates else {
        return Err(ProviderError::invalid_input(
            OP,
            "the start message has no `creates` (instance metadata)",
        ));
    };
    validate_instance_id(&message.instance_id).map_err(|reason| ProviderError::invalid_input(OP, reason))?;
    let visible_at = message.visible_at_ms.map(rows::time_to_i64);
    let Some(lock) = lease.filter(|_| visible_at.is_none()) else {
        let row = db
            .query_one(
                OP,
                &db.sql.create_instance,
                &[
                    &message.instance_id,
                    &creation.name,
                    &creation.version,
                    &creation.parent_instance_id,
                    &message.payload,
                    &visible_at,
                ],
            )
            .await?;
        return Ok((get(OP, &row, 0)?, None));
    };
    let secret = db.new_secret();
    let row = db
        .query_one(
            OP,
            &db.sql.create_instance_leasing,
            &[
                &message.instance_id,
                &creation.name,
                &creation.version,
                &creation.parent_instance_id,
                &message.payload,
                &secret,
                &rows::duration_ms(lock),
            ],
        )
        .await?;
    if get::<Option<String>>(OP, &row, 0)?.is_none() {
        return Ok((false, None));
    }
    Ok((true, Some(decode_item(OP, &row, secret)?)))
}

/// `Provider::enqueue_message`: refused with `NotFound` when the instance does not exist.
pub(crate) async fn enqueue_message(db: &Db, message: &NewMessage) -> Result<(), ProviderError> {
    const OP: &str = "enqueue_message";
    let visible_at = message.visible_at_ms.map(rows::time_to_i64);
    let stored = db
        .execute(
            OP,
            &db.sql.enqueue_message,
            &[&message.instance_id, &message.payload, &visible_at],
        )
        .await?;
    if stored == 0 {
        return Err(ProviderError::not_found(
            OP,
            format!("instance {:?} does not exist", message.instance_id),
        ));
    }
    Ok(())
}

/// `Provider::fetch_orchestration_item`, one look for up to `max` waiting fetches (see `coalesce`).
pub(crate) async fn fetch(
    db: &Db,
    lock_timeout: Duration,
    via: Option<Arc<Conn>>,
    max: usize,
) -> Result<Batch<CachedFetch>, ProviderError> {
    const OP: &str = "fetch_orchestration_item";
    let secret = db.new_secret();
    let rows = db
        .query_via(
            via,
            OP,
            &db.sql.fetch_orchestration_items,
            &[&secret, &rows::duration_ms(lock_timeout), &rows::batch_size(max)],
            crate::error::sql_err(OP),
        )
        .await?;
    let (summary, items) = rows::split_summary(OP, rows)?;
    Ok(Batch {
        items: items
            .iter()
            .map(|row| decode_item(OP, row, secret))
            .collect::<Result<_, _>>()?,
        more: more(OP, &summary, 21)?,
        due: due_from_now(OP, &summary, 19, 20)?,
    })
}

/// Whether a fetch's summary row (column `more`) says another item is fetchable now.
pub(crate) fn more(operation: &'static str, summary: &Row, column: usize) -> Result<bool, ProviderError> {
    Ok(get::<Option<bool>>(operation, summary, column)?.unwrap_or(true))
}

/// How long after the database's "now" (column `now_at`) the due time (column `due_at`) lies.
pub(crate) fn due_from_now(
    operation: &'static str,
    row: &Row,
    now_at: usize,
    due_at: usize,
) -> Result<Option<Duration>, ProviderError> {
    let now: i64 = get(operation, row, now_at)?;
    let due: Option<i64> = get(operation, row, due_at)?;
    Ok(due.map(|due| Duration::from_millis(u64::try_from(due.saturating_sub(now)).unwrap_or(0))))
}

/// Decodes the row of a fetch (or of an ack that leased an instance) for a locked instance. The
/// history may have been left out (migration 6): then the event ids hold only the stored history's
/// length, and the event kinds and payloads are NULL.
pub(crate) fn decode_item(
    operation: &'static str,
    row: &Row,
    secret: uuid::Uuid,
) -> Result<CachedFetch, ProviderError> {
    let (instance, custom_status) = rows::instance(operation, row, 0)?;
    let attempt = to_u32(operation, "attempt", get(operation, row, 11)?)?;
    let messages: Vec<String> = get::<Option<Vec<String>>>(operation, row, 12)?.unwrap_or_default();
    let event_ids = get::<Option<Vec<i64>>>(operation, row, 13)?;
    let kinds = get::<Option<Vec<String>>>(operation, row, 14)?;
    let payloads = get::<Option<Vec<String>>>(operation, row, 15)?;
    let omitted_history_len = match (&event_ids, &kinds, &payloads) {
        (Some(ids), None, None) => match ids[..] {
            [len] => Some(to_u64(operation, "history length", len)?),
            _ => {
                return Err(ProviderError::permanent(
                    operation,
                    "corrupt history: event ids without kinds and payloads",
                ))
            }
        },
        _ => None,
    };
    let event_ids = event_ids.filter(|_| omitted_history_len.is_none());
    let history = rows::zip3(operation, "history", event_ids, kinds, payloads)?
        .into_iter()
        .map(|(event_id, kind, payload)| {
            Ok(HistoryRecord {
                event_id: to_u64(operation, "event id", event_id)?,
                kind,
                payload,
            })
        })
        .collect::<Result<Vec<_>, ProviderError>>()?;
    let kv_snapshot = rows::zip3(
        operation,
        "KV snapshot",
        get::<Option<Vec<String>>>(operation, row, 16)?,
        get::<Option<Vec<String>>>(operation, row, 17)?,
        get::<Option<Vec<i64>>>(operation, row, 18)?,
    )?
    .into_iter()
    .map(|(key, value, updated_at_ms)| {
        Ok(KvEntry {
            key,
            value,
            updated_at_ms: to_u64(operation, "KV updated_at_ms", updated_at_ms)?,
        })
    })
    .collect::<Result<Vec<_>, ProviderError>>()?;
    let item = OrchestrationItem {
        instance_id: instance.instance_id.clone(),
        lock_token: lock_token::token(secret, &instance.instance_id),
        attempt,
        instance,
        history,
        messages: messages
            .into_iter()
            .map(|payload| StoredMessage { payload })
            .collect(),
        kv_snapshot,
        custom_status,
    };
    Ok(CachedFetch {
        item,
        omitted_history_len,
    })
}

pub(crate) fn lock_lost(operation: &'static str) -> ProviderError {
    ProviderError::lock_lost(
        operation,
        "the lock token is unknown or its lease expired; nothing was changed",
    )
}

/// `Provider::abandon_orchestration_item`.
pub(crate) async fn abandon(db: &Db, token: &str, delay: Option<Duration>) -> Result<(), ProviderError> {
    const OP: &str = "abandon_orchestration_item";
    let (secret, instance_id) = lock_token::parse(token).ok_or_else(|| lock_lost(OP))?;
    let delay_ms = delay.map(rows::duration_ms);
    let row = db
        .query_one(
            OP,
            &db.sql.abandon_orchestration_item,
            &[&instance_id, &secret, &delay_ms],
        )
        .await?;
    if get::<bool>(OP, &row, 0)? {
        Ok(())
    } else {
        Err(lock_lost(OP))
    }
}

/// Hands back an instance locked for a fetch that went away (see `handoff`): fetchable again at
/// once, and the claim's attempt taken back.
pub(crate) async fn release(db: &Db, token: &str) -> Result<(), ProviderError> {
    const OP: &str = "release_orchestration_item";
    let (secret, instance_id) = lock_token::parse(token).ok_or_else(|| lock_lost(OP))?;
    let row = db
        .query_one(OP, &db.sql.release_orchestration_item, &[&instance_id, &secret])
        .await?;
    if get::<bool>(OP, &row, 0)? {
        Ok(())
    } else {
        Err(lock_lost(OP))
    }
}

/// `Provider::renew_orchestration_item_lock`.
pub(crate) async fn renew(db: &Db, token: &str, extend_by: Duration) -> Result<(), ProviderError> {
    const OP: &str = "renew_orchestration_item_lock";
    let (secret, instance_id) = lock_token::parse(token).ok_or_else(|| lock_lost(OP))?;
    let renewed = db
        .execute(
            OP,
            &db.sql.renew_orchestration_item,
            &[&instance_id, &secret, &rows::duration_ms(extend_by)],
        )
        .await?;
    if renewed == 0 {
        return Err(lock_lost(OP));
    }
    Ok(())
}
