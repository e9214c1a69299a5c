//! A builder for hand-written histories: ids and timestamps are assigned in order.

use crate::error::ErrorDetails;
use crate::history::{Event, EventKind, ParentLink};

/// Builds a history event by event. Ids start at 1; each event is 1 ms after the previous one.
#[derive(Debug, Clone)]
pub struct HistoryBuilder {
    events: Vec<Event>,
    now_ms: u64,
}

impl HistoryBuilder {
    /// Starts with `OrchestrationStarted` (version 1.0.0) at t = 1,000,000 ms.
    pub fn started(name: &str, input: &str) -> Self {
        Self::started_with(name, "1.0.0", input, None)
    }

    pub fn started_with(name: &str, version: &str, input: &str, parent: Option<ParentLink>) -> Self {
        let mut b = HistoryBuilder {
            events: Vec::new(),
            now_ms: 1_000_000,
        };
        b.push(
            None,
            EventKind::OrchestrationStarted {
                name: name.into(),
                version: version.into(),
                input: input.into(),
                parent,
                initial_custom_status: None,
            },
        );
        b
    }

    /// Appends any event; returns the builder.
    pub fn push(&mut self, source_event_id: Option<u64>, kind: EventKind) -> &mut Self {
        let event_id = self.events.len() as u64 + 1;
        self.events.push(Event {
            event_id,
            source_event_id,
            timestamp_ms: self.now_ms,
            kind,
        });
        self.now_ms += 1;
        self
    }

    /// Id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.events.len() as u64 + 1
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn activity_scheduled(&mut self, name: &str, input: &str) -> &mut Self {
        let kind = EventKind::ActivityScheduled {
            name: name.into(),
            input: input.into(),
            session_id: None,
            tag: None,
        };
        self.push(None, kind)
    }

    pub fn activity_completed(&mut self, scheduled: u64, result: &str) -> &mut Self {
        self.push(
            Some(scheduled),
            EventKind::ActivityCompleted {
                result: result.into(),
            },
        )
    }

    pub fn activity_failed(&mut self, scheduled: u64, message: &str) -> &mut Self {
        self.push(
            Some(scheduled),
            EventKind::ActivityFailed {
                error: ErrorDetails::application(message),
            },
        )
    }

    pub fn timer_created(&mut self, fire_at_ms: u64) -> &mut Self {
        self.push(None, EventKind::TimerCreated { fire_at_ms })
    }

    pub fn timer_fired(&mut self, created: u64, fire_at_ms: u64) -> &mut Self {
        self.push(Some(created), EventKind::TimerFired { fire_at_ms })
    }

    pub fn external_subscribed(&mut self, name: &str) -> &mut Self {
        self.push(None, EventKind::ExternalSubscribed { name: name.into() })
    }

    pub fn external_event(&mut self, name: &str, data: &str) -> &mut Self {
        self.push(
            None,
            EventKind::ExternalEventReceived {
                name: name.into(),
                data: data.into(),
            },
        )
    }

    pub fn queue_subscribed(&mut self, queue: &str) -> &mut Self {
        self.push(None, EventKind::QueueSubscribed { queue: queue.into() })
    }

    pub fn queue_message(&mut self, queue: &str, data: &str) -> &mut Self {
        self.push(
            None,
            EventKind::QueueMessageReceived {
                queue: queue.into(),
                data: data.into(),
            },
        )
    }

    pub fn sub_orchestration_scheduled(&mut self, name: &str, instance_id: &str, input: &str) -> &mut Self {
        let kind = EventKind::SubOrchestrationScheduled {
            name: name.into(),
            version: None,
            instance_id: instance_id.into(),
            input: input.into(),
        };
        self.push(None, kind)
    }

    pub fn sub_orchestration_completed(&mut self, scheduled: u64, result: &str) -> &mut Self {
        self.push(
            Some(scheduled),
            EventKind::SubOrchestrationCompleted {
                result: result.into(),
            },
        )
    }

    pub fn completed(&mut self, output: &str) -> &mut Self {
        self.push(
            None,
            EventKind::OrchestrationCompleted {
                output: output.into(),
            },
        )
    }

    /// The finished history.
    pub fn build(&self) -> Vec<Event> {
        self.events.clone()
    }
}
