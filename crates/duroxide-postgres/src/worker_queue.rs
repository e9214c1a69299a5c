//! The worker queue: fetching an activity under a lease (tag filter, session routing), acking it with
//! its completion, abandoning and renewing it, and session leases.

use std::sync::Arc;
use std::time::Duration;

use duroxide_core::provider::{
    ActivityRef, CachedFetch, NewMessage, ProviderError, TagFilter, WorkItemLease, WorkerFetch,
};

use crate::batch::{Completion, Param, Sent};
use crate::coalesce::Batch;
use crate::db::Db;
use crate::lock_token;
use crate::mux::Conn;
use crate::orchestrator_queue::{self, due_from_now, more};
use crate::rows::{self, get, to_u32, to_u64};
use crate::turn_ack::MessageColumns;
use uuid::Uuid;

/// The tag filter as the database function takes it: untagged items admitted, every tag admitted, and
/// the admitted tags. `None` when the filter admits nothing at all (no query needed).
fn tag_params(filter: &TagFilter) -> Option<(bool, bool, &[String])> {
    match filter {
        TagFilter::None => None,
        TagFilter::Any => Some((true, true, &[])),
        TagFilter::DefaultOnly => Some((true, false, &[])),
        TagFilter::Tags(tags) if tags.is_empty() => None,
        TagFilter::Tags(tags) => Some((false, false, tags)),
        TagFilter::DefaultAnd(tags) => Some((true, false, tags)),
    }
}

/// Whether a request takes untagged items (the only ones acks hand over, see `handoff`).
pub(crate) fn takes_untagged(request: &WorkerFetch) -> bool {
    matches!(
        request.tag_filter,
        TagFilter::Any | TagFilter::DefaultOnly | TagFilter::DefaultAnd(_)
    )
}

/// Whether a request can ever be served; one that cannot only waits out its poll.
pub(crate) fn admits_anything(request: &WorkerFetch) -> bool {
    tag_params(&request.tag_filter).is_some()
}

/// Fetches that see the same queue share what an empty look learned (see `wakeups`).
pub(crate) fn request_key(request: &WorkerFetch) -> String {
    match &request.session {
        None => format!("{:?}", request.tag_filter),
        Some(s) => format!("{:?}|{}|{}", request.tag_filter, s.owner_id, s.may_claim_new),
    }
}

/// `Provider::fetch_work_item`, one look for up to `max` waiting fetches with this request (see
/// `coalesce`). Having taken `max`, it also leases up to `extra` queued plain items (untagged,
/// session-less) that follow in queue order, returned after the others (migration 7).
pub(crate) async fn fetch(
    db: &Db,
    request: &WorkerFetch,
    via: Option<Arc<Conn>>,
    max: usize,
    extra: usize,
) -> Result<Batch<WorkItemLease>, ProviderError> {
    const OP: &str = "fetch_work_item";
    let Some((untagged, any_tag, tags)) = tag_params(&request.tag_filter) else {
        return Ok(Batch {
            items: Vec::new(),
            more: false,
            due: None,
        });
    };
    let secret = db.new_secret();
    let owner = request.session.as_ref().map(|s| s.owner_id.as_str());
    let session_lease = request.session.as_ref().map_or(0, |s| rows::duration_ms(s.lease));
    let may_claim = request.session.as_ref().is_some_and(|s| s.may_claim_new);
    let rows = db
        .query_via(
            via,
            OP,
            &db.sql.fetch_work_items,
            &[
                &secret,
                &rows::duration_ms(request.lock_timeout),
                &untagged,
                &any_tag,
                &tags,
                &owner,
                &session_lease,
                &may_claim,
                &rows::batch_size(max),
                &i32::try_from(extra).unwrap_or(i32::MAX),
            ],
            crate::error::sql_err(OP),
        )
        .await?;
    let (summary, leased) = rows::split_summary(OP, rows)?;
    let mut items = leased
        .iter()
        .map(|row| {
            let id: i64 = get(OP, row, 0)?;
            Ok(WorkItemLease {
                lock_token: lock_token::token(secret, &id.to_string()),
                activity: ActivityRef {
                    instance_id: get(OP, row, 1)?,
                    execution_id: to_u64(OP, "execution id", get(OP, row, 2)?)?,
                    event_id: to_u64(OP, "event id", get(OP, row, 3)?)?,
                },
                payload: get(OP, row, 4)?,
                attempt: to_u32(OP, "attempt", get(OP, row, 5)?)?,
                session_id: get(OP, row, 6)?,
                tag: get(OP, row, 7)?,
            })
            .map(|lease| (id, lease))
        })
        .collect::<Result<Vec<_>, ProviderError>>()?;
    // Queue order: the oldest item goes to the look that has waited longest.
    items.sort_unstable_by_key(|(id, _)| *id);
    Ok(Batch {
        items: items.into_iter().map(|(_, lease)| lease).collect(),
        more: more(OP, &summary, 10)?,
        due: due_from_now(OP, &summary, 8, 9)?,
    })
}

/// The group of fetches one query can serve: the same request and lock timeout (see `coalesce`).
pub(crate) fn batch_key(request: &WorkerFetch) -> String {
    format!("{}|{}", request_key(request), request.lock_timeout.as_millis())
}

fn lock_lost(operation: &'static str) -> ProviderError {
    ProviderError::lock_lost(
        operation,
        "the work item's lock token is unknown, its lease expired, or the item was cancelled; nothing was changed",
    )
}

/// The row id and secret of a work-item token; `LockLost` for text no fetch produced.
fn parse_token(operation: &'static str, token: &str) -> Result<(i64, uuid::Uuid), ProviderError> {
    lock_token::parse(token)
        .and_then(|(secret, id)| Some((id.parse().ok()?, secret)))
        .ok_or_else(|| lock_lost(operation))
}

/// What an activity's ack did.
#[derive(Debug, Default)]
pub(crate) struct WorkAcked {
    /// A completion was stored.
    pub(crate) enqueued: bool,
    /// The instance the completion went to, locked for a turn (asked for with `lease`).
    pub(crate) turn: Option<CachedFetch>,
}

/// Whether `completion` is a plain message for an existing instance (no creation, no delay), as an
/// activity's completion nearly always is: such an ack takes the flat path, and only it may lease.
pub(crate) fn is_plain(completion: &NewMessage) -> bool {
    completion.creates.is_none() && completion.visible_at_ms.is_none()
}

/// `Provider::ack_work_item`. `sent`: see `batch`. With `lease` (for a plain completion only), also
/// locks the instance the completion goes to for that long under that secret, when no turn of it
/// runs, and returns it as a fetch would (see `handoff`).
pub(crate) async fn ack(
    db: &Db,
    token: &str,
    completion: Option<&NewMessage>,
    sent: Option<Sent>,
    lease: Option<(Duration, Uuid)>,
) -> Result<WorkAcked, ProviderError> {
    const OP: &str = "ack_work_item";
    let (id, secret) = parse_token(OP, token)?;
    let mut params: Vec<Param> = vec![Box::new(id), Box::new(secret)];
    let lease_secret = lease.map_or_else(|| db.new_secret(), |(_, secret)| secret);
    let mut merge = None;
    let (statement, outcome_column) = match completion.filter(|c| is_plain(c)) {
        Some(plain) => {
            let lease_ms = lease.map(|(lock, _)| rows::duration_ms(lock));
            params.extend([
                Box::new(plain.instance_id.clone()) as Param,
                Box::new(plain.payload.clone()),
                Box::new(lease.map(|_| lease_secret)),
                Box::new(lease_ms),
            ]);
            merge = Some(Completion {
                merged_sql: db.sql.complete_work_items.clone(),
                id,
                secret,
                instance_id: plain.instance_id.clone(),
                payload: plain.payload.clone(),
                lease_secret: lease.map(|_| lease_secret),
                lease_ms,
            });
            (&db.sql.complete_work_item, 19)
        }
        None if lease.is_some() => {
            return Err(ProviderError::permanent(
                OP,
                "only a plain completion can lease its instance (a bug in the provider)",
            ))
        }
        None => {
            params.extend(MessageColumns::new(completion).params());
            (&db.sql.ack_work_item, 0)
        }
    };
    let waits = db.durability.completion_waits(completion);
    let rows = db
        .commit_query(
            OP,
            statement,
            params,
            merge,
            waits,
            sent,
            crate::error::sql_err(OP),
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| ProviderError::permanent(OP, "the ack function returned no row"))?;
    let enqueued = match get::<i32>(OP, row, outcome_column)? {
        0 => false,
        1 => true,
        _ => return Err(lock_lost(OP)),
    };
    let turn = if lease.is_some() && get::<Option<String>>(OP, row, 0)?.is_some() {
        Some(orchestrator_queue::decode_item(OP, row, lease_secret)?)
    } else {
        None
    };
    Ok(WorkAcked { enqueued, turn })
}

/// Hands back the work items of `instance_id` still leased under `secret` by an ack whose reply was
/// lost (see `unsettled`): fetchable again at once, their attempts taken back. How many.
pub(crate) async fn release_unsettled(
    db: &Db,
    instance_id: &str,
    secret: Uuid,
) -> Result<u64, ProviderError> {
    const OP: &str = "release_work_item";
    db.execute(OP, &db.sql.release_unsettled_work_items, &[&instance_id, &secret])
        .await
}

/// `Provider::abandon_work_item`.
pub(crate) async fn abandon(db: &Db, token: &str, delay: Option<Duration>) -> Result<(), ProviderError> {
    const OP: &str = "abandon_work_item";
    let (id, secret) = parse_token(OP, token)?;
    let delay_ms = delay.map_or(0, rows::duration_ms);
    let released = db
        .execute(OP, &db.sql.abandon_work_item, &[&id, &secret, &delay_ms])
        .await?;
    if released == 0 {
        return Err(lock_lost(OP));
    }
    Ok(())
}

/// Hands back a work item leased for a fetch that went away (see `handoff`): fetchable again at
/// once, and the lease's attempt taken back.
pub(crate) async fn release(db: &Db, token: &str) -> Result<(), ProviderError> {
    const OP: &str = "release_work_item";
    let (id, secret) = parse_token(OP, token)?;
    let released = db.execute(OP, &db.sql.release_work_item, &[&id, &secret]).await?;
    if released == 0 {
        return Err(lock_lost(OP));
    }
    Ok(())
}

/// `Provider::renew_work_item_lock`.
pub(crate) async fn renew(db: &Db, token: &str, extend_by: Duration) -> Result<(), ProviderError> {
    const OP: &str = "renew_work_item_lock";
    let (id, secret) = parse_token(OP, token)?;
    let renewed = db
        .execute(
            OP,
            &db.sql.renew_work_item,
            &[&id, &secret, &rows::duration_ms(extend_by)],
        )
        .await?;
    if renewed == 0 {
        return Err(lock_lost(OP));
    }
    Ok(())
}

/// `Provider::renew_session_leases`: only live leases held by `owner_id` are extended.
pub(crate) async fn renew_sessions(
    db: &Db,
    owner_id: &str,
    session_ids: &[String],
    extend_by: Duration,
) -> Result<usize, ProviderError> {
    const OP: &str = "renew_session_leases";
    let renewed = db
        .execute(
            OP,
            &db.sql.renew_sessions,
            &[&owner_id, &session_ids, &rows::duration_ms(extend_by)],
        )
        .await?;
    Ok(usize::try_from(renewed).unwrap_or(usize::MAX))
}

/// `Provider::release_session`: a no-op unless `owner_id` holds the session. Returns whether it did.
pub(crate) async fn release_session(
    db: &Db,
    owner_id: &str,
    session_id: &str,
) -> Result<bool, ProviderError> {
    const OP: &str = "release_session";
    let released = db
        .execute(OP, &db.sql.release_session, &[&session_id, &owner_id])
        .await?;
    Ok(released > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_that_admit_nothing_need_no_query() {
        assert!(tag_params(&TagFilter::None).is_none());
        assert!(tag_params(&TagFilter::Tags(vec![])).is_none());
        assert_eq!(
            tag_params(&TagFilter::DefaultAnd(vec![])),
            Some((true, false, &[][..]))
        );
    }

    #[test]
    fn request_keys_separate_what_fetches_may_see() {
        let plain = WorkerFetch {
            lock_timeout: Duration::from_secs(1),
            tag_filter: TagFilter::DefaultOnly,
            session: None,
        };
        let longer_lock = WorkerFetch {
            lock_timeout: Duration::from_secs(9),
            ..plain.clone()
        };
        let tagged = WorkerFetch {
            tag_filter: TagFilter::Any,
            ..plain.clone()
        };
        assert_eq!(request_key(&plain), request_key(&longer_lock));
        assert_ne!(request_key(&plain), request_key(&tagged));
    }
}
