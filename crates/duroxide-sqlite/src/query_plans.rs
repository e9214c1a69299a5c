//! Test: every hot statement is answered through an index, never a full scan or a sort of a big table.
//!
//! `EXPLAIN QUERY PLAN` on the migrated schema; a plan that regresses (say, an index renamed or a
//! condition rewritten so SQLite cannot use it) fails here rather than as a slow production queue.

use std::time::Duration;

use duroxide_core::provider::{SessionRouting, TagFilter, WorkerFetch};
use rusqlite::Connection;

use crate::{orchestrator_queue as oq, turn_ack, worker_queue};

fn database() -> Connection {
    crate::connection::open_memory().expect("migrated in-memory database")
}

/// The plan's detail lines, one per step.
fn plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("explain");
    let count = stmt.parameter_count();
    let nulls = vec![rusqlite::types::Value::Null; count];
    stmt.query_map(rusqlite::params_from_iter(nulls), |row| row.get::<_, String>(3))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Fails when a step scans one of `tables` without an index, or sorts in a temporary b-tree.
fn assert_indexed(conn: &Connection, name: &str, sql: &str, tables: &[&str]) {
    let steps = plan(conn, sql);
    for step in &steps {
        let scans_table = tables.iter().any(|t| {
            step.starts_with(&format!("SCAN {t}"))
                && !step.contains("USING INDEX")
                && !step.contains("USING COVERING INDEX")
                && !step.contains("USING PRIMARY KEY")
        });
        assert!(!scans_table, "{name} scans a table: {steps:#?}");
        assert!(!step.contains("TEMP B-TREE"), "{name} sorts: {steps:#?}");
    }
}

const BIG: &[&str] = &[
    "instances",
    "i",
    "orchestrator_queue",
    "q",
    "history",
    "executions",
    "kv",
    "kv_snapshot",
];

#[test]
fn orchestrator_statements_use_indexes() {
    let conn = database();
    for (name, sql) in [
        ("next instance", oq::NEXT_INSTANCE),
        ("lock instance", oq::LOCK_INSTANCE),
        ("visible messages", oq::VISIBLE_MESSAGES),
        ("claim messages", oq::CLAIM_MESSAGES),
        ("read history", oq::READ_HISTORY),
        ("history length", oq::HISTORY_LEN),
        ("read kv snapshot", oq::READ_KV_SNAPSHOT),
        ("next due", oq::NEXT_DUE),
        ("another fetchable", oq::ANOTHER_FETCHABLE),
        ("enqueue", oq::ENQUEUE_IF_INSTANCE_EXISTS),
        ("locked instance", oq::LOCKED_INSTANCE),
        ("delete fetched", turn_ack::DELETE_FETCHED),
        ("release instance", turn_ack::UPDATE_INSTANCE),
        ("messages waiting", turn_ack::HAS_MESSAGES),
        ("append event", turn_ack::INSERT_EVENT),
    ] {
        assert_indexed(&conn, name, sql, BIG);
    }
    // The fetch walks messages oldest first straight from the visibility index.
    let steps = plan(&conn, oq::NEXT_INSTANCE).join("\n");
    assert!(steps.contains("orchestrator_queue_by_visibility"), "{steps}");
}

#[test]
fn worker_statements_use_indexes() {
    let conn = database();
    assert_indexed(&conn, "cancel", turn_ack::CANCEL_WORK_ITEM, &["worker_queue"]);
    assert_indexed(&conn, "read item", worker_queue::READ_ITEM, &["worker_queue"]);
    assert_indexed(&conn, "lock item", worker_queue::LOCK_ITEM, &["worker_queue"]);
    let routing = SessionRouting {
        owner_id: "o".into(),
        lease: Duration::from_secs(1),
        may_claim_new: true,
    };
    for (filter, session) in [
        (TagFilter::DefaultOnly, None),
        (TagFilter::Any, Some(routing.clone())),
        (TagFilter::DefaultAnd(vec!["gpu".into()]), Some(routing)),
    ] {
        let request = WorkerFetch {
            lock_timeout: Duration::from_secs(1),
            tag_filter: filter,
            session,
        };
        let (sql, _) = worker_queue::candidate_query(&request, 0).expect("query");
        // Enqueue order is the primary key: walking it needs no sort, and the session join is a lookup.
        let steps = plan(&conn, &sql);
        assert!(steps.iter().all(|s| !s.contains("TEMP B-TREE")), "{steps:#?}");
        assert!(steps.iter().all(|s| !s.starts_with("SCAN s")), "{steps:#?}");
    }
    // A fetch for named tags goes through the tag index.
    let request = WorkerFetch {
        lock_timeout: Duration::from_secs(1),
        tag_filter: TagFilter::Tags(vec!["gpu".into()]),
        session: None,
    };
    let (sql, _) = worker_queue::candidate_query(&request, 0).expect("query");
    let steps = plan(&conn, &sql).join("\n");
    assert!(steps.contains("worker_queue_by_tag"), "{steps}");
}
