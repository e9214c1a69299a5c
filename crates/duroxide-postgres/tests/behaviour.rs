//! PostgreSQL-specific behaviour beyond the conformance suite: idempotent acks, round trips per
//! operation, the query load of an idle provider, cross-process wake-up latency, claims that move on
//! to the next candidate, work handed from acks to fetches, and recovery from lost connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide_core::provider::{
    ActivityRef, HistoryCache, HistoryRecord, NewMessage, NewWorkItem, OrchestrationItem, Provider,
    ProviderErrorKind, SessionRouting, TagFilter, TurnAck, WorkItemLease, WorkerFetch,
};
use duroxide_postgres::PostgresProvider;

mod common;

const LOCK: Duration = Duration::from_secs(30);

fn event(instance: &str) -> NewMessage {
    NewMessage {
        instance_id: instance.into(),
        payload: "{\"event\":1}".into(),
        visible_at_ms: None,
        creates: None,
    }
}

/// The first turn of `item`: `OrchestrationStarted` plus `extra` events, and the given work.
fn first_turn(item: &OrchestrationItem, extra: u64, work: Vec<NewWorkItem>) -> TurnAck {
    let next = item.history.last().map_or(1, |r| r.event_id + 1);
    TurnAck {
        execution_id: item.instance.current_execution_id,
        history: (next..next + 1 + extra)
            .map(|event_id| HistoryRecord {
                event_id,
                kind: "Recorded".into(),
                payload: format!("{{\"n\":{event_id}}}"),
            })
            .collect(),
        name: Some("Orchestration".into()),
        version: Some("1.0.0".into()),
        worker_items: work,
        ..TurnAck::default()
    }
}

/// A turn that records nothing and schedules nothing (it only consumes its messages).
fn empty_turn(item: &OrchestrationItem) -> TurnAck {
    TurnAck {
        execution_id: item.instance.current_execution_id,
        ..TurnAck::default()
    }
}

fn work_item(instance: &str, event_id: u64) -> NewWorkItem {
    NewWorkItem {
        activity: ActivityRef {
            instance_id: instance.into(),
            execution_id: 1,
            event_id,
        },
        payload: format!("{{\"activity\":{event_id}}}"),
        session_id: None,
        tag: None,
    }
}

fn worker() -> WorkerFetch {
    WorkerFetch {
        lock_timeout: LOCK,
        tag_filter: TagFilter::DefaultOnly,
        session: None,
    }
}

/// A runtime's instance cache holding the histories listed: (instance, execution 1, length).
struct Holds(Vec<(&'static str, u64)>);

impl Holds {
    fn history(instance: &'static str, len: u64) -> Arc<dyn HistoryCache> {
        Arc::new(Holds(vec![(instance, len)]))
    }
}

impl HistoryCache for Holds {
    fn cached_history_len(&self, instance_id: &str, execution_id: u64) -> Option<u64> {
        let held = self
            .0
            .iter()
            .find(|(id, _)| *id == instance_id && execution_id == 1);
        held.map(|(_, len)| *len)
    }
}

async fn fetch(p: &PostgresProvider) -> OrchestrationItem {
    p.fetch_orchestration_item(LOCK, Duration::from_secs(5))
        .await
        .expect("fetch")
        .expect("an instance with work")
}

#[tokio::test]
async fn an_ack_repeated_after_a_lost_reply_succeeds_once() {
    let schemas = common::Schemas::default();
    let p = schemas.provider().await;
    p.create_instance(common::start("i1")).await.expect("create");
    let item = fetch(&p).await;
    let ack = first_turn(&item, 2, vec![work_item("i1", 2)]);
    p.ack_orchestration_item(&item.lock_token, ack.clone())
        .await
        .expect("first ack");
    // The runtime retries an ack whose reply it never saw; the repeat must not look like a failure.
    p.ack_orchestration_item(&item.lock_token, ack.clone())
        .await
        .expect("the same ack again is recognised as done");
    assert_eq!(
        p.read_history("i1", 1).await.expect("history").len(),
        3,
        "applied once"
    );
    assert_eq!(
        p.get_queue_depths().await.expect("depths").worker_queue,
        1,
        "work enqueued once"
    );
    // A different ack with the spent token is still refused.
    let mut other = ack;
    other.history.truncate(1);
    other.history[0].event_id = 10;
    let refused = p.ack_orchestration_item(&item.lock_token, other).await;
    assert_eq!(refused.map_err(|e| e.kind), Err(ProviderErrorKind::LockLost));
}

#[tokio::test]
async fn fetches_and_acks_are_one_round_trip_each() {
    let schemas = common::Schemas::default();
    // One connection of each kind, so that after a warm-up every statement is prepared on each. (A
    // fetch woken by an ack runs on the ack's connection, so warming up takes two rounds.)
    let p = schemas.single_connection_provider().await;
    // Instances are created by a client of their own (one in the runtime's process would hand the
    // new instance to the runtime, and the fetch would need no query).
    let client = common::connect(p.schema()).await;
    let mut trips = Vec::new();
    for round in 0..3 {
        let id = format!("i{round}");
        let before = client.stats().round_trips;
        client.create_instance(common::start(&id)).await.expect("create");
        let created = client.stats().round_trips;
        let fetch_before = p.stats().round_trips;
        let item = fetch(&p).await;
        let fetched = p.stats().round_trips;
        p.ack_orchestration_item(&item.lock_token, first_turn(&item, 3, vec![work_item(&id, 2)]))
            .await
            .expect("ack");
        let acked = p.stats().round_trips;
        let lease = p
            .fetch_work_item(&worker(), Duration::from_secs(5))
            .await
            .expect("fetch work")
            .expect("the item");
        let work_fetched = p.stats().round_trips;
        p.ack_work_item(&lease.lock_token, Some(event(&id)))
            .await
            .expect("ack work");
        let work_acked = p.stats().round_trips;
        // The completion's turn (stocked by the work ack), acked so the next round's fetch finds
        // the next instance.
        let turn = fetch(&p).await;
        assert_eq!(turn.instance_id, id);
        p.ack_orchestration_item(&turn.lock_token, empty_turn(&turn))
            .await
            .expect("ack the completion's turn");
        trips = vec![
            created - before,
            fetched - fetch_before,
            acked - fetched,
            work_fetched - acked,
            work_acked - work_fetched,
        ];
        if round < 2 {
            continue; // the warm-up prepared the statements
        }
    }
    assert_eq!(
        trips,
        vec![1, 1, 1, 1, 1],
        "round trips of create, fetch, ack, work fetch, work ack"
    );
}

/// Four orchestration and eight activity dispatchers with a 100 ms poll interval, like a default
/// runtime, against an empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_provider_issues_about_one_query_per_second() {
    let schemas = common::Schemas::default();
    let p = Arc::new(schemas.provider().await);
    let mut tasks = Vec::new();
    let poll = Duration::from_millis(100);
    for _ in 0..4 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                assert!(p
                    .fetch_orchestration_item(LOCK, poll)
                    .await
                    .expect("fetch")
                    .is_none());
            }
        }));
    }
    for _ in 0..8 {
        let p = p.clone();
        let request = WorkerFetch {
            lock_timeout: LOCK,
            tag_filter: TagFilter::DefaultOnly,
            session: Some(SessionRouting {
                owner_id: "node-1".into(),
                lease: Duration::from_secs(30),
                may_claim_new: true,
            }),
        };
        tasks.push(tokio::spawn(async move {
            loop {
                assert!(p.fetch_work_item(&request, poll).await.expect("fetch").is_none());
            }
        }));
    }
    // Past the first looks (one per dispatcher at most) and the first recheck, which may still
    // prepare statements on pooled connections that have not run them yet.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = p.stats().round_trips;
    let window = Duration::from_secs(6);
    tokio::time::sleep(window).await;
    let queries = p.stats().round_trips - before;
    for task in &tasks {
        task.abort();
    }
    let per_second = queries as f64 / window.as_secs_f64();
    eprintln!("idle provider: {queries} queries in {window:?} ({per_second:.2}/s) with 12 dispatchers polling every {poll:?}");
    assert!(per_second <= 1.5, "{per_second:.2} queries/s while idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_starts_new_work_within_milliseconds() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let client_side = common::connect(&schema).await;
    let runtime_side = Arc::new(common::connect(&schema).await);
    let mut latencies = Vec::new();
    for n in 0..20 {
        let waiting = {
            let p = runtime_side.clone();
            tokio::spawn(async move {
                let item = p
                    .fetch_orchestration_item(LOCK, Duration::from_secs(10))
                    .await
                    .expect("fetch");
                (item, Instant::now())
            })
        };
        // Let the fetch start waiting (an idle fetch issues no queries, so this costs nothing).
        tokio::time::sleep(Duration::from_millis(30)).await;
        let created_at = Instant::now();
        client_side
            .create_instance(common::start(&format!("i{n}")))
            .await
            .expect("create");
        let (item, fetched_at) = waiting.await.expect("join");
        let item = item.expect("woken by the other object's write");
        latencies.push(fetched_at - created_at);
        runtime_side
            .ack_orchestration_item(&item.lock_token, first_turn(&item, 0, vec![]))
            .await
            .expect("ack");
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    eprintln!("cross-object wake-up: p50 {p50:?}, max {max:?}");
    assert!(p50 < Duration::from_millis(50), "p50 {p50:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_move_on_to_the_next_free_instance() {
    let schemas = common::Schemas::default();
    let p = Arc::new(schemas.provider().await);
    for n in 0..20 {
        p.create_instance(common::start(&format!("i{n}")))
            .await
            .expect("create");
    }
    // Ten fetches at once that do not wait: while free instances remain, none may come back empty.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.fetch_orchestration_item(LOCK, Duration::ZERO).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        let item = task.await.expect("join").expect("fetch");
        ids.push(item.expect("work was available for every fetch").instance_id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "ten distinct instances");
}

/// Fetches that arrive together (dispatcher slots freed by one group-committed ack) are answered by
/// one query that leases an item for each, on both queues.
#[tokio::test]
async fn fetches_that_arrive_together_share_one_query() {
    let schemas = common::Schemas::default();
    let p = schemas.single_connection_provider().await;
    // Warm-up: every statement prepared on each connection it runs on (two rounds: a fetch woken
    // by an ack runs on the ack's connection).
    for round in 0..2 {
        let id = format!("warm{round}");
        p.create_instance(common::start(&id)).await.expect("create");
        let item = fetch(&p).await;
        p.ack_orchestration_item(&item.lock_token, first_turn(&item, 0, vec![work_item(&id, 2)]))
            .await
            .expect("ack");
        let lease = p
            .fetch_work_item(&worker(), Duration::from_secs(5))
            .await
            .expect("fetch work")
            .expect("the item");
        p.ack_work_item(&lease.lock_token, None).await.expect("ack work");
    }

    // Created through another object: a create through `p` would lock its instance for `p`'s
    // stock, and the fetches below would take them from there without a query.
    let client = common::connect(p.schema()).await;
    for n in 0..6 {
        client
            .create_instance(common::start(&format!("i{n}")))
            .await
            .expect("create");
    }
    // Six fetches polled together on this thread: all join the group before its query runs.
    let before = p.stats().round_trips;
    let items =
        futures_join_all((0..6).map(|_| p.fetch_orchestration_item(LOCK, Duration::from_secs(5)))).await;
    let trips = p.stats().round_trips - before;
    let items: Vec<OrchestrationItem> = items
        .into_iter()
        .map(|item| item.expect("fetch").expect("an instance for every fetch"))
        .collect();
    let mut ids: Vec<&str> = items.iter().map(|item| item.instance_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["i0", "i1", "i2", "i3", "i4", "i5"]);
    assert_eq!(trips, 1, "one query for six fetches");

    // Six work items from the turns' acks, fetched the same way.
    for item in &items {
        p.ack_orchestration_item(
            &item.lock_token,
            first_turn(item, 0, vec![work_item(&item.instance_id, 2)]),
        )
        .await
        .expect("ack");
    }
    let before = p.stats().round_trips;
    let request = worker();
    let leases = futures_join_all((0..6).map(|_| p.fetch_work_item(&request, Duration::from_secs(5)))).await;
    let trips = p.stats().round_trips - before;
    let mut instances: Vec<String> = leases
        .into_iter()
        .map(|lease| {
            lease
                .expect("fetch work")
                .expect("an item for every fetch")
                .activity
                .instance_id
        })
        .collect();
    instances.sort_unstable();
    assert_eq!(instances, ["i0", "i1", "i2", "i3", "i4", "i5"]);
    assert_eq!(trips, 1, "one query for six work fetches");
}

/// An idle worker fetch takes the work item a turn's ack creates straight from the ack (no fetch
/// query needed); the handed lease is a real one (the item acks with it), and items no fetch waits
/// for go to the queue as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_fetch_takes_an_ack_s_new_item() {
    let schemas = common::Schemas::default();
    let p = Arc::new(schemas.single_connection_provider().await);
    for round in 0..3 {
        let id = format!("i{round}");
        p.create_instance(common::start(&id)).await.expect("create");
        let item = fetch(&p).await;
        // A worker fetch that found the queue empty and waits.
        let waiting = tokio::spawn({
            let p = p.clone();
            async move { p.fetch_work_item(&worker(), Duration::from_secs(30)).await }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let looked = p.stats().round_trips;
        while p.stats().round_trips == looked {
            assert!(Instant::now() < deadline, "the worker fetch never looked");
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // its look returned; it waits now
        let handed = p.stats().work_items_handed;
        // Two items: the waiting fetch takes one, the other is queued.
        let work = vec![work_item(&id, 2), work_item(&id, 3)];
        p.ack_orchestration_item(&item.lock_token, first_turn(&item, 1, work))
            .await
            .expect("ack");
        let lease = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting fetch got an item")
            .expect("join")
            .expect("fetch")
            .expect("an item");
        assert_eq!(p.stats().work_items_handed - handed, 1, "handed by the ack");
        assert_eq!(lease.activity.event_id, 2, "the first item of the turn");
        assert_eq!(lease.attempt, 1);
        let queued = p
            .fetch_work_item(&worker(), Duration::ZERO)
            .await
            .expect("fetch")
            .expect("the other item is in the queue");
        assert_eq!(queued.activity.event_id, 3);
        p.ack_work_item(&lease.lock_token, None)
            .await
            .expect("the handed lease acks");
        p.ack_work_item(&queued.lock_token, None).await.expect("ack");
        assert_eq!(p.get_queue_depths().await.expect("depths").worker_queue, 0);
    }
}

/// An idle orchestration fetch takes the instance an activity's completion goes to straight from
/// the activity's ack, locked with the completion among its messages; while a turn of the instance
/// runs, nothing is handed and the completion waits for that turn's ack as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_orchestration_fetch_takes_the_instance_an_activity_completes() {
    let schemas = common::Schemas::default();
    let p = Arc::new(schemas.provider().await);
    p.create_instance(common::start("i")).await.expect("create");
    let item = fetch(&p).await;
    let work = vec![work_item("i", 2), work_item("i", 3)];
    p.ack_orchestration_item(&item.lock_token, first_turn(&item, 0, work))
        .await
        .expect("ack");
    let first = p
        .fetch_work_item(&worker(), Duration::ZERO)
        .await
        .expect("fetch")
        .expect("an item");
    let second = p
        .fetch_work_item(&worker(), Duration::ZERO)
        .await
        .expect("fetch")
        .expect("an item");

    // An orchestration fetch that found nothing and waits.
    let waiting = tokio::spawn({
        let p = p.clone();
        async move { p.fetch_orchestration_item(LOCK, Duration::from_secs(30)).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let looked = p.stats().round_trips;
    while p.stats().round_trips == looked {
        assert!(Instant::now() < deadline, "the orchestration fetch never looked");
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await; // its look returned; it waits now
    let handed = p.stats().turns_handed;
    p.ack_work_item(&first.lock_token, Some(event("i")))
        .await
        .expect("ack work");
    let turn = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting fetch got the instance")
        .expect("join")
        .expect("fetch")
        .expect("an instance");
    assert_eq!(p.stats().turns_handed - handed, 1, "handed by the activity's ack");
    assert_eq!(turn.instance_id, "i");
    assert_eq!(turn.messages.len(), 1, "the completion");
    assert_eq!(
        turn.history.len(),
        item.history.len() + 1,
        "the first turn's history"
    );

    // While that turn runs, the second completion is stored but nothing is handed.
    let waiting = tokio::spawn({
        let p = p.clone();
        async move { p.fetch_orchestration_item(LOCK, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    p.ack_work_item(&second.lock_token, Some(event("i")))
        .await
        .expect("ack work");
    assert_eq!(p.stats().turns_handed - handed, 1, "the instance was locked");
    let next = TurnAck {
        execution_id: turn.instance.current_execution_id,
        history: vec![HistoryRecord {
            event_id: item.history.len() as u64 + 2,
            kind: "Recorded".into(),
            payload: "{}".into(),
        }],
        ..TurnAck::default()
    };
    p.ack_orchestration_item(&turn.lock_token, next)
        .await
        .expect("the handed turn acks");
    let later = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the second completion is fetched after the turn")
        .expect("join")
        .expect("fetch")
        .expect("an instance");
    assert_eq!(later.instance_id, "i");
    assert_eq!(later.messages.len(), 1);
}

#[tokio::test]
async fn a_result_for_an_instance_whose_turn_this_object_holds_wakes_no_fetch_until_the_turn_ends() {
    let schemas = common::Schemas::default();
    let p = Arc::new(schemas.single_connection_provider().await);
    let activity = activity_of_a_running_instance(&p, "i").await;
    // An event gives the instance a turn while its activity runs.
    let client = common::connect(p.schema()).await;
    client.enqueue_message(event("i")).await.expect("event");
    let turn = fetch(&p).await;
    // Another orchestration fetch waits (the last look saw nothing more to fetch).
    let waiting = tokio::spawn({
        let p = p.clone();
        async move { p.fetch_orchestration_item(LOCK, Duration::from_secs(30)).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.stats().idle_fetches == 0 {
        assert!(
            Instant::now() < deadline,
            "the orchestration fetch never went idle"
        );
        tokio::task::yield_now().await;
    }

    p.ack_work_item(&activity.lock_token, Some(event("i")))
        .await
        .expect("ack work");
    assert_eq!(p.stats().results_deferred, 1);
    p.ack_orchestration_item(&turn.lock_token, empty_turn(&turn))
        .await
        .expect("ack the turn");
    let next = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting fetch got the instance after the turn")
        .expect("join")
        .expect("fetch")
        .expect("an instance");
    assert_eq!(next.instance_id, "i");
    assert_eq!(next.messages.len(), 1, "the activity's result");
    // Woken when the turn ended, not at the recheck.
    assert_eq!(p.stats().found_by_recheck, 0);
}

/// Runs the first turn of `instance` (scheduling one activity) and fetches that activity: what a
/// busy runtime holds just before the activity's ack. Ends with an empty orchestration fetch, so the
/// provider counts its orchestration fetches as running.
async fn activity_of_a_running_instance(p: &PostgresProvider, instance: &str) -> WorkItemLease {
    p.create_instance(common::start(instance)).await.expect("create");
    let item = fetch(p).await;
    p.ack_orchestration_item(
        &item.lock_token,
        first_turn(&item, 0, vec![work_item(instance, 2)]),
    )
    .await
    .expect("ack");
    let activity = p
        .fetch_work_item(&worker(), Duration::ZERO)
        .await
        .expect("fetch")
        .expect("an item");
    let none = p
        .fetch_orchestration_item(LOCK, Duration::ZERO)
        .await
        .expect("fetch");
    assert!(none.is_none(), "nothing queued for the orchestration");
    activity
}

#[tokio::test]
async fn a_busy_runtime_s_next_fetch_takes_the_instance_an_activity_completed() {
    let schemas = common::Schemas::default();
    let p = schemas.single_connection_provider().await;
    let activity = activity_of_a_running_instance(&p, "i").await;
    // No orchestration fetch waits: the ack locks the instance for the stock anyway.
    let handed = p.stats().turns_handed;
    p.ack_work_item(&activity.lock_token, Some(event("i")))
        .await
        .expect("ack work");
    let before = p.stats().round_trips;
    // The runtime holds the history of the turn it acked, so the turn needs no query at all.
    let fetched = p
        .fetch_orchestration_item_cached(LOCK, Duration::ZERO, Holds::history("i", 1))
        .await
        .expect("fetch")
        .expect("the stocked instance");
    assert_eq!(p.stats().round_trips, before, "taken from the stock, no query");
    assert_eq!(p.stats().turns_handed - handed, 1);
    assert_eq!(
        fetched.omitted_history_len,
        Some(1),
        "the first turn's history, held by the runtime"
    );
    let turn = fetched.item;
    assert_eq!(turn.instance_id, "i");
    assert_eq!(turn.messages.len(), 1, "the completion");
    assert!(turn.history.is_empty());
    // The lease is real: another provider object cannot take the instance.
    let other = common::connect(p.schema()).await;
    let none = other
        .fetch_orchestration_item(LOCK, Duration::ZERO)
        .await
        .expect("fetch");
    assert!(none.is_none(), "locked for the stocked turn");
    p.ack_orchestration_item(&turn.lock_token, empty_turn(&turn))
        .await
        .expect("the stocked turn acks");
}

#[tokio::test]
async fn a_client_sharing_the_runtime_s_provider_hands_it_the_new_instance() {
    let schemas = common::Schemas::default();
    let p = schemas.single_connection_provider().await;
    // The runtime's orchestration fetch runs (and finds nothing).
    let none = p
        .fetch_orchestration_item(LOCK, Duration::ZERO)
        .await
        .expect("fetch");
    assert!(none.is_none());
    assert!(p.create_instance(common::start("i")).await.expect("create"));
    let before = p.stats().round_trips;
    let turn = p
        .fetch_orchestration_item(LOCK, Duration::ZERO)
        .await
        .expect("fetch")
        .expect("the new instance");
    assert_eq!(
        p.stats().round_trips,
        before,
        "handed over by the create, no query"
    );
    assert_eq!(turn.instance_id, "i");
    assert_eq!(turn.attempt, 1);
    assert_eq!(turn.instance.current_execution_id, 1);
    assert_eq!(turn.instance.name, "Orchestration");
    assert!(turn.history.is_empty() && turn.kv_snapshot.is_empty());
    assert_eq!(turn.messages.len(), 1, "the start message");
    assert_eq!(turn.messages[0].payload, common::start("i").payload);
    // Created once: a second start of the same id changes nothing and hands nothing.
    assert!(!p.create_instance(common::start("i")).await.expect("create again"));
    let other = common::connect(p.schema()).await;
    let none = other
        .fetch_orchestration_item(LOCK, Duration::ZERO)
        .await
        .expect("fetch");
    assert!(none.is_none(), "locked for the handed turn");
    p.ack_orchestration_item(&turn.lock_token, first_turn(&turn, 0, Vec::new()))
        .await
        .expect("the handed turn acks");
}

#[tokio::test]
async fn a_fetch_query_leases_queued_instances_for_the_next_fetches() {
    let schemas = common::Schemas::default();
    let p = schemas.single_connection_provider().await;
    let client = common::connect(p.schema()).await;
    let ids = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    for id in ids {
        client.create_instance(common::start(id)).await.expect("create");
    }
    let mut fetched = Vec::new();
    for _ in 0..ids.len() {
        let before = p.stats().round_trips;
        let item = fetch(&p).await;
        fetched.push((item.instance_id.clone(), p.stats().round_trips - before));
        p.ack_orchestration_item(&item.lock_token, first_turn(&item, 0, Vec::new()))
            .await
            .expect("ack");
    }
    // One fetch ran at a time, so the stock has eight places (eight per fetch): the first query
    // (preparing its statement too) also leased "b" to "i", which the next fetches took without a
    // query; "j" needed one.
    let expected: Vec<(String, u64)> = ids
        .iter()
        .map(|id| {
            let trips = match *id {
                "a" => 2,
                "j" => 1,
                _ => 0,
            };
            (id.to_string(), trips)
        })
        .collect();
    assert_eq!(fetched, expected);
}

#[tokio::test]
async fn a_work_fetch_query_leases_the_plain_items_that_follow_for_the_next_fetches() {
    let schemas = common::Schemas::default();
    let p = schemas.single_connection_provider().await;
    let client = common::connect(p.schema()).await;
    // Queued by another object (nothing handed to fetches): plain 2 and 3, a tagged 4, plain 5 to 10.
    client.create_instance(common::start("i")).await.expect("create");
    let item = fetch(&client).await;
    let mut work: Vec<NewWorkItem> = (2..11).map(|event_id| work_item("i", event_id)).collect();
    work[2].tag = Some("gpu".into());
    client
        .ack_orchestration_item(&item.lock_token, first_turn(&item, 0, work))
        .await
        .expect("ack");
    let any = WorkerFetch {
        tag_filter: TagFilter::Any,
        ..worker()
    };
    let mut fetched = Vec::new();
    for _ in 0..9 {
        let before = p.stats().round_trips;
        let lease = p
            .fetch_work_item(&any, Duration::from_secs(5))
            .await
            .expect("fetch")
            .expect("an item");
        fetched.push((lease.activity.event_id, p.stats().round_trips - before));
    }
    // One fetch ran at a time, so the stock has four places. The first query (preparing its
    // statement too) also leased 3, which the next fetch took without a query, and stopped at 4,
    // which is not plain: leasing 5 then would have had it run before 4. The query that took 4
    // leased 5 to 8, as many as the stock holds, and the one that took 9 leased 10. Queue order
    // holds throughout.
    let expected = [
        (2, 2),
        (3, 0),
        (4, 1),
        (5, 0),
        (6, 0),
        (7, 0),
        (8, 0),
        (9, 1),
        (10, 0),
    ];
    assert_eq!(fetched, expected);
}

#[tokio::test]
async fn completions_committed_together_each_get_their_own_outcome() {
    let schemas = common::Schemas::default();
    let p = schemas.single_connection_provider().await;
    // One activity of "gone", whose instance (and work) is deleted before its ack, and four of "i".
    let gone = activity_of_a_running_instance(&p, "gone").await;
    p.create_instance(common::start("i")).await.expect("create");
    let item = fetch(&p).await;
    let work = (2..6).map(|event_id| work_item("i", event_id)).collect();
    p.ack_orchestration_item(&item.lock_token, first_turn(&item, 0, work))
        .await
        .expect("ack");
    let mut leases = Vec::new();
    while let Some(lease) = p
        .fetch_work_item(&worker(), Duration::ZERO)
        .await
        .expect("fetch work")
    {
        leases.push(lease);
    }
    assert_eq!(leases.len(), 4);
    p.delete_instance("gone", true).await.expect("delete");
    // One of them loses its lease.
    p.abandon_work_item(&leases[3].lock_token, None)
        .await
        .expect("abandon");

    // All acked at once: behind the first, the others queue and commit as one batch (one call).
    let mut acks = vec![(gone.lock_token.clone(), "gone")];
    acks.extend(leases.iter().map(|l| (l.lock_token.clone(), "i")));
    let results = futures_join_all(
        acks.iter()
            .map(|(token, instance)| p.ack_work_item(token, Some(event(instance)))),
    )
    .await;
    assert_eq!(
        results[0].as_ref().map_err(|e| e.kind),
        Err(ProviderErrorKind::LockLost),
        "the deleted instance's work item went with it"
    );
    assert!(results[1..4].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        results[4].as_ref().map_err(|e| e.kind),
        Err(ProviderErrorKind::LockLost),
        "the abandoned item's lease is lost"
    );

    // The three results reach "i", in one turn or more.
    let mut messages = 0;
    while messages < 3 {
        let turn = fetch(&p).await;
        assert_eq!(turn.instance_id, "i");
        messages += turn.messages.len();
        p.ack_orchestration_item(&turn.lock_token, empty_turn(&turn))
            .await
            .expect("ack the turn");
    }
    assert_eq!(messages, 3);
    assert_eq!(p.stats().batch_reruns, 0, "the batch's merged statement failed");
    let none = p
        .fetch_orchestration_item(LOCK, Duration::ZERO)
        .await
        .expect("fetch");
    assert!(none.is_none(), "nothing else was stored");
}

#[tokio::test]
async fn a_dropped_ack_gives_back_the_item_it_promised_an_idle_fetch() {
    let schemas = common::Schemas::default();
    let p = Arc::new(schemas.provider().await);
    p.create_instance(common::start("i")).await.expect("create");
    let item = fetch(&p).await;
    let waiting = tokio::spawn({
        let p = p.clone();
        async move { p.fetch_work_item(&worker(), Duration::from_secs(30)).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.stats().idle_fetches == 0 {
        assert!(Instant::now() < deadline, "the worker fetch never went idle");
        tokio::task::yield_now().await;
    }
    // The turn's ack promises its work item to the idle fetch; the call is dropped before it answers.
    let ack = first_turn(&item, 0, vec![work_item("i", 2)]);
    let mut acking = p.ack_orchestration_item(&item.lock_token, ack);
    std::future::poll_fn(|cx| {
        let polled = std::future::Future::poll(acking.as_mut(), cx);
        assert!(polled.is_pending(), "the ack waits for the server");
        std::task::Poll::Ready(())
    })
    .await;
    assert_eq!(p.stats().idle_fetches, 0, "the fetch was promised the item");
    drop(acking);
    assert_eq!(p.stats().idle_fetches, 1, "the promise was given back");
    waiting.abort();
}

#[tokio::test]
async fn a_stocked_turn_nobody_takes_goes_back() {
    let schemas = common::Schemas::default();
    let p = schemas.provider().await;
    let other = common::connect(p.schema()).await;
    for (instance, stop_fetching) in [("kept", false), ("stopped", true)] {
        let activity = activity_of_a_running_instance(&p, instance).await;
        p.ack_work_item(&activity.lock_token, Some(event(instance)))
            .await
            .expect("ack work");
        let started = Instant::now();
        if stop_fetching {
            // What the runtime calls when it stops: the stock goes back at once.
            p.wake_all();
        }
        let turn = other
            .fetch_orchestration_item(LOCK, Duration::from_secs(20))
            .await
            .expect("fetch")
            .expect("handed back, fetchable by another process");
        assert_eq!(turn.instance_id, instance);
        assert_eq!(turn.messages.len(), 1, "the completion");
        assert_eq!(turn.attempt, 1, "the hand-back was not an attempt");
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "handed back well before its lease ran out"
        );
        other
            .ack_orchestration_item(&turn.lock_token, empty_turn(&turn))
            .await
            .expect("ack");
    }
}

/// Awaits all `futures`, polling them together on this task (a minimal `join_all`).
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (future, slot) in pending.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => *slot = Some(output),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter().map(|slot| slot.expect("finished")).collect()
}

/// `url` with `application_name` set, so the test can find the provider's connections.
fn url_named(name: &str) -> String {
    let url = common::url();
    if url.contains("://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}application_name={name}")
    } else {
        format!("{url} application_name={name}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_are_retryable_and_heal() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let name = schema.replace("dxtest_", "dxapp_");
    let p = Arc::new(
        PostgresProvider::connect_with_schema(&url_named(&name), &schema)
            .await
            .unwrap_or_else(|err| common::no_server(&err)),
    );
    let other = common::connect(&schema).await;
    p.create_instance(common::start("before")).await.expect("create");
    let item = fetch(&p).await;
    p.ack_orchestration_item(&item.lock_token, first_turn(&item, 0, vec![]))
        .await
        .expect("ack");

    // Cut every connection of the provider, the listener's included, as a server restart would.
    let admin = common::plain_client().await;
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .await
        .expect("terminate");
    assert!(
        cut.len() >= 2,
        "the pool's and the listener's connections were cut"
    );

    // Calls fail as retryable (never permanent) until the pool has replaced its connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match p.get_system_metrics().await {
            Ok(_) => break,
            Err(err) => {
                assert_eq!(err.kind, ProviderErrorKind::Retryable, "{err}");
                assert!(Instant::now() < deadline, "the provider did not recover: {err}");
            }
        }
    }
    // The listener reconnects, and work from another object wakes a waiting fetch again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.stats().listening {
        assert!(Instant::now() < deadline, "the listener did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = {
        let p = p.clone();
        tokio::spawn(async move {
            let item = p.fetch_orchestration_item(LOCK, Duration::from_secs(10)).await;
            (item, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let created_at = Instant::now();
    other
        .create_instance(common::start("after"))
        .await
        .expect("create");
    let (item, fetched_at) = waiting.await.expect("join");
    let item = item
        .expect("fetch after the cut")
        .expect("woken by the other object");
    assert_eq!(item.instance_id, "after");
    assert!(
        fetched_at - created_at < Duration::from_secs(1),
        "woken after {:?}",
        fetched_at - created_at
    );
}

/// Runs a first turn of `instance` on `p` (3 events) and then gives the instance a message, so that
/// the next fetch finds it: the history stored is the one `p`'s runtime would hold.
async fn acked_once(p: &PostgresProvider, client: &PostgresProvider, instance: &str) {
    client
        .create_instance(common::start(instance))
        .await
        .expect("create");
    let item = fetch(p).await;
    p.ack_orchestration_item(&item.lock_token, first_turn(&item, 2, Vec::new()))
        .await
        .expect("ack");
    client.enqueue_message(event(instance)).await.expect("event");
}

#[tokio::test]
async fn a_turn_leaves_out_only_the_history_its_own_runtime_holds() {
    let schemas = common::Schemas::default();
    let p = schemas.provider().await;
    let client = common::connect(p.schema()).await;
    let cached = |p: &PostgresProvider, cache: Arc<dyn HistoryCache>| {
        let p = p.clone();
        async move {
            p.fetch_orchestration_item_cached(LOCK, Duration::from_secs(5), cache)
                .await
                .expect("fetch")
                .expect("an instance with work")
        }
    };

    // Acked here and held whole by the runtime: left out.
    acked_once(&p, &client, "held").await;
    let turn = cached(&p, Holds::history("held", 3)).await;
    assert_eq!(turn.omitted_history_len, Some(3));
    assert!(turn.item.history.is_empty());
    assert_eq!(turn.item.messages.len(), 1);
    p.ack_orchestration_item(&turn.item.lock_token, empty_turn(&turn.item))
        .await
        .expect("a turn without its history acks");

    // Acked here, but the runtime holds another length (or nothing): the whole history.
    for (instance, cache) in [
        ("shorter", Holds::history("shorter", 2)),
        ("evicted", Holds::history("x", 3)),
    ] {
        acked_once(&p, &client, instance).await;
        let turn = cached(&p, cache).await;
        assert_eq!(turn.omitted_history_len, None, "{instance}");
        let ids: Vec<u64> = turn.item.history.iter().map(|r| r.event_id).collect();
        assert_eq!(ids, [1, 2, 3], "{instance}");
        p.ack_orchestration_item(&turn.item.lock_token, empty_turn(&turn.item))
            .await
            .expect("ack");
    }

    // A plain fetch always brings the whole history.
    acked_once(&p, &client, "plain").await;
    let item = fetch(&p).await;
    assert_eq!(item.history.len(), 3);
    p.ack_orchestration_item(&item.lock_token, empty_turn(&item))
        .await
        .expect("ack");

    // Last acked by another provider object (another process): whole, even though this runtime
    // claims to hold a history of that length.
    acked_once(&client, &client, "elsewhere").await;
    let turn = cached(&p, Holds::history("elsewhere", 3)).await;
    assert_eq!(turn.omitted_history_len, None);
    assert_eq!(turn.item.history.len(), 3);
    assert_eq!(turn.item.history[2].payload, "{\"n\":3}");
}

#[tokio::test]
async fn connections_of_earlier_versions_still_get_whole_histories() {
    let schemas = common::Schemas::default();
    let p = schemas.provider().await;
    acked_once(&p, &p, "i").await;
    // A connection that does not name an owner (as an earlier version's do not) reads the state a
    // turn of the instance returns: the whole history.
    let plain = common::plain_client().await;
    let row = plain
        .query_one(
            &format!(
                "SELECT event_ids, kinds FROM \"{}\".turn_state('i', 1)",
                p.schema()
            ),
            &[],
        )
        .await
        .expect("turn_state");
    let ids: Option<Vec<i64>> = row.get(0);
    let kinds: Option<Vec<String>> = row.get(1);
    assert_eq!(ids, Some(vec![1, 2, 3]));
    assert_eq!(kinds.map(|k| k.len()), Some(3));
}

/// The buffers one work fetch that finds nothing reads, with `delayed` items waiting out a delay
/// in the queue (as abandoned items back off). Buffers, unlike time, do not depend on the machine.
async fn buffers_of_an_empty_work_fetch(delayed: i64) -> i64 {
    let schemas = common::Schemas::default();
    let p = schemas.provider().await;
    let plain = common::plain_client().await;
    let schema = p.schema();
    plain
        .execute(
            &format!(
                "INSERT INTO \"{schema}\".worker_queue (instance_id, execution_id, event_id, payload, visible_at_ms)
                 SELECT 'i' || g, 1, g, 'p', \"{schema}\".now_ms() + 3600000 FROM generate_series(1, $1::bigint) AS g"
            ),
            &[&delayed],
        )
        .await
        .expect("delayed items");
    plain
        .batch_execute(&format!("VACUUM ANALYZE \"{schema}\".worker_queue"))
        .await
        .expect("vacuum");
    let call = format!(
        "SELECT * FROM \"{schema}\".fetch_work_items_with_extras(gen_random_uuid(), 30000, true, false, \
         '{{}}'::text[], NULL, 30000, false, 1, 16)"
    );
    // Twice: the first call plans the function's statements (catalog reads).
    let mut read = 0;
    for _ in 0..2 {
        let lines: Vec<String> = plain
            .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {call}"), &[])
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get(0))
            .collect();
        // The function scan's own line comes first: "Buffers: shared hit=12 read=3".
        let buffers = lines
            .iter()
            .find_map(|line| line.trim().strip_prefix("Buffers: shared "))
            .unwrap_or_else(|| panic!("no buffer counts in the plan: {lines:?}"));
        read = buffers
            .split_whitespace()
            .filter_map(|part| part.split_once('='))
            .filter(|(kind, _)| matches!(*kind, "hit" | "read"))
            .map(|(_, n)| n.parse::<i64>().expect("a block count"))
            .sum();
    }
    read
}

/// A work fetch reads only visible items: a queue of items backing off (an activity name no worker
/// knows backs off for up to 30 s per attempt, and a fetch comes at each due time) costs it
/// nothing. Migration 7's fetch read every one of them, 8.7 ms per fetch with 20,000.
#[tokio::test]
async fn a_work_fetch_does_not_read_delayed_items() {
    let empty = buffers_of_an_empty_work_fetch(0).await;
    let delayed = buffers_of_an_empty_work_fetch(5_000).await;
    assert!(
        delayed <= empty + 10,
        "an empty fetch read {delayed} buffers with 5,000 delayed items, {empty} with none"
    );
}
