//! The worker queue: fetching an activity under a lease (tag filter and session routing), acking it with
//! its completion, abandoning and renewing it.

use duroxide_core::provider::{
    ActivityRef, NewMessage, ProviderError, TagFilter, WorkItemLease, WorkerFetch,
};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection};

use crate::clock::{duration_ms, now_ms};
use crate::error::sql;
use crate::lock_token;
use crate::orchestrator_queue::enqueue_from_ack;
use crate::rows::text_lossy;
use crate::wakeups::Polled;

/// The candidate item, with the attempt count its lock gives it. (A SELECT and an UPDATE by key
/// rather than `UPDATE … RETURNING`, for which SQLite builds a temporary B-tree.)
pub(crate) const READ_ITEM: &str = "
    SELECT instance_id, execution_id, event_id, payload, attempt + 1, session_id, tag
    FROM worker_queue WHERE id = ?1";

pub(crate) const LOCK_ITEM: &str =
    "UPDATE worker_queue SET lock_token = ?1, locked_until_ms = ?2, attempt = attempt + 1 WHERE id = ?3";

const CLAIM_SESSION: &str = "
    INSERT INTO sessions (session_id, owner_id, locked_until_ms) VALUES (?1, ?2, ?3)
    ON CONFLICT (session_id) DO UPDATE SET owner_id = excluded.owner_id, locked_until_ms = excluded.locked_until_ms";

/// When something stored becomes fetchable without a new write: a delayed item, an item lease or a
/// session lease running out.
pub(crate) const NEXT_DUE: &str = "
    SELECT MIN(t) FROM (
        SELECT MIN(visible_at_ms) AS t FROM worker_queue WHERE visible_at_ms > ?1
        UNION ALL
        SELECT MIN(locked_until_ms) FROM worker_queue WHERE lock_token IS NOT NULL AND locked_until_ms > ?1
        UNION ALL
        SELECT MIN(locked_until_ms) FROM sessions WHERE locked_until_ms > ?1)";

/// An expired session is treated exactly like an absent one (claimable by any owner that may claim), so
/// removing it changes nothing but the table's size.
const FORGET_EXPIRED_SESSIONS: &str = "DELETE FROM sessions WHERE locked_until_ms <= ?1";

/// Builds SQL text and its positional parameters together, so placeholders always match the values.
#[derive(Debug, Default)]
struct Query {
    values: Vec<Value>,
}

impl Query {
    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        format!("?{}", self.values.len())
    }

    fn bind_list(&mut self, items: &[String]) -> String {
        items
            .iter()
            .map(|item| self.bind(item.clone()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The candidate query for one fetch request (the first two fetchable items), or `None` when the filter
/// accepts nothing at all.
pub(crate) fn candidate_query(request: &WorkerFetch, now: i64) -> Option<(String, Vec<Value>)> {
    let mut query = Query::default();
    let now_param = query.bind(now);
    let tag_clause = match &request.tag_filter {
        TagFilter::None => return None,
        TagFilter::Any => "1".to_owned(),
        TagFilter::DefaultOnly => "w.tag IS NULL".to_owned(),
        TagFilter::Tags(tags) if tags.is_empty() => return None,
        TagFilter::Tags(tags) => format!("w.tag IN ({})", query.bind_list(tags)),
        TagFilter::DefaultAnd(tags) if tags.is_empty() => "w.tag IS NULL".to_owned(),
        TagFilter::DefaultAnd(tags) => format!("(w.tag IS NULL OR w.tag IN ({}))", query.bind_list(tags)),
    };
    let (join, session_clause) = match &request.session {
        None => ("", "w.session_id IS NULL".to_owned()),
        Some(routing) => {
            let owner = query.bind(routing.owner_id.clone());
            let held_by_me = format!("(s.owner_id = {owner} AND s.locked_until_ms > {now_param})");
            let clause = if routing.may_claim_new {
                format!(
                    "(w.session_id IS NULL OR {held_by_me} OR s.session_id IS NULL OR s.locked_until_ms <= {now_param})"
                )
            } else {
                format!("(w.session_id IS NULL OR {held_by_me})")
            };
            ("LEFT JOIN sessions AS s ON s.session_id = w.session_id", clause)
        }
    };
    let sql = format!(
        "SELECT w.id FROM worker_queue AS w {join}
         WHERE w.visible_at_ms <= {now_param} AND (w.lock_token IS NULL OR w.locked_until_ms <= {now_param})
           AND {tag_clause} AND {session_clause}
         ORDER BY w.id LIMIT 2"
    );
    Some((sql, query.values))
}

/// `Provider::fetch_work_item`, one look.
pub(crate) fn fetch(
    conn: &Connection,
    request: &WorkerFetch,
) -> Result<Polled<WorkItemLease>, ProviderError> {
    const OP: &str = "fetch_work_item";
    let now = now_ms();
    // Up to two candidates: the second one tells whether more work is fetchable.
    let candidates: Vec<i64> = match candidate_query(request, now) {
        None => Vec::new(),
        Some((text, values)) => conn
            .prepare_cached(&text)
            .and_then(|mut stmt| {
                stmt.query_map(params_from_iter(values), |row| row.get::<_, i64>(0))?
                    .collect()
            })
            .map_err(sql(OP))?,
    };
    let Some(&id) = candidates.first() else {
        conn.prepare_cached(FORGET_EXPIRED_SESSIONS)
            .and_then(|mut stmt| stmt.execute([now]))
            .map_err(sql(OP))?;
        let next_due_ms = conn
            .prepare_cached(NEXT_DUE)
            .and_then(|mut stmt| stmt.query_row([now], |row| row.get::<_, Option<i64>>(0)))
            .map_err(sql(OP))?;
        return Ok(Polled::Empty { next_due_ms });
    };

    let secret = lock_token::new_secret();
    let lease = conn
        .prepare_cached(READ_ITEM)
        .and_then(|mut stmt| {
            stmt.query_row([id], |row| {
                Ok(WorkItemLease {
                    lock_token: lock_token::token(&secret, &id.to_string()),
                    activity: ActivityRef {
                        instance_id: row.get(0)?,
                        execution_id: row.get(1)?,
                        event_id: row.get(2)?,
                    },
                    payload: text_lossy(row, 3)?,
                    attempt: row.get(4)?,
                    session_id: row.get(5)?,
                    tag: row.get(6)?,
                })
            })
        })
        .map_err(sql(OP))?;
    conn.prepare_cached(LOCK_ITEM)
        .and_then(|mut stmt| {
            stmt.execute(params![
                secret,
                now.saturating_add(duration_ms(request.lock_timeout)),
                id
            ])
        })
        .map_err(sql(OP))?;
    if let (Some(session_id), Some(routing)) = (&lease.session_id, &request.session) {
        // Owned by this owner: extends the lease; unowned or expired: claims it (the candidate query
        // admitted the item only in those two cases).
        conn.prepare_cached(CLAIM_SESSION)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    session_id,
                    routing.owner_id,
                    now.saturating_add(duration_ms(routing.lease))
                ])
            })
            .map_err(sql(OP))?;
    }
    Ok(Polled::Found {
        item: lease,
        more: candidates.len() > 1,
    })
}

fn lock_lost(operation: &'static str) -> ProviderError {
    ProviderError::lock_lost(
        operation,
        "the work item's lock token is unknown, its lease expired, or the item was cancelled; nothing was changed",
    )
}

/// The row id and secret of a work-item token; `LockLost` for text no fetch produced.
fn parse_token(operation: &'static str, token: &str) -> Result<(i64, String), ProviderError> {
    lock_token::parse(token)
        .and_then(|(secret, id)| Some((id.parse().ok()?, secret.to_owned())))
        .ok_or_else(|| lock_lost(operation))
}

/// `Provider::ack_work_item`. Returns whether a completion was enqueued.
pub(crate) fn ack(
    conn: &Connection,
    token: &str,
    completion: Option<&NewMessage>,
) -> Result<bool, ProviderError> {
    const OP: &str = "ack_work_item";
    let now = now_ms();
    let (id, secret) = parse_token(OP, token)?;
    let deleted = conn
        .prepare_cached("DELETE FROM worker_queue WHERE id = ?1 AND lock_token = ?2 AND locked_until_ms > ?3")
        .and_then(|mut stmt| stmt.execute(params![id, secret, now]))
        .map_err(sql(OP))?;
    if deleted == 0 {
        return Err(lock_lost(OP));
    }
    match completion {
        // Dropped when its instance is gone: a completion must never block other instances' work.
        Some(message) => enqueue_from_ack(conn, OP, message, now),
        None => Ok(false),
    }
}

/// `Provider::abandon_work_item`.
pub(crate) fn abandon(conn: &Connection, token: &str, delay_ms: Option<i64>) -> Result<(), ProviderError> {
    const OP: &str = "abandon_work_item";
    let now = now_ms();
    let (id, secret) = parse_token(OP, token)?;
    let released = conn
        .prepare_cached(
            "UPDATE worker_queue SET lock_token = NULL, locked_until_ms = NULL, visible_at_ms = MAX(visible_at_ms, ?4)
             WHERE id = ?1 AND lock_token = ?2 AND locked_until_ms > ?3",
        )
        .and_then(|mut stmt| stmt.execute(params![id, secret, now, now.saturating_add(delay_ms.unwrap_or(0))]))
        .map_err(sql(OP))?;
    if released == 0 {
        return Err(lock_lost(OP));
    }
    Ok(())
}

/// `Provider::renew_work_item_lock`.
pub(crate) fn renew(conn: &Connection, token: &str, extend_ms: i64) -> Result<(), ProviderError> {
    const OP: &str = "renew_work_item_lock";
    let now = now_ms();
    let (id, secret) = parse_token(OP, token)?;
    let renewed = conn
        .prepare_cached(
            "UPDATE worker_queue SET locked_until_ms = ?4 WHERE id = ?1 AND lock_token = ?2 AND locked_until_ms > ?3",
        )
        .and_then(|mut stmt| stmt.execute(params![id, secret, now, now.saturating_add(extend_ms)]))
        .map_err(sql(OP))?;
    if renewed == 0 {
        return Err(lock_lost(OP));
    }
    Ok(())
}

/// `Provider::renew_session_leases`: only live leases held by `owner_id` are extended.
pub(crate) fn renew_sessions(
    conn: &Connection,
    owner_id: &str,
    session_ids: &[String],
    extend_ms: i64,
) -> Result<usize, ProviderError> {
    const OP: &str = "renew_session_leases";
    let now = now_ms();
    let mut renew = conn
        .prepare_cached(
            "UPDATE sessions SET locked_until_ms = ?3
             WHERE session_id = ?1 AND owner_id = ?2 AND locked_until_ms > ?4",
        )
        .map_err(sql(OP))?;
    let mut renewed = 0;
    for session_id in session_ids {
        renewed += renew
            .execute(params![session_id, owner_id, now.saturating_add(extend_ms), now])
            .map_err(sql(OP))?;
    }
    Ok(renewed)
}

/// `Provider::release_session`: a no-op unless `owner_id` holds the session. Returns whether it did.
pub(crate) fn release_session(
    conn: &Connection,
    owner_id: &str,
    session_id: &str,
) -> Result<bool, ProviderError> {
    conn.prepare_cached("DELETE FROM sessions WHERE session_id = ?1 AND owner_id = ?2")
        .and_then(|mut stmt| stmt.execute(params![session_id, owner_id]))
        .map(|released| released > 0)
        .map_err(sql("release_session"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use duroxide_core::provider::SessionRouting;
    use std::time::Duration;

    fn request(tag_filter: TagFilter, session: Option<SessionRouting>) -> WorkerFetch {
        WorkerFetch {
            lock_timeout: Duration::from_secs(1),
            tag_filter,
            session,
        }
    }

    #[test]
    fn placeholders_match_bound_values() {
        let routing = SessionRouting {
            owner_id: "me".into(),
            lease: Duration::from_secs(1),
            may_claim_new: true,
        };
        for filter in [
            TagFilter::Any,
            TagFilter::DefaultOnly,
            TagFilter::Tags(vec!["a".into(), "b".into()]),
            TagFilter::DefaultAnd(vec!["a".into()]),
        ] {
            for session in [None, Some(routing.clone())] {
                let (sql, values) = candidate_query(&request(filter.clone(), session), 5).expect("query");
                let highest = (1..=values.len()).rev().find(|n| sql.contains(&format!("?{n}")));
                assert_eq!(highest, Some(values.len()), "{sql}");
            }
        }
    }

    #[test]
    fn filters_that_accept_nothing_need_no_query() {
        assert!(candidate_query(&request(TagFilter::None, None), 5).is_none());
        assert!(candidate_query(&request(TagFilter::Tags(vec![]), None), 5).is_none());
    }
}
