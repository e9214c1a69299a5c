//! Committing one orchestration turn (`ack_orchestration_item`): the whole ack travels as arrays to one
//! database function, so a turn is one round trip and one transaction.
//!
//! The ack is idempotent for its own token: the instance remembers the token and a fingerprint of the
//! last committed ack, so the same ack repeated after its reply was lost reports success instead of
//! `LockLost` (which would make the runtime believe the turn failed). A different ack with that token
//! is still refused.

use std::collections::HashMap;

use duroxide_core::provider::{
    CustomStatusChange, ExecutionStatus, KvChange, NewMessage, ProviderError, ProviderErrorKind, TurnAck,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::db::Db;
use crate::error::{db_error, describe};
use crate::fingerprint::Fingerprint;
use crate::lock_token;
use crate::orchestrator_queue::lock_lost;
use crate::rows::{get, time_to_i64, to_i64};

const OP: &str = "ack_orchestration_item";

/// Which queues an ack (or a worker's ack) made work fetchable on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AckEffects {
    pub(crate) orchestrator_work: bool,
    pub(crate) worker_work: bool,
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

    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.instances,
            &self.payloads,
            &self.visible_at,
            &self.creates,
            &self.names,
            &self.versions,
            &self.parents,
        ]
    }
}

/// The final state of each key the ack touches: within one ack only the last change per key matters,
/// which lets the database apply sets and deletes as two set-based statements.
fn reduce_kv(changes: &[KvChange]) -> (Vec<&str>, Vec<&str>, Vec<i64>, Vec<&str>) {
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
                set_keys.push(key);
                set_values.push(value.as_str());
                set_times.push(time_to_i64(*updated_at_ms));
            }
            KvChange::Delete { .. } => deletes.push(key),
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

/// `Provider::ack_orchestration_item`.
pub(crate) async fn ack(db: &Db, token: &str, ack: &TurnAck) -> Result<AckEffects, ProviderError> {
    let (secret, instance_id) = lock_token::parse(token).ok_or_else(|| lock_lost(OP))?;
    let execution_id = to_i64(OP, "execution id", ack.execution_id)?;
    let event_ids = ack
        .history
        .iter()
        .map(|r| to_i64(OP, "event id", r.event_id))
        .collect::<Result<Vec<_>, _>>()?;
    let event_kinds: Vec<&str> = ack.history.iter().map(|r| r.kind.as_str()).collect();
    let event_payloads: Vec<&str> = ack.history.iter().map(|r| r.payload.as_str()).collect();
    let execution_status = ack.status.map(ExecutionStatus::as_str);
    let instance_status = ack.status.map(|s| s.instance_status().as_str());
    let (custom_status_set, custom_status) = match &ack.custom_status {
        CustomStatusChange::Unchanged => (false, None),
        CustomStatusChange::Set(value) => (true, value.as_deref()),
    };
    let (kv_set_keys, kv_set_values, kv_set_times, kv_delete_keys) = reduce_kv(&ack.kv_changes);

    let work = &ack.worker_items;
    let work_instances: Vec<&str> = work.iter().map(|w| w.activity.instance_id.as_str()).collect();
    let work_executions = work
        .iter()
        .map(|w| to_i64(OP, "worker item execution id", w.activity.execution_id))
        .collect::<Result<Vec<_>, _>>()?;
    let work_events = work
        .iter()
        .map(|w| to_i64(OP, "worker item event id", w.activity.event_id))
        .collect::<Result<Vec<_>, _>>()?;
    let work_payloads: Vec<&str> = work.iter().map(|w| w.payload.as_str()).collect();
    let work_sessions: Vec<Option<&str>> = work.iter().map(|w| w.session_id.as_deref()).collect();
    let work_tags: Vec<Option<&str>> = work.iter().map(|w| w.tag.as_deref()).collect();

    let messages = MessageColumns::new(&ack.messages);

    let cancels = &ack.cancel_activities;
    let cancel_instances: Vec<&str> = cancels.iter().map(|a| a.instance_id.as_str()).collect();
    // Ids beyond bigint cannot name a stored item: such cancellations match nothing.
    let cancel_executions: Vec<i64> = cancels.iter().map(|a| time_to_i64(a.execution_id)).collect();
    let cancel_events: Vec<i64> = cancels.iter().map(|a| time_to_i64(a.event_id)).collect();

    let digest = digest(ack);
    let [m_instances, m_payloads, m_visible, m_creates, m_names, m_versions, m_parents] = messages.params();
    let params: [&(dyn ToSql + Sync); 34] = [
        &instance_id,
        &secret,
        &digest,
        &execution_id,
        &execution_status,
        &instance_status,
        &ack.output,
        &ack.name,
        &ack.version,
        &custom_status_set,
        &custom_status,
        &event_ids,
        &event_kinds,
        &event_payloads,
        &kv_set_keys,
        &kv_set_values,
        &kv_set_times,
        &kv_delete_keys,
        &work_instances,
        &work_executions,
        &work_events,
        &work_payloads,
        &work_sessions,
        &work_tags,
        m_instances,
        m_payloads,
        m_visible,
        m_creates,
        m_names,
        m_versions,
        m_parents,
        &cancel_instances,
        &cancel_executions,
        &cancel_events,
    ];

    let row = db
        .query_mapped(OP, &db.sql.ack_orchestration_item, &params, |err| {
            refused_ack(err, instance_id, ack.execution_id)
        })
        .await?
        .pop()
        .ok_or_else(|| ProviderError::permanent(OP, "the ack function returned no row"))?;
    match get::<i32>(OP, &row, 0)? {
        0 => Ok(AckEffects {
            orchestrator_work: get(OP, &row, 2)?,
            worker_work: get(OP, &row, 3)?,
        }),
        // Committed by an earlier attempt whose reply was lost, so its wake-ups may never have gone
        // out: announce both queues now.
        1 => Ok(AckEffects {
            orchestrator_work: true,
            worker_work: true,
        }),
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
