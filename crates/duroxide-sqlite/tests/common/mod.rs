//! Helpers shared by the provider tests: message builders and condition waits.
#![allow(dead_code)] // each test file uses its own subset

use std::future::Future;
use std::time::Duration;

use duroxide_core::provider::{
    ActivityRef, HistoryRecord, InstanceCreation, NewMessage, NewWorkItem, TagFilter, TurnAck, WorkerFetch,
};

/// Upper bound for any wait in these tests; reaching it is a failure, not a pacing device.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A long lease, so that no lock expires while a test runs.
pub const LEASE: Duration = Duration::from_secs(60);

pub fn start(instance_id: &str) -> NewMessage {
    NewMessage {
        instance_id: instance_id.to_owned(),
        payload: format!(r#"{{"start":"{instance_id}"}}"#),
        visible_at_ms: None,
        creates: Some(InstanceCreation {
            name: "Flow".into(),
            version: None,
            parent_instance_id: None,
        }),
    }
}

pub fn message(instance_id: &str, payload: &str) -> NewMessage {
    NewMessage {
        instance_id: instance_id.to_owned(),
        payload: payload.to_owned(),
        visible_at_ms: None,
        creates: None,
    }
}

pub fn event(event_id: u64) -> HistoryRecord {
    HistoryRecord {
        event_id,
        kind: "Test".into(),
        payload: format!(r#"{{"event":{event_id}}}"#),
    }
}

pub fn work_item(instance_id: &str, execution_id: u64, event_id: u64) -> NewWorkItem {
    NewWorkItem {
        activity: ActivityRef {
            instance_id: instance_id.to_owned(),
            execution_id,
            event_id,
        },
        payload: format!(r#"{{"activity":{event_id}}}"#),
        session_id: None,
        tag: None,
    }
}

/// A turn of execution 1 appending `events`.
pub fn turn(events: &[u64]) -> TurnAck {
    TurnAck {
        execution_id: 1,
        history: events.iter().copied().map(event).collect(),
        ..TurnAck::default()
    }
}

pub fn worker_fetch() -> WorkerFetch {
    WorkerFetch {
        lock_timeout: LEASE,
        tag_filter: TagFilter::Any,
        session: None,
    }
}

/// Polls `condition` until it holds, failing after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::task::yield_now().await;
    }
}
