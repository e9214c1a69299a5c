//! Committing one orchestration turn (`ack_orchestration_item`): the whole ack travels as arrays to one
//! database function, so a turn is one round trip and one transaction.
//!
//! The ack is idempotent for its own token: the instance remembers the token and a fingerprint of the
//! last committed ack, so the same ack repeated after its reply was lost reports success instead of
//! `LockLost` (which would make the runtime believe the turn failed). A different ack with that token
//! is still refused.

use std::collections::HashMap;
use std::time::Duration;

use duroxide_core::provider::{
    CustomStatusChange, ExecutionStatus, KvChange, NewMessage, NewWorkItem, ProviderError, ProviderErrorKind,
    TurnAck, WorkItemLease,
};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::batch::{Param, Sent};

use crate::db::Db;
use crate::error::{db_error, describe};
use crate::fingerprint::Fingerprint;
use crate::lock_token;
use crate::orchestrator_queue::lock_lost;
use crate::rows::{self, get, time_to_i64, to_i64};

const OP: &str = "ack_orchestration_item";

/// The work an ack made fetchable: items per queue, or `unknown` (a repeat of an ack that committed
/// earlier, whose wake-ups may never have gone out).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AckEffects {
    pub(crate) orchestrator: u32,
    pub(crate) worker: u32,
    pub(crate) unknown: bool,
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// Messages as parallel arrays, the shape `enqueue_messages` takes.
#[derive(Debug, Default)]
pub(crate) struct MessageColumns<'a> {
    pub(crate) instances: Vec<&'a str>,
    pub(crate) payloads: Vec<&'a str>,
    pub(crate) visible_at: Vec<Option<i64>>,
    pub(crate) creates: Vec<bool>,
    pub(crate) names: Vec<Option<&'a str>>,
    pub(crate) versions: Vec<Option<&'a str>>,
    pub(crate) parents: Vec<Option<&'a str>>,
}

impl<'a> MessageColumns<'a> {
    pub(crate) fn new(messages: impl IntoIterator<Item = &'a NewMessage>) -> Self {
        let mut columns = MessageColumns::default();
        for message in messages {
            columns.instances.push(&message.instance_id);
            columns.payloads.push(&message.payload);
            columns.visible_at.push(message.visible_at_ms.map(time_to_i64));
            let creates = message.creates.as_ref();
            columns.creates.push(creates.is_some());
            columns.names.push(creates.map(|c| c.name.as_str()));
            columns.versions.push(creates.and_then(|c| c.version.as_deref()));
            columns
                .parents
                .push(creates.and_then(|c| c.parent_instance_id.as_deref()));
        }
        columns
    }

    /// The seven columns as statement parameters of their own (a batch runs the statement).
    pub(crate) fn params(&self) -> [Param; 7] {
        let owned = |texts: &[&str]| -> Vec<String> { texts.iter().map(|t| (*t).to_owned()).collect() };
        let owned_opt = |texts: &[Option<&str>]| -> Vec<Option<String>> {
            texts.iter().map(|t| t.map(str::to_owned)).collect()
        };
        [
            Box::new(owned(&self.instances)),
            Box::new(owned(&self.payloads)),
            Box::new(self.visible_at.clone()),
            Box::new(self.creates.clone()),
            Box::new(owned_opt(&self.names)),
            Box::new(owned_opt(&self.versions)),
            Box::new(owned_opt(&self.parents)),
        ]
    }
}

/// The final state of each key the ack touches: within one ack only the last change per key matters,
/// which lets the database apply sets and deletes as two set-based statements.
fn reduce_kv(changes: &[KvChange]) -> (Vec<String>, Vec<String>, Vec<i64>, Vec<String>) {
    let mut last: HashMap<&str, &KvChange> = HashMap::new();
    for change in changes {
        let key = match change {
            KvChange::Set { key, .. } | KvChange::Delete { key } => key.as_str(),
        };
        last.insert(key, change);
    }
    let (mut set_keys, mut set_values, mut set_times, mut deletes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, change) in last {
        match change {
            KvChange::Set {
                value, updated_at_ms, ..
            } => {
                set_keys.push(key.to_owned());
                set_values.push(value.clone());
                set_times.push(time_to_i64(*updated_at_ms));
            }
            KvChange::Delete { .. } => deletes.push(key.to_owned()),
        }
    }
    (set_keys, set_values, set_times, deletes)
}

/// A fingerprint of everything the ack writes, to recognise an identical repeat.
fn digest(ack: &TurnAck) -> i64 {
    let mut f = Fingerprint::default();
    f.u64(ack.execution_id);
    f.u64(ack.history.len() as u64);
    for record in &ack.history {
        f.u64(record.event_id).str(&record.kind).str(&record.payload);
    }
    f.opt_str(ack.status.map(ExecutionStatus::as_str))
        .opt_str(ack.output.as_deref())
        .opt_str(ack.name.as_deref())
        .opt_str(ack.version.as_deref());
    match &ack.custom_status {
        CustomStatusChange::Unchanged => f.bytes(&[0]),
        CustomStatusChange::Set(value) => f.bytes(&[1]).opt_str(value.as_deref()),
    };
    f.u64(ack.kv_changes.len() as u64);
    for change in &ack.kv_changes {
        match change {
            KvChange::Set {
                key,
                value,
                updated_at_ms,
            } => f.bytes(&[1]).str(key).str(value).u64(*updated_at_ms),
            KvChange::Delete { key } => f.bytes(&[2]).str(key),
        };
    }
    f.u64(ack.worker_items.len() as u64);
    for item in &ack.worker_items {
        let a = &item.activity;
        f.str(&a.instance_id)
            .u64(a.execution_id)
            .u64(a.event_id)
            .str(&item.payload)
            .opt_str(item.session_id.as_deref())
            .opt_str(item.tag.as_deref());
    }
    f.u64(ack.messages.len() as u64);
    for message in &ack.messages {
        f.str(&message.instance_id)
            .str(&message.payload)
            .opt_u64(message.visible_at_ms);
        match &message.creates {
            None => f.bytes(&[0]),
            Some(c) => f
                .bytes(&[1])
                .str(&c.name)
                .opt_str(c.version.as_deref())
                .opt_str(c.parent_instance_id.as_deref()),
        };
    }
    f.u64(ack.cancel_activities.len() as u64);
    for a in &ack.cancel_activities {
        f.str(&a.instance_id).u64(a.execution_id).u64(a.event_id);
    }
    f.finish() as i64
}

/// Work items an ack may store already leased for this process's waiting fetches (see `handoff`):
/// at most `count`, for `lock`, under `secret`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseRequest {
    pub(crate) count: usize,
    pub(crate) lock: Duration,
    pub(crate) secret: Uuid,
}

/// Whether a work item can be handed to any worker fetch (see `handoff`).
pub(crate) fn handable(item: &NewWorkItem) -> bool {
    item.tag.is_none() && item.session_id.is_none()
}

/// `Provider::ack_orchestration_item`. `sent`: see `batch`. With `lease`, returns the work items it
/// stored leased (when the turn committed), in the ack's order.
pub(crate) async fn ack(
    db: &Db,
    token: &str,
    ack: &TurnAck,
    sent: Option<Sent>,
    lease: Option<LeaseRequest>,
) -> Result<(AckEffects, Vec<WorkItemLease>), ProviderError> {
    let (secret, instance_id) = lock_token::parse(token).ok_or_else(|| lock_lost(OP))?;
    let execution_id = to_i64(OP, "execution id", ack.execution_id)?;
    let event_ids = ack
        .history
        .iter()
        .map(|r| to_i64(OP, "event id", r.event_id))
        .collect::<Result<Vec<_>, _>>()?;
    let event_kinds: Vec<String> = ack.history.iter().map(|r| r.kind.clone()).collect();
    let event_payloads: Vec<String> = ack.history.iter().map(|r| r.payload.clone()).collect();
    let execution_status = ack.status.map(|s| s.as_str().to_owned());
    let instance_status = ack.status.map(|s| s.instance_status().as_str().to_owned());
    let (custom_status_set, custom_status) = match &ack.custom_status {
        CustomStatusChange::Unchanged => (false, None),
        CustomStatusChange::Set(value) => (true, value.clone()),
    };
    let (kv_set_keys, kv_set_values, kv_set_times, kv_delete_keys) = reduce_kv(&ack.kv_changes);

    // The first `lease.count` items that any fetch may take go leased; the rest into the queue.
    let lease = lease.filter(|l| l.count > 0);
    let mut leased: Vec<&NewWorkItem> = Vec::new();
    let mut work: Vec<&NewWorkItem> = Vec::new();
    for item in &ack.worker_items {
        match lease {
            Some(l) if leased.len() < l.count && handable(item) => leased.push(item),
            _ => work.push(item),
        }
    }
    let work_instances: Vec<String> = work.iter().map(|w| w.activity.instance_id.clone()).collect();
    let work_executions = work
        .iter()
        .map(|w| to_i64(OP, "worker item execution id", w.activity.execution_id))
        .collect::<Result<Vec<_>, _>>()?;
    let work_events = work
        .iter()
        .map(|w| to_i64(OP, "worker item event id", w.activity.event_id))
        .collect::<Result<Vec<_>, _>>()?;
    let work_payloads: Vec<String> = work.iter().map(|w| w.payload.clone()).collect();
    let work_sessions: Vec<Option<String>> = work.iter().map(|w| w.session_id.clone()).collect();
    let work_tags: Vec<Option<String>> = work.iter().map(|w| w.tag.clone()).collect();

    let messages = MessageColumns::new(&ack.messages);

    let cancels = &ack.cancel_activities;
    let cancel_instances: Vec<String> = cancels.iter().map(|a| a.instance_id.clone()).collect();
    // Ids beyond bigint cannot name a stored item: such cancellations match nothing.
    let cancel_executions: Vec<i64> = cancels.iter().map(|a| time_to_i64(a.execution_id)).collect();
    let cancel_events: Vec<i64> = cancels.iter().map(|a| time_to_i64(a.event_id)).collect();

    let digest = digest(ack);
    // Owned: the ack may be committed by a batch another caller sends (see `batch`).
    let mut params: Vec<Param> = vec![
        Box::new(instance_id.to_owned()),
        Box::new(secret),
        Box::new(digest),
        Box::new(execution_id),
        Box::new(execution_status),
        Box::new(instance_status),
        Box::new(ack.output.clone()),
        Box::new(ack.name.clone()),
        Box::new(ack.version.clone()),
        Box::new(custom_status_set),
        Box::new(custom_status),
        Box::new(event_ids),
        Box::new(event_kinds),
        Box::new(event_payloads),
        Box::new(kv_set_keys),
        Box::new(kv_set_values),
        Box::new(kv_set_times),
        Box::new(kv_delete_keys),
        Box::new(work_instances),
        Box::new(work_executions),
        Box::new(work_events),
        Box::new(work_payloads),
        Box::new(work_sessions),
        Box::new(work_tags),
    ];
    params.extend(messages.params());
    params.extend([
        Box::new(cancel_instances) as Param,
        Box::new(cancel_executions),
        Box::new(cancel_events),
    ]);

    // Without a lease the lease columns are empty (one statement either way).
    let lease_secret = lease.map_or_else(|| db.new_secret(), |l| l.secret);
    let leasing = !leased.is_empty();
    let lock_ms = lease.filter(|_| leasing).map(|l| rows::duration_ms(l.lock));
    params.extend([
        Box::new(lock_ms.map(|_| lease_secret)) as Param,
        Box::new(lock_ms),
        Box::new(
            leased
                .iter()
                .map(|w| w.activity.instance_id.clone())
                .collect::<Vec<_>>(),
        ),
        Box::new(
            leased
                .iter()
                .map(|w| to_i64(OP, "worker item execution id", w.activity.execution_id))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Box::new(
            leased
                .iter()
                .map(|w| to_i64(OP, "worker item event id", w.activity.event_id))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Box::new(leased.iter().map(|w| w.payload.clone()).collect::<Vec<_>>()),
    ]);
    let statement = &db.sql.ack_turn;
    let waits = db.durability.turn_waits(instance_id, ack);
    let row = db
        .commit_query(OP, statement, params, None, waits, sent, |err| {
            refused_ack(err, instance_id, ack.execution_id)
        })
        .await?
        .pop()
        .ok_or_else(|| ProviderError::permanent(OP, "the ack function returned no row"))?;
    match get::<i32>(OP, &row, 0)? {
        0 => {
            let effects = AckEffects {
                orchestrator: count(get(OP, &row, 2)?),
                worker: count(get(OP, &row, 3)?),
                unknown: false,
            };
            let ids: Vec<i64> = get::<Option<Vec<i64>>>(OP, &row, 4)?.unwrap_or_default();
            let leases = ids
                .into_iter()
                .zip(leased)
                .map(|(id, item)| WorkItemLease {
                    lock_token: lock_token::token(lease_secret, &id.to_string()),
                    activity: item.activity.clone(),
                    payload: item.payload.clone(),
                    attempt: 1,
                    session_id: None,
                    tag: None,
                })
                .collect();
            Ok((effects, leases))
        }
        // Committed by an earlier attempt whose reply was lost, so its wake-ups may never have gone
        // out, and how much they announced is not known; it leased nothing now.
        1 => Ok((
            AckEffects {
                unknown: true,
                ..AckEffects::default()
            },
            Vec::new(),
        )),
        2 => Err(lock_lost(OP)),
        _ => {
            let current: Option<i64> = get(OP, &row, 1)?;
            Err(ProviderError::invalid_input(
                OP,
                format!(
                    "the ack is for execution {} but instance {instance_id:?} is already on execution {}",
                    ack.execution_id,
                    current.unwrap_or_default()
                ),
            ))
        }
    }
}

/// A duplicate history event or execution is a caller bug that no retry can fix; say which.
fn refused_ack(err: tokio_postgres::Error, instance_id: &str, execution_id: u64) -> ProviderError {
    let duplicate = err.code() == Some(&SqlState::UNIQUE_VIOLATION);
    match err.as_db_error().and_then(|e| e.constraint()) {
        Some("history_pkey") if duplicate => ProviderError::new(
            ProviderErrorKind::Permanent,
            OP,
            format!(
                "a history event of execution {execution_id} of instance {instance_id:?} already exists; \
                 the whole ack was rolled back ({})",
                describe(&err)
            ),
        ),
        Some("executions_pkey") if duplicate => ProviderError::new(
            ProviderErrorKind::Permanent,
            OP,
            format!("execution {execution_id} of instance {instance_id:?} already exists; the ack was rolled back"),
        ),
        _ => db_error(OP, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duroxide_core::provider::HistoryRecord;

    fn sample() -> TurnAck {
        TurnAck {
            execution_id: 1,
            history: vec![HistoryRecord {
                event_id: 1,
                kind: "OrchestrationStarted".into(),
                payload: "{}".into(),
            }],
            ..TurnAck::default()
        }
    }

    #[test]
    fn digest_tells_different_acks_apart() {
        let a = sample();
        assert_eq!(digest(&a), digest(&a.clone()));
        let mut b = sample();
        b.history[0].payload = "{ }".into();
        assert_ne!(digest(&a), digest(&b));
        let mut c = sample();
        c.custom_status = CustomStatusChange::Set(None);
        assert_ne!(digest(&a), digest(&c));
    }

    #[test]
    fn kv_changes_reduce_to_the_last_per_key() {
        let changes = vec![
            KvChange::Set {
                key: "a".into(),
                value: "1".into(),
                updated_at_ms: 1,
            },
            KvChange::Delete { key: "a".into() },
            KvChange::Delete { key: "b".into() },
            KvChange::Set {
                key: "b".into(),
                value: "2".into(),
                updated_at_ms: 2,
            },
        ];
        let (set_keys, set_values, set_times, deletes) = reduce_kv(&changes);
        assert_eq!(set_keys, vec!["b"]);
        assert_eq!(set_values, vec!["2"]);
        assert_eq!(set_times, vec![2]);
        assert_eq!(deletes, vec!["a"]);
    }
}
