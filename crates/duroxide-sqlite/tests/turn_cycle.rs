//! The turn cycle on both database kinds: create, fetch, ack (atomic, with continue-as-new and KV),
//! abandon, lock loss, the worker cycle, and long-poll wake-ups.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide_core::provider::{
    ActivityRef, CustomStatusChange, ExecutionStatus, InstanceStatus, KvChange, OrchestrationItem,
    ProviderErrorKind, TurnAck,
};
use duroxide_core::Provider;
use duroxide_sqlite::SqliteProvider;

mod common;
use common::{event, message, start, turn, work_item, worker_fetch, LEASE, PATIENCE};

/// Runs `check` on an in-memory database and on a file database.
async fn on_both<F, Fut>(check: F)
where
    F: Fn(SqliteProvider) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    check(SqliteProvider::in_memory().expect("memory")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    check(SqliteProvider::open(dir.path().join("turns.db")).expect("file")).await;
}

/// The instance a fetch locks now; the test expects one to be fetchable.
async fn fetch_now(p: &SqliteProvider) -> OrchestrationItem {
    p.fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("a fetchable instance")
}

#[tokio::test]
async fn a_turn_appends_history_and_consumes_exactly_the_fetched_messages() {
    on_both(|p| async move {
        assert!(p.create_instance(start("a")).await.expect("create"));
        assert!(
            !p.create_instance(start("a")).await.expect("idempotent"),
            "second start must be ignored"
        );
        p.enqueue_message(message("a", "e1")).await.expect("enqueue");

        let item = fetch_now(&p).await;
        assert_eq!(item.instance_id, "a");
        assert_eq!(item.attempt, 1);
        assert_eq!(item.instance.current_execution_id, 1);
        let payloads: Vec<_> = item.messages.iter().map(|m| m.payload.as_str()).collect();
        assert_eq!(payloads, [r#"{"start":"a"}"#, "e1"]);
        assert!(item.history.is_empty());

        // Arrives during the turn: must survive the ack.
        p.enqueue_message(message("a", "late")).await.expect("enqueue");
        assert!(
            p.fetch_orchestration_item(LEASE, Duration::ZERO)
                .await
                .expect("fetch")
                .is_none(),
            "locked"
        );

        let ack = TurnAck {
            worker_items: vec![work_item("a", 1, 2)],
            ..turn(&[1, 2])
        };
        p.ack_orchestration_item(&item.lock_token, ack)
            .await
            .expect("ack");

        let next = p
            .fetch_orchestration_item(LEASE, Duration::ZERO)
            .await
            .expect("fetch")
            .expect("late one");
        assert_eq!(next.messages.len(), 1);
        assert_eq!(next.messages[0].payload, "late");
        assert_eq!(
            next.history.iter().map(|r| r.event_id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(p.read_history("a", 1).await.expect("history"), next.history);
        assert_eq!(p.get_queue_depths().await.expect("depths").worker_queue, 1);
    })
    .await;
}

#[tokio::test]
async fn a_duplicate_event_id_fails_the_whole_ack_and_keeps_the_lock() {
    on_both(|p| async move {
        p.create_instance(start("dup")).await.expect("create");
        let item = fetch_now(&p).await;
        p.ack_orchestration_item(&item.lock_token, turn(&[1]))
            .await
            .expect("first ack");
        p.enqueue_message(message("dup", "again")).await.expect("enqueue");
        let item = fetch_now(&p).await;

        let bad = TurnAck {
            worker_items: vec![work_item("dup", 1, 9)],
            messages: vec![start("child")],
            kv_changes: vec![KvChange::Set {
                key: "k".into(),
                value: "v".into(),
                updated_at_ms: 1,
            }],
            custom_status: CustomStatusChange::Set(Some("busy".into())),
            status: Some(ExecutionStatus::Completed),
            ..turn(&[2, 1])
        };
        let err = p
            .ack_orchestration_item(&item.lock_token, bad)
            .await
            .expect_err("duplicate");
        assert_eq!(err.kind, ProviderErrorKind::Permanent, "{err}");
        assert!(err.message.contains("event 1"), "{err}");

        assert_eq!(
            p.read_history("dup", 1).await.expect("history").len(),
            1,
            "event 2 must be rolled back"
        );
        assert_eq!(p.get_queue_depths().await.expect("depths").worker_queue, 0);
        assert!(p.get_instance_info("child").await.expect("info").is_none());
        assert!(p.get_kv_value("dup", "k").await.expect("kv").is_none());
        assert_eq!(
            p.get_custom_status("dup")
                .await
                .expect("cs")
                .expect("exists")
                .version,
            0
        );
        assert_eq!(
            p.get_instance_info("dup")
                .await
                .expect("info")
                .expect("exists")
                .status,
            InstanceStatus::Running
        );
        // The lock is still held: a corrected ack succeeds.
        p.ack_orchestration_item(&item.lock_token, turn(&[2]))
            .await
            .expect("corrected ack");
    })
    .await;
}

#[tokio::test]
async fn continue_as_new_starts_an_execution_with_the_kv_snapshot_of_before() {
    on_both(|p| async move {
        p.create_instance(start("can")).await.expect("create");
        let item = fetch_now(&p).await;
        let first = TurnAck {
            kv_changes: vec![KvChange::Set {
                key: "count".into(),
                value: "1".into(),
                updated_at_ms: 5,
            }],
            status: Some(ExecutionStatus::ContinuedAsNew),
            messages: vec![message("can", "restart")],
            ..turn(&[1, 2])
        };
        p.ack_orchestration_item(&item.lock_token, first)
            .await
            .expect("ack 1");
        let info = p
            .get_execution_info("can", 1)
            .await
            .expect("exec")
            .expect("exists");
        assert_eq!(info.status, ExecutionStatus::ContinuedAsNew);
        assert!(info.completed_at_ms.is_some());
        assert_eq!(info.event_count, 2);

        let item = fetch_now(&p).await;
        assert!(item.kv_snapshot.is_empty(), "execution 1 started with no KV");
        let second = TurnAck {
            execution_id: 2,
            history: vec![event(1)],
            kv_changes: vec![KvChange::Set {
                key: "count".into(),
                value: "2".into(),
                updated_at_ms: 6,
            }],
            ..TurnAck::default()
        };
        p.ack_orchestration_item(&item.lock_token, second)
            .await
            .expect("ack 2");

        assert_eq!(p.list_executions("can").await.expect("list"), [1, 2]);
        let info = p.get_instance_info("can").await.expect("info").expect("exists");
        assert_eq!(info.current_execution_id, 2);
        assert_eq!(info.status, InstanceStatus::Running);
        assert_eq!(
            p.get_kv_value("can", "count").await.expect("kv").as_deref(),
            Some("2")
        );

        p.enqueue_message(message("can", "poke")).await.expect("enqueue");
        let item = fetch_now(&p).await;
        assert_eq!(item.history.len(), 1, "history of execution 2 only");
        let snapshot: Vec<_> = item
            .kv_snapshot
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            snapshot,
            [("count", "1")],
            "the snapshot is KV as execution 2 started"
        );
    })
    .await;
}

#[tokio::test]
async fn expired_and_unknown_tokens_lose_the_lock_and_change_nothing() {
    on_both(|p| async move {
        p.create_instance(start("x")).await.expect("create");
        let item = p
            .fetch_orchestration_item(Duration::from_millis(30), Duration::ZERO)
            .await
            .expect("f")
            .expect("i");
        let err = p
            .ack_orchestration_item("no-such-token", turn(&[1]))
            .await
            .expect_err("unknown");
        assert_eq!(err.kind, ProviderErrorKind::LockLost);

        // Waits for the lease to lapse (the fetch long-polls until the lock runs out, bounded).
        let again = p
            .fetch_orchestration_item(LEASE, PATIENCE)
            .await
            .expect("fetch")
            .expect("lease lapsed");
        assert_eq!(again.attempt, 2);
        let err = p
            .ack_orchestration_item(&item.lock_token, turn(&[1]))
            .await
            .expect_err("expired");
        assert_eq!(err.kind, ProviderErrorKind::LockLost);
        assert!(p.read_history("x", 1).await.expect("history").is_empty());
        p.renew_orchestration_item_lock(&again.lock_token, LEASE)
            .await
            .expect("renew");
        p.ack_orchestration_item(&again.lock_token, turn(&[1]))
            .await
            .expect("ack");
    })
    .await;
}

#[tokio::test]
async fn abandon_with_delay_hides_the_instance_until_then() {
    on_both(|p| async move {
        p.create_instance(start("later")).await.expect("create");
        let item = fetch_now(&p).await;
        let abandoned_at = Instant::now();
        p.abandon_orchestration_item(&item.lock_token, Some(Duration::from_millis(150)))
            .await
            .expect("abandon");
        assert!(p
            .fetch_orchestration_item(LEASE, Duration::ZERO)
            .await
            .expect("fetch")
            .is_none());
        let again = p
            .fetch_orchestration_item(LEASE, PATIENCE)
            .await
            .expect("fetch")
            .expect("visible again");
        assert!(abandoned_at.elapsed() >= Duration::from_millis(150));
        assert_eq!(again.attempt, 2);
        let err = p
            .abandon_orchestration_item(&item.lock_token, None)
            .await
            .expect_err("old token");
        assert_eq!(err.kind, ProviderErrorKind::LockLost);
    })
    .await;
}

#[tokio::test]
async fn the_worker_cycle_enqueues_the_completion_and_cancelled_items_lose_their_lock() {
    on_both(|p| async move {
        p.create_instance(start("w")).await.expect("create");
        let item = fetch_now(&p).await;
        let ack = TurnAck {
            worker_items: vec![work_item("w", 1, 1), work_item("w", 1, 2)],
            ..turn(&[1, 2])
        };
        p.ack_orchestration_item(&item.lock_token, ack)
            .await
            .expect("ack");

        let first = p
            .fetch_work_item(&worker_fetch(), Duration::ZERO)
            .await
            .expect("fetch")
            .expect("item");
        assert_eq!(
            first.activity,
            ActivityRef {
                instance_id: "w".into(),
                execution_id: 1,
                event_id: 1
            }
        );
        assert_eq!(first.attempt, 1);
        let second = p
            .fetch_work_item(&worker_fetch(), Duration::ZERO)
            .await
            .expect("fetch")
            .expect("item");
        assert_eq!(second.activity.event_id, 2);

        p.ack_work_item(&first.lock_token, Some(message("w", "done 1")))
            .await
            .expect("ack work");
        let err = p
            .ack_work_item(&first.lock_token, None)
            .await
            .expect_err("acked twice");
        assert_eq!(err.kind, ProviderErrorKind::LockLost);

        let turn2 = p
            .fetch_orchestration_item(LEASE, Duration::ZERO)
            .await
            .expect("fetch")
            .expect("completion");
        assert_eq!(turn2.messages[0].payload, "done 1");
        let cancel = TurnAck {
            cancel_activities: vec![second.activity.clone()],
            ..turn(&[3])
        };
        p.ack_orchestration_item(&turn2.lock_token, cancel)
            .await
            .expect("ack");
        let err = p
            .renew_work_item_lock(&second.lock_token, LEASE)
            .await
            .expect_err("cancelled");
        assert_eq!(err.kind, ProviderErrorKind::LockLost);
        let err = p
            .ack_work_item(&second.lock_token, Some(message("w", "done 2")))
            .await
            .expect_err("cancelled");
        assert_eq!(err.kind, ProviderErrorKind::LockLost);
        assert_eq!(p.get_queue_depths().await.expect("depths").orchestrator_queue, 0);
    })
    .await;
}

#[tokio::test]
async fn waiting_fetches_wake_on_enqueue_on_timers_and_on_wake_all() {
    on_both(|p| async move {
        let p = Arc::new(p);
        p.create_instance(start("sleepy")).await.expect("create");
        let item = fetch_now(&p).await;
        p.ack_orchestration_item(&item.lock_token, turn(&[1]))
            .await
            .expect("ack");

        // Enqueue wakes a waiting fetch long before its poll timeout.
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.fetch_orchestration_item(LEASE, Duration::from_secs(30)).await }
        });
        let started = Instant::now();
        p.enqueue_message(message("sleepy", "ping"))
            .await
            .expect("enqueue");
        let woken = waiter
            .await
            .expect("join")
            .expect("fetch")
            .expect("woken with work");
        assert!(started.elapsed() < PATIENCE);

        // A timer wakes the waiting fetch when it comes due.
        let due = Instant::now() + Duration::from_millis(200);
        let timer = duroxide_core::provider::NewMessage {
            visible_at_ms: Some(now_ms() + 200),
            ..message("sleepy", "timer")
        };
        let ack = TurnAck {
            messages: vec![timer],
            ..turn(&[2])
        };
        p.ack_orchestration_item(&woken.lock_token, ack)
            .await
            .expect("ack");
        let fired = p
            .fetch_orchestration_item(LEASE, Duration::from_secs(30))
            .await
            .expect("fetch")
            .expect("timer");
        assert!(Instant::now() >= due, "the timer fired early");
        assert!(due.elapsed() < PATIENCE);
        assert_eq!(fired.messages[0].payload, "timer");

        // wake_all ends a waiting fetch with None at once.
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.fetch_orchestration_item(LEASE, Duration::from_secs(30)).await }
        });
        let worker_waiter = tokio::spawn({
            let p = p.clone();
            async move { p.fetch_work_item(&worker_fetch(), Duration::from_secs(30)).await }
        });
        // A test cannot see when a spawned fetch starts waiting; a wake_all before that does not count
        // (by contract), so it is repeated until both fetches end. The unit tests of the wake-up module
        // show that a single call ends a registered wait.
        let started = Instant::now();
        common::eventually("wake_all ends both fetches", || {
            p.wake_all();
            let done = waiter.is_finished() && worker_waiter.is_finished();
            async move { done }
        })
        .await;
        assert!(waiter.await.expect("join").expect("fetch").is_none());
        assert!(worker_waiter.await.expect("join").expect("fetch").is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Claims to hold `len` events of execution 1 of instance "a".
struct HoldsA(u64);

impl duroxide_core::provider::HistoryCache for HoldsA {
    fn cached_history_len(&self, instance_id: &str, execution_id: u64) -> Option<u64> {
        (instance_id == "a" && execution_id == 1).then_some(self.0)
    }
}

#[tokio::test]
async fn a_fetch_leaves_out_exactly_the_history_its_caller_holds() {
    on_both(|p| async move {
        p.create_instance(start("a")).await.expect("create");
        let item = fetch_now(&p).await;
        p.ack_orchestration_item(&item.lock_token, turn(&[1, 2, 3]))
            .await
            .expect("ack");

        for (held, left_out) in [(3, Some(3)), (2, None), (4, None)] {
            p.enqueue_message(message("a", "e")).await.expect("enqueue");
            let fetched = p
                .fetch_orchestration_item_cached(LEASE, Duration::ZERO, Arc::new(HoldsA(held)))
                .await
                .expect("fetch")
                .expect("item");
            assert_eq!(fetched.omitted_history_len, left_out, "holding {held}");
            let expected = if left_out.is_some() { 0 } else { 3 };
            assert_eq!(fetched.item.history.len(), expected, "holding {held}");
            assert_eq!(fetched.item.messages.len(), 1);
            p.ack_orchestration_item(&fetched.item.lock_token, turn(&[]))
                .await
                .expect("ack");
        }
    })
    .await;
}
