//! Encoding of events, messages and worker items to the JSON text that providers store.

use crate::error::CorruptHistoryError;
use crate::history::{Event, EventKind};
use crate::message::{ActivityWork, OrchestratorMessage};
use crate::provider::HistoryRecord;

/// A stored message or worker item could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode stored {what}: {reason}")]
pub struct DecodeError {
    pub what: &'static str,
    pub reason: String,
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Our own types contain only strings, numbers and enums: serialising them cannot fail.
    serde_json::to_string(value).expect("core types always serialise")
}

/// Encodes one event as a history record with its explicit id and type name.
pub fn encode_event(event: &Event) -> HistoryRecord {
    HistoryRecord {
        event_id: event.event_id,
        kind: event.kind.name().to_string(),
        payload: to_json(event),
    }
}

/// Decodes one stored event.
pub fn decode_event(record: &HistoryRecord) -> Result<Event, DecodeError> {
    serde_json::from_str(&record.payload).map_err(|e| DecodeError {
        what: "history event",
        reason: e.to_string(),
    })
}

/// Decodes and validates a stored history: every record decodes, ids are 1, 2, 3, ..., the first event
/// is `OrchestrationStarted` and nothing follows a terminal event.
pub fn decode_history(records: &[HistoryRecord]) -> Result<Vec<Event>, CorruptHistoryError> {
    let mut events = Vec::with_capacity(records.len());
    for (position, record) in records.iter().enumerate() {
        let event = decode_event(record).map_err(|e| CorruptHistoryError::Undecodable {
            position: position + 1,
            reason: e.reason,
        })?;
        let expected = position as u64 + 1;
        if event.event_id != expected || record.event_id != expected {
            let found = if record.event_id != expected {
                record.event_id
            } else {
                event.event_id
            };
            return Err(CorruptHistoryError::IdGap { expected, found });
        }
        if position == 0 && !matches!(event.kind, EventKind::OrchestrationStarted { .. }) {
            return Err(CorruptHistoryError::MissingStart {
                found: event.kind.name().to_string(),
            });
        }
        if let Some(last) = events.last() {
            let last: &Event = last;
            if last.kind.is_terminal() {
                return Err(CorruptHistoryError::AfterTerminal {
                    event_id: last.event_id,
                });
            }
        }
        events.push(event);
    }
    Ok(events)
}

pub fn encode_message(message: &OrchestratorMessage) -> String {
    to_json(message)
}

pub fn decode_message(payload: &str) -> Result<OrchestratorMessage, DecodeError> {
    serde_json::from_str(payload).map_err(|e| DecodeError {
        what: "orchestrator message",
        reason: e.to_string(),
    })
}

pub fn encode_activity(work: &ActivityWork) -> String {
    to_json(work)
}

pub fn decode_activity(payload: &str) -> Result<ActivityWork, DecodeError> {
    serde_json::from_str(payload).map_err(|e| DecodeError {
        what: "worker item",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> Event {
        Event {
            event_id: 1,
            source_event_id: None,
            timestamp_ms: 5,
            kind: EventKind::OrchestrationStarted {
                name: "O".into(),
                version: "1.0.0".into(),
                input: "1".into(),
                parent: None,
                initial_custom_status: None,
            },
        }
    }

    #[test]
    fn event_round_trips() {
        let rec = encode_event(&started());
        assert_eq!(rec.kind, "OrchestrationStarted");
        assert_eq!(decode_history(&[rec]).unwrap(), vec![started()]);
    }

    #[test]
    fn corrupt_and_gapped_histories_are_refused() {
        let mut bad = encode_event(&started());
        bad.payload.truncate(10);
        assert!(matches!(
            decode_history(&[bad]),
            Err(CorruptHistoryError::Undecodable { position: 1, .. })
        ));

        let mut second = started();
        second.event_id = 3;
        second.kind = EventKind::TimerCreated { fire_at_ms: 9 };
        let err = decode_history(&[encode_event(&started()), encode_event(&second)]).unwrap_err();
        assert_eq!(
            err,
            CorruptHistoryError::IdGap {
                expected: 2,
                found: 3
            }
        );
    }

    #[test]
    fn unknown_event_kind_is_an_error() {
        let rec = HistoryRecord {
            event_id: 1,
            kind: "FromTheFuture".into(),
            payload: r#"{"event_id":1,"timestamp_ms":0,"kind":{"type":"FromTheFuture"}}"#.into(),
        };
        let err = decode_history(&[rec]).unwrap_err();
        assert!(err.to_string().contains("FromTheFuture"), "{err}");
    }
}
