//! Bad stored data: rows of a SQLite file corrupted behind the runtime's back (truncated and
//! undecodable history events, an event kind written by a "newer" version, a history with a gap in its
//! ids, corrupt orchestrator messages and worker items, an unknown instance status). Each affected
//! instance must fail with an error naming the instance and the problem, every other instance must keep
//! running, and the corrupt rows must be left exactly as they were (nothing rewritten silently).
//!
//! Corruption happens while no runtime runs, so that the next turn reads the rows from the store (a
//! runtime's instance cache would otherwise spare it the reading).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{recorded, Registries};
use duroxide_core::Provider;
use duroxide_runtime::{Client, RuntimeOptions, Status, TagFilter};
use rusqlite::{params, Connection, OptionalExtension};

/// Corrupt data is retried with backoff until `max_attempts`; three keeps these tests to a few seconds.
fn options() -> RuntimeOptions {
    RuntimeOptions {
        max_attempts: 3,
        // Tagged work waits for the second runtime, which accepts the tag.
        worker_tag_filter: TagFilter::DefaultOnly,
        ..RuntimeOptions::default()
    }
}

fn registries() -> Registries {
    let mut reg = Registries::new();
    reg.activity("Step", |_, input| async move { Ok(format!("{input}+")) })
        .activity("Later", |_, input| async move { Ok(format!("later {input}")) })
        .orchestration("Waiter", |ctx, input| async move {
            let step = ctx.schedule_activity("Step", input).await?;
            let event = ctx.wait_for_event("go").await;
            Ok(format!("{step}/{event}"))
        })
        .orchestration("TaggedWork", |ctx, input| async move {
            ctx.schedule_activity_with_tag("Later", input, "later").await
        })
        .orchestration("Healthy", |ctx, input| async move {
            let mut value = input;
            for _ in 0..3 {
                value = ctx.schedule_activity("Step", value).await?;
                ctx.schedule_timer(Duration::from_millis(20)).await;
            }
            Ok(value)
        });
    reg
}

/// A raw connection to the database file, as an operator's tool (or a disk fault) would touch it.
fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("raw connection");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// A stored history row's `kind` and `payload`.
type Row = (String, String);

fn history_row(conn: &Connection, instance: &str, event_id: u64) -> Option<Row> {
    conn.query_row(
        "SELECT kind, payload FROM history WHERE instance_id = ?1 AND execution_id = 1 AND event_id = ?2",
        params![instance, event_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .unwrap()
}

fn last_event_id(conn: &Connection, instance: &str) -> u64 {
    conn.query_row(
        "SELECT MAX(event_id) FROM history WHERE instance_id = ?1 AND execution_id = 1",
        params![instance],
        |r| r.get(0),
    )
    .unwrap()
}

/// Waits for the instance to fail and checks that its error names it and says what is wrong.
async fn fails_naming(client: &Client, instance: &str, problem: &[&str]) -> String {
    let state = client
        .wait_for_orchestration(instance, common::PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("waiting for {instance}: {e}"));
    assert_eq!(state.status, Status::Failed, "{instance}: {state:?}");
    let error = state.error.unwrap_or_default();
    assert!(
        error.contains(instance),
        "{instance}: the error does not name the instance: {error}"
    );
    for word in problem {
        assert!(
            error.contains(word),
            "{instance}: the error does not say {word:?}: {error}"
        );
    }
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_fail_only_their_instances_and_stay_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.db");
    let reg = registries();
    let provider: Arc<dyn Provider> = common::file(&path);
    let client = Client::new(provider.clone());

    // Phase 1: every victim reaches a known point, then the runtime goes away.
    let victims = [
        "truncated",
        "garbage",
        "future-kind",
        "id-gap",
        "bad-message",
        "bad-start",
    ];
    let first = common::runtime(&provider, &reg, options()).await;
    for id in victims {
        client.start_orchestration(id, "Waiter", id).await.unwrap();
    }
    client
        .start_orchestration("bad-work-item", "TaggedWork", "x")
        .await
        .unwrap();
    client
        .start_orchestration("healthy-before", "Waiter", "h")
        .await
        .unwrap();
    for id in victims.iter().chain(&["healthy-before"]) {
        recorded(&client, id, "ExternalSubscribed").await;
    }
    recorded(&client, "bad-work-item", "ActivityScheduled").await;
    first.shutdown(common::SHUTDOWN).await;

    // Phase 2: corrupt, remembering the bytes each corrupt row must still have afterwards.
    let conn = raw(&path);
    let mut keep: Vec<(&str, u64, Option<Row>)> = Vec::new();
    // A history event cut off in the middle (a torn write).
    conn.execute(
        "UPDATE history SET payload = substr(payload, 1, length(payload) / 2)
         WHERE instance_id = 'truncated' AND execution_id = 1 AND event_id = 2",
        [],
    )
    .unwrap();
    keep.push(("truncated", 2, history_row(&conn, "truncated", 2)));
    // A history event that is not JSON at all (text, with a NUL and a stray brace).
    conn.execute(
        "UPDATE history SET payload = 'garbage' || char(0) || '{[' WHERE instance_id = 'garbage' AND event_id = 3",
        [],
    )
    .unwrap();
    keep.push(("garbage", 3, history_row(&conn, "garbage", 3)));
    // An event a newer version of duroxide appended, of a kind this version does not know.
    let next = last_event_id(&conn, "future-kind") + 1;
    let future =
        format!(r#"{{"event_id":{next},"timestamp_ms":1,"kind":{{"type":"FromTheFuture","detail":"v9"}}}}"#);
    conn.execute(
        "INSERT INTO history (instance_id, execution_id, event_id, kind, payload)
         VALUES ('future-kind', 1, ?1, 'FromTheFuture', ?2)",
        params![next, future],
    )
    .unwrap();
    keep.push(("future-kind", next, history_row(&conn, "future-kind", next)));
    // A history whose ids skip one: event 3 is gone.
    conn.execute(
        "DELETE FROM history WHERE instance_id = 'id-gap' AND execution_id = 1 AND event_id = 3",
        [],
    )
    .unwrap();
    keep.push(("id-gap", 4, history_row(&conn, "id-gap", 4)));
    drop(conn);

    // Messages for the victims (the turn that reads the bad rows needs something to process); the one
    // for `bad-message` is then corrupted in the queue.
    for id in victims.iter().chain(&["healthy-before"]) {
        client.raise_event(id, "go", "now").await.unwrap();
    }
    let conn = raw(&path);
    let corrupted = conn
        .execute(
            "UPDATE orchestrator_queue SET payload = '{\"type\":\"ExternalEvent\",\"name\":' WHERE instance_id = 'bad-message'",
            [],
        )
        .unwrap();
    assert_eq!(corrupted, 1);
    // A worker item whose payload is not an activity request.
    let corrupted = conn
        .execute(
            "UPDATE worker_queue SET payload = 'not json' WHERE instance_id = 'bad-work-item'",
            [],
        )
        .unwrap();
    assert_eq!(corrupted, 1);
    // The first event (OrchestrationStarted) undecodable: the failure cannot even learn the parent.
    conn.execute(
        "UPDATE history SET payload = '{}' WHERE instance_id = 'bad-start' AND event_id = 1",
        [],
    )
    .unwrap();
    keep.push(("bad-start", 1, history_row(&conn, "bad-start", 1)));
    drop(conn);

    // Phase 3: a new runtime (accepting the tagged work) runs everything, healthy work included.
    let second = common::runtime(
        &provider,
        &reg,
        RuntimeOptions {
            worker_tag_filter: TagFilter::DefaultAnd(vec!["later".into()]),
            ..options()
        },
    )
    .await;
    for i in 0..5 {
        client
            .start_orchestration(&format!("healthy-{i}"), "Healthy", &format!("h{i}"))
            .await
            .unwrap();
    }

    let mut errors = Vec::new();
    errors.push(fails_naming(&client, "truncated", &["unreadable", "event 2"]).await);
    errors.push(fails_naming(&client, "garbage", &["unreadable", "event 3"]).await);
    errors.push(fails_naming(&client, "future-kind", &["unreadable", "FromTheFuture"]).await);
    errors.push(
        fails_naming(
            &client,
            "id-gap",
            &["unreadable", "not dense", "expected event id 3, found 4"],
        )
        .await,
    );
    errors.push(fails_naming(&client, "bad-message", &["message is unreadable"]).await);
    errors.push(fails_naming(&client, "bad-start", &["unreadable", "event 1"]).await);
    errors.push(fails_naming(&client, "bad-work-item", &["poison", "unreadable"]).await);
    for error in &errors {
        eprintln!("{error}");
    }

    // Everybody else finished normally.
    assert_eq!(common::completed(&client, "healthy-before").await, "h+/now");
    for i in 0..5 {
        assert_eq!(
            common::completed(&client, &format!("healthy-{i}")).await,
            format!("h{i}+++")
        );
    }

    // The corrupt rows are exactly as they were: the failure was recorded after them, not over them.
    let conn = raw(&path);
    for (instance, event_id, before) in keep {
        assert!(before.is_some(), "{instance} event {event_id} was set up");
        assert_eq!(
            history_row(&conn, instance, event_id),
            before,
            "{instance} event {event_id} was rewritten"
        );
        let last: String = conn
            .query_row(
                "SELECT kind FROM history WHERE instance_id = ?1 AND execution_id = 1 ORDER BY event_id DESC LIMIT 1",
                params![instance],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            last, "OrchestrationFailed",
            "{instance}: the failure is appended after the bad rows"
        );
    }
    second.shutdown(common::SHUTDOWN).await;
}

/// A row the provider itself cannot decode (here: an instance status it does not know) must not stop
/// the store: the fetch that meets it fails, but the next fetch must be able to hand out other work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_row_with_an_unknown_status_blocks_no_other_instance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.db");
    let reg = registries();
    let provider: Arc<dyn Provider> = common::file(&path);
    let client = Client::new(provider.clone());
    let first = common::runtime(&provider, &reg, options()).await;
    client
        .start_orchestration("odd-status", "Waiter", "o")
        .await
        .unwrap();
    recorded(&client, "odd-status", "ExternalSubscribed").await;
    first.shutdown(common::SHUTDOWN).await;

    // A status a newer version might write; the instance also has a message waiting, oldest of all.
    client.raise_event("odd-status", "go", "now").await.unwrap();
    raw(&path)
        .execute(
            "UPDATE instances SET status = 'Suspended' WHERE instance_id = 'odd-status'",
            [],
        )
        .unwrap();

    let second = common::runtime(&provider, &reg, options()).await;
    for i in 0..3 {
        client
            .start_orchestration(&format!("after-odd-{i}"), "Healthy", &format!("a{i}"))
            .await
            .unwrap();
    }
    for i in 0..3 {
        let id = format!("after-odd-{i}");
        let state = client
            .wait_for_orchestration(&id, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| {
                panic!("{id} did not finish while an instance row with an unknown status was queued: {e}")
            });
        assert_eq!(
            state.output.as_deref(),
            Some(format!("a{i}+++").as_str()),
            "{id}: {state:?}"
        );
    }
    // The odd row itself is left alone, and reading it says what is wrong.
    let status: String = raw(&path)
        .query_row(
            "SELECT status FROM instances WHERE instance_id = 'odd-status'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "Suspended");
    let error = client.get_status("odd-status").await.unwrap_err().to_string();
    assert!(error.contains("Suspended"), "{error}");
    second.shutdown(common::SHUTDOWN).await;
}

/// Payload columns holding bytes that are not text (a BLOB, invalid UTF-8) in a history event, an
/// orchestrator message and a worker item: each must fail its own instance or activity, never every
/// fetch of the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_that_are_not_text_fail_their_instance_and_block_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.db");
    let reg = registries();
    let provider: Arc<dyn Provider> = common::file(&path);
    let client = Client::new(provider.clone());
    let first = common::runtime(&provider, &reg, options()).await;
    for id in ["blob-history", "blob-message"] {
        client.start_orchestration(id, "Waiter", id).await.unwrap();
        recorded(&client, id, "ExternalSubscribed").await;
    }
    client
        .start_orchestration("blob-work", "TaggedWork", "w")
        .await
        .unwrap();
    recorded(&client, "blob-work", "ActivityScheduled").await;
    first.shutdown(common::SHUTDOWN).await;

    for id in ["blob-history", "blob-message"] {
        client.raise_event(id, "go", "now").await.unwrap();
    }
    // Bytes that are not UTF-8, stored as a BLOB: what a disk fault or a foreign writer can leave.
    let conn = raw(&path);
    conn.execute(
        "UPDATE history SET payload = x'00ff7b5bfe' WHERE instance_id = 'blob-history' AND event_id = 3",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE orchestrator_queue SET payload = x'c328ff' WHERE instance_id = 'blob-message'",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE worker_queue SET payload = x'fffe00' WHERE instance_id = 'blob-work'",
        [],
    )
    .unwrap();
    drop(conn);

    let tagged = RuntimeOptions {
        worker_tag_filter: TagFilter::DefaultAnd(vec!["later".into()]),
        ..options()
    };
    let second = common::runtime(&provider, &reg, tagged).await;
    for i in 0..3 {
        client
            .start_orchestration(&format!("after-blob-{i}"), "Healthy", &format!("b{i}"))
            .await
            .unwrap();
    }
    for i in 0..3 {
        let id = format!("after-blob-{i}");
        let state = client
            .wait_for_orchestration(&id, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| {
                panic!("{id} did not finish while rows with non-text payloads were queued: {e}")
            });
        assert_eq!(
            state.output.as_deref(),
            Some(format!("b{i}+++").as_str()),
            "{id}: {state:?}"
        );
    }
    fails_naming(&client, "blob-history", &["event 3"]).await;
    fails_naming(&client, "blob-message", &["message"]).await;
    fails_naming(&client, "blob-work", &["poison"]).await;
    let kind: String = raw(&path)
        .query_row(
            "SELECT typeof(payload) FROM history WHERE instance_id = 'blob-history' AND event_id = 3",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kind, "blob", "the corrupt row was rewritten");
    second.shutdown(common::SHUTDOWN).await;
}
