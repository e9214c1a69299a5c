//! Many concurrent fetchers on a file database: no instance is ever handed out twice while locked, and
//! "database is locked" never surfaces, also with two provider objects (two "processes") on one file.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide_core::provider::TurnAck;
use duroxide_core::Provider;
use duroxide_sqlite::SqliteProvider;

mod common;
use common::{message, start, turn, work_item, worker_fetch, LEASE};

const INSTANCES: usize = 60;
const MESSAGES_PER_INSTANCE: usize = 4;

#[derive(Default)]
struct Ledger {
    /// Instances currently held by some fetcher.
    held: HashSet<String>,
    /// Messages consumed per instance.
    consumed: BTreeMap<String, usize>,
    /// Next event id per instance.
    next_event: BTreeMap<String, u64>,
}

/// Runs `fetchers` tasks per provider until every message was consumed; fails on any double hand-out
/// and on any provider error.
async fn drain(providers: Vec<Arc<SqliteProvider>>, fetchers: usize) -> Ledger {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let total = INSTANCES * MESSAGES_PER_INSTANCE;
    let mut tasks = Vec::new();
    for p in &providers {
        for _ in 0..fetchers {
            let (p, ledger) = (p.clone(), ledger.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let consumed: usize = ledger.lock().expect("ledger").consumed.values().sum();
                    if consumed >= total {
                        return;
                    }
                    let fetched = p.fetch_orchestration_item(LEASE, Duration::from_millis(50)).await;
                    let Some(item) = fetched.unwrap_or_else(|e| panic!("fetch failed: {e}")) else {
                        continue;
                    };
                    let first_event = {
                        let mut ledger = ledger.lock().expect("ledger");
                        assert!(
                            ledger.held.insert(item.instance_id.clone()),
                            "{} handed out twice",
                            item.instance_id
                        );
                        *ledger.consumed.entry(item.instance_id.clone()).or_default() += item.messages.len();
                        let next = ledger.next_event.entry(item.instance_id.clone()).or_insert(1);
                        let first = *next;
                        *next += 1;
                        first
                    };
                    tokio::task::yield_now().await; // let others try for the same instance meanwhile
                    let ack = TurnAck {
                        worker_items: vec![work_item(&item.instance_id, 1, first_event)],
                        ..turn(&[first_event])
                    };
                    // Released from the ledger before the ack: after it, another fetch may take it.
                    ledger.lock().expect("ledger").held.remove(&item.instance_id);
                    p.ack_orchestration_item(&item.lock_token, ack)
                        .await
                        .unwrap_or_else(|e| panic!("ack failed: {e}"));
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("fetcher panicked");
    }
    Arc::try_unwrap(ledger)
        .ok()
        .expect("tasks done")
        .into_inner()
        .expect("ledger")
}

/// Creates the instances, then keeps enqueueing their further messages from a task while the fetchers
/// run, so instances get new work while other fetchers hold them.
async fn fill(p: &Arc<SqliteProvider>) -> tokio::task::JoinHandle<()> {
    for i in 0..INSTANCES {
        p.create_instance(start(&format!("i-{i}"))).await.expect("create");
    }
    let p = p.clone();
    tokio::spawn(async move {
        for m in 1..MESSAGES_PER_INSTANCE {
            for i in 0..INSTANCES {
                p.enqueue_message(message(&format!("i-{i}"), &format!("m{m}")))
                    .await
                    .expect("enqueue");
            }
        }
    })
}

async fn check_histories(p: &SqliteProvider, ledger: &Ledger) {
    for (id, next) in &ledger.next_event {
        let history = p.read_history(id, 1).await.expect("history");
        let ids: Vec<u64> = history.iter().map(|r| r.event_id).collect();
        assert_eq!(ids, (1..*next).collect::<Vec<_>>(), "history of {id}");
    }
    assert_eq!(ledger.consumed.len(), INSTANCES);
    assert!(ledger.consumed.values().all(|n| *n == MESSAGES_PER_INSTANCE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_fetchers_on_one_provider_never_share_an_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Arc::new(SqliteProvider::open(dir.path().join("busy.db")).expect("open"));
    let producer = fill(&p).await;
    let ledger = drain(vec![p.clone()], 16).await;
    producer.await.expect("producer");
    check_histories(&p, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_provider_objects_on_one_file_never_share_an_instance_or_see_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let first = Arc::new(SqliteProvider::open(&path).expect("open"));
    let second = Arc::new(SqliteProvider::open(&path).expect("open again"));
    let producer = fill(&first).await;
    let ledger = drain(vec![first.clone(), second.clone()], 6).await;
    producer.await.expect("producer");
    check_histories(&second, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_workers_never_share_a_work_item() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Arc::new(SqliteProvider::open(dir.path().join("workers.db")).expect("open"));
    p.create_instance(start("fanout")).await.expect("create");
    let item = p
        .fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("item");
    let items = 300;
    let ack = TurnAck {
        worker_items: (1..=items).map(|e| work_item("fanout", 1, e)).collect(),
        ..turn(&[1])
    };
    p.ack_orchestration_item(&item.lock_token, ack)
        .await
        .expect("ack");

    let seen = Arc::new(Mutex::new(HashSet::new()));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (p, seen) = (p.clone(), seen.clone());
            tokio::spawn(async move {
                while let Some(lease) = p
                    .fetch_work_item(&worker_fetch(), Duration::ZERO)
                    .await
                    .expect("fetch")
                {
                    assert!(
                        seen.lock().expect("seen").insert(lease.activity.event_id),
                        "handed out twice"
                    );
                    let done = message("fanout", &format!("done {}", lease.activity.event_id));
                    p.ack_work_item(&lease.lock_token, Some(done)).await.expect("ack");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker panicked");
    }
    assert_eq!(seen.lock().expect("seen").len(), items as usize);
    let turn = p
        .fetch_orchestration_item(LEASE, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("completions");
    assert_eq!(turn.messages.len(), items as usize);
}
