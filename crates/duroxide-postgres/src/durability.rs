//! Which acks wait for their WAL flush: those whose changes a client or another instance can see.
//! An instance's own progress may commit without waiting (see [`Durability`]).
//!
//! Why: a commit that waits for its flush costs the server an fsync wait and the caller a round trip
//! that long, and in a chain of activities most acks are progress nobody outside the instance sees:
//! a turn that schedules the next activity, an activity's result. PostgreSQL's
//! `synchronous_commit = off` commits such a transaction at once and flushes it within a few
//! hundred milliseconds. The WAL is one sequence, so a commit that waits for its flush also flushes
//! every commit before it: a visible change never outlives the progress it came from, and a server
//! crash can only take back the most recent progress, as a whole, which the instance then redoes.

use duroxide_core::provider::{NewMessage, TurnAck};

/// When an ack is safe from a crash of the database server (or its machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// What clients and other instances can see is durable when the call returns, and nobody can
    /// read it before: starts, raised events, an instance's status, output, custom status and KV,
    /// messages to other instances (events, sub-orchestrations). An instance's own progress (a turn
    /// that only appends history and schedules activities, timers or messages to itself, and an
    /// activity's result) commits without waiting for its WAL flush, which the server does within
    /// three times `wal_writer_delay` (600 ms by default). A client reading the history, or the
    /// version an instance's first turn resolved, may see such progress before it is durable.
    ///
    /// A crash of the server can take back at most that much progress: the instance's history and
    /// queues then stand where they stood before it, its turns run again from there, and the
    /// activities they schedule run again (activities run at least once in any case; a crashed
    /// worker has the same effect). A crash of a runtime process loses nothing. This is what
    /// PostgreSQL itself promises for `synchronous_commit = off`, applied only to progress.
    #[default]
    Normal,
    /// Every ack waits for its WAL flush before it returns.
    Full,
}

impl Durability {
    /// Whether a turn's ack must wait for its flush: under [`Durability::Normal`], when it changes
    /// anything beyond `instance_id`'s own progress.
    pub(crate) fn turn_waits(self, instance_id: &str, ack: &TurnAck) -> bool {
        self == Durability::Full
            || ack.changes_status()
            || ack.output.is_some()
            || !ack.kv_changes.is_empty()
            || ack
                .messages
                .iter()
                .any(|m| m.instance_id != instance_id || m.creates.is_some())
    }

    /// Whether an activity's ack must wait for its flush: under [`Durability::Normal`], unless it
    /// only stores a result for its instance (a completion that creates an instance or is delayed
    /// waits, as does an ack without a completion, which is rare).
    pub(crate) fn completion_waits(self, completion: Option<&NewMessage>) -> bool {
        self == Durability::Full
            || completion.is_none_or(|c| c.creates.is_some() || c.visible_at_ms.is_some())
    }
}

#[cfg(test)]
mod tests {
    use duroxide_core::provider::{
        CustomStatusChange, ExecutionStatus, InstanceCreation, KvChange, NewWorkItem,
    };

    use super::*;

    fn progress() -> TurnAck {
        TurnAck {
            execution_id: 1,
            history: Vec::new(),
            status: None,
            output: None,
            name: None,
            version: None,
            custom_status: CustomStatusChange::Unchanged,
            kv_changes: Vec::new(),
            worker_items: Vec::<NewWorkItem>::new(),
            messages: vec![message("me")],
            cancel_activities: Vec::new(),
        }
    }

    fn message(instance_id: &str) -> NewMessage {
        NewMessage {
            instance_id: instance_id.into(),
            payload: "timer".into(),
            visible_at_ms: Some(5),
            creates: None,
        }
    }

    #[test]
    fn only_an_instances_own_progress_skips_the_flush() {
        let normal = Durability::Normal;
        assert!(!normal.turn_waits("me", &progress()));
        let running = TurnAck {
            status: Some(ExecutionStatus::Running),
            ..progress()
        };
        assert!(
            !normal.turn_waits("me", &running),
            "a running execution stays running"
        );

        let visible = [
            TurnAck {
                status: Some(ExecutionStatus::Completed),
                output: Some("done".into()),
                ..progress()
            },
            TurnAck {
                custom_status: CustomStatusChange::Set(Some("step 2".into())),
                ..progress()
            },
            TurnAck {
                kv_changes: vec![KvChange::Delete { key: "k".into() }],
                ..progress()
            },
            TurnAck {
                messages: vec![message("me"), message("other")],
                ..progress()
            },
            TurnAck {
                messages: vec![NewMessage {
                    creates: Some(InstanceCreation {
                        name: "Child".into(),
                        version: None,
                        parent_instance_id: Some("me".into()),
                    }),
                    ..message("child")
                }],
                ..progress()
            },
        ];
        for ack in &visible {
            assert!(normal.turn_waits("me", ack), "{ack:?}");
        }
        assert!(Durability::Full.turn_waits("me", &progress()));
    }

    #[test]
    fn an_activity_result_for_its_instance_skips_the_flush() {
        let result = NewMessage {
            visible_at_ms: None,
            ..message("me")
        };
        assert!(!Durability::Normal.completion_waits(Some(&result)));
        assert!(Durability::Full.completion_waits(Some(&result)));
        assert!(
            Durability::Normal.completion_waits(Some(&message("me"))),
            "delayed"
        );
        assert!(Durability::Normal.completion_waits(None));
    }
}
