//! Bad stored data and bad addresses never block the queue: corrupt payloads come back verbatim with a
//! growing attempt count while other instances flow, and messages to missing instances are dropped.

use std::collections::BTreeSet;
use std::time::Duration;

use duroxide_core::provider::{ProviderErrorKind, TurnAck};
use duroxide_core::Provider;
use duroxide_sqlite::SqliteProvider;

mod common;
use common::{message, start, turn, work_item, worker_fetch, LEASE};

const CORRUPT_MESSAGE: &str = r#"{"kind": "ExternalRaised", "data": [1, 2"#;
const CORRUPT_EVENT: &str = "\u{1}not json at all }}}";

/// Opens a file database and damages instance `bad` behind the provider's back: its start message
/// and a history row get payloads that are not JSON.
async fn damaged_database(dir: &tempfile::TempDir, healthy: usize) -> SqliteProvider {
    let path = dir.path().join("damaged.db");
    let p = SqliteProvider::open(&path).expect("open");
    p.create_instance(start("bad")).await.expect("create");
    let item = p
        .fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("bad");
    p.ack_orchestration_item(&item.lock_token, turn(&[1]))
        .await
        .expect("ack");
    p.enqueue_message(message("bad", "{}")).await.expect("enqueue");
    for i in 0..healthy {
        p.create_instance(start(&format!("good-{i}")))
            .await
            .expect("create");
    }

    let raw = rusqlite::Connection::open(&path).expect("raw open");
    raw.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    let changed = raw
        .execute(
            "UPDATE orchestrator_queue SET payload = ?1 WHERE instance_id = 'bad'",
            [CORRUPT_MESSAGE],
        )
        .expect("corrupt message");
    assert_eq!(changed, 1);
    raw.execute(
        "UPDATE history SET payload = ?1 WHERE instance_id = 'bad'",
        [CORRUPT_EVENT],
    )
    .expect("corrupt event");
    p
}

#[tokio::test]
async fn a_corrupt_instance_is_returned_verbatim_and_does_not_block_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let healthy = 5;
    let p = damaged_database(&dir, healthy).await;

    let mut done = BTreeSet::new();
    let mut bad_attempts = Vec::new();
    while done.len() < healthy {
        let item = p
            .fetch_orchestration_item(LEASE, Duration::ZERO)
            .await
            .expect("fetch")
            .expect("work is queued");
        if item.instance_id == "bad" {
            assert_eq!(item.messages.len(), 1);
            assert_eq!(
                item.messages[0].payload, CORRUPT_MESSAGE,
                "payload must come back verbatim"
            );
            assert_eq!(item.history.len(), 1);
            assert_eq!(
                item.history[0].payload, CORRUPT_EVENT,
                "history must come back verbatim"
            );
            bad_attempts.push(item.attempt);
            // The runtime cannot decode it; it abandons (without delay, the worst case for the queue).
            p.abandon_orchestration_item(&item.lock_token, None)
                .await
                .expect("abandon");
        } else {
            assert!(
                done.insert(item.instance_id.clone()),
                "{} handed out after its ack",
                item.instance_id
            );
            p.ack_orchestration_item(&item.lock_token, turn(&[1]))
                .await
                .expect("ack");
        }
        assert!(
            bad_attempts.len() <= healthy + 1,
            "the corrupt instance is monopolising the queue"
        );
    }
    // Keep abandoning the corrupt instance: every fetch counts one more attempt.
    for _ in 0..3 {
        let item = p
            .fetch_orchestration_item(LEASE, Duration::ZERO)
            .await
            .expect("fetch")
            .expect("bad again");
        assert_eq!(item.instance_id, "bad");
        bad_attempts.push(item.attempt);
        p.abandon_orchestration_item(&item.lock_token, None)
            .await
            .expect("abandon");
    }
    let expected: Vec<u32> = (1..=bad_attempts.len() as u32).collect();
    assert_eq!(bad_attempts, expected, "attempts must grow by one per fetch");
}

#[tokio::test]
async fn a_corrupt_instance_backed_off_lets_new_work_through_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = damaged_database(&dir, 0).await;
    let item = p
        .fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("bad");
    assert_eq!(item.instance_id, "bad");
    p.abandon_orchestration_item(&item.lock_token, Some(Duration::from_secs(60)))
        .await
        .expect("abandon");
    p.create_instance(start("fresh")).await.expect("create");
    let next = p
        .fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("fresh");
    assert_eq!(next.instance_id, "fresh");
}

#[tokio::test]
async fn a_corrupt_work_item_is_returned_verbatim_and_others_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("worker.db");
    let p = SqliteProvider::open(&path).expect("open");
    p.create_instance(start("w")).await.expect("create");
    let item = p
        .fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("w");
    let ack = TurnAck {
        worker_items: (1..=3).map(|e| work_item("w", 1, e)).collect(),
        ..turn(&[1, 2, 3])
    };
    p.ack_orchestration_item(&item.lock_token, ack)
        .await
        .expect("ack");
    let raw = rusqlite::Connection::open(&path).expect("raw");
    raw.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    raw.execute(
        "UPDATE worker_queue SET payload = ?1 WHERE event_id = 1",
        [CORRUPT_MESSAGE],
    )
    .expect("corrupt");

    let mut completed = Vec::new();
    let mut corrupt_attempts = Vec::new();
    while completed.len() < 2 {
        let lease = p
            .fetch_work_item(&worker_fetch(), Duration::ZERO)
            .await
            .expect("fetch")
            .expect("item");
        if lease.activity.event_id == 1 {
            assert_eq!(lease.payload, CORRUPT_MESSAGE);
            corrupt_attempts.push(lease.attempt);
            // Backoff, as a runtime does for work it cannot decode.
            p.abandon_work_item(&lease.lock_token, Some(Duration::from_secs(60)))
                .await
                .expect("abandon");
        } else {
            completed.push(lease.activity.event_id);
            p.ack_work_item(&lease.lock_token, None).await.expect("ack");
        }
    }
    assert_eq!(completed, [2, 3]);
    assert_eq!(corrupt_attempts, [1]);
}

#[tokio::test]
async fn messages_to_missing_instances_are_dropped_and_never_block_others() {
    let p = SqliteProvider::in_memory().expect("memory");
    let err = p
        .enqueue_message(message("ghost", "raise"))
        .await
        .expect_err("no such instance");
    assert_eq!(err.kind, ProviderErrorKind::NotFound);

    p.create_instance(start("parent")).await.expect("create");
    let item = p
        .fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("parent");
    let ack = TurnAck {
        messages: vec![
            message("ghost", "to nobody"),
            message("ghost-2", "to nobody either"),
        ],
        worker_items: vec![work_item("parent", 1, 2)],
        ..turn(&[1, 2])
    };
    p.ack_orchestration_item(&item.lock_token, ack)
        .await
        .expect("ack drops what it cannot deliver");
    assert_eq!(p.get_queue_depths().await.expect("depths").orchestrator_queue, 0);
    assert!(
        p.get_instance_info("ghost").await.expect("info").is_none(),
        "no instance conjured"
    );

    // An activity whose completion goes to an instance deleted meanwhile.
    let lease = p
        .fetch_work_item(&worker_fetch(), Duration::ZERO)
        .await
        .expect("fetch")
        .expect("item");
    p.ack_work_item(&lease.lock_token, Some(message("ghost", "completion")))
        .await
        .expect("dropped");

    // Other instances keep flowing.
    for i in 0..3 {
        p.create_instance(start(&format!("next-{i}")))
            .await
            .expect("create");
    }
    for i in 0..3 {
        let item = p
            .fetch_orchestration_item(LEASE, Duration::ZERO)
            .await
            .expect("fetch")
            .expect("next");
        assert_eq!(item.instance_id, format!("next-{i}"));
        p.ack_orchestration_item(&item.lock_token, turn(&[1]))
            .await
            .expect("ack");
    }
    assert!(p
        .fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .is_none());
    let depths = p.get_queue_depths().await.expect("depths");
    assert_eq!(
        (depths.orchestrator_queue, depths.timer_queue, depths.worker_queue),
        (0, 0, 0)
    );
}
