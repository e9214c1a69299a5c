//! Wake-ups on PostgreSQL with short polls: batches of chained activities, fan-outs whose results
//! mostly arrive while their instance is locked, and short timers (found through due hints, not
//! looks), on one runtime whose
//! dispatchers poll every 10 ms (as the Python benchmark's do), on a fresh schema of the server at
//! `DUROXIDE_PG_URL`, dropped afterwards. Every item must be found through the announcement of the
//! write that made it, never only by the provider's two-second recheck: such a find is a lost
//! wake-up, and the work waited up to two seconds. (Fetches handed items by acks, given items from
//! the stock, and polls ending while an ack hands them an item all once lost wake-ups here; results
//! deferred to the end of a held turn are the newest way to lose one.) And once the work is done,
//! the fetches go quiet at once: no look is left owed to an item that is gone.

#[path = "chaos_workload/mod.rs"]
mod workload;

mod common;

use std::sync::Arc;
use std::time::Duration;

use duroxide_core::Provider;
use duroxide_postgres::PostgresProvider;
use duroxide_runtime::{Client, OrchestrationContext, Runtime, RuntimeOptions};
use workload::store::{pg_url, Store};

/// A runtime on a fresh schema with `poll` as its dispatchers' poll interval (4 orchestration and
/// 8 activity slots, as the benchmarks') and `inline_activity_wait` as given (zero: every activity
/// goes through the worker queue), its PostgreSQL provider (for its counters) and a client.
async fn runtime_on_postgres(
    store: &Store,
    poll: Duration,
    inline_activity_wait: Duration,
) -> (Runtime, Arc<PostgresProvider>, Client) {
    let Store::Postgres { schema, .. } = store else {
        unreachable!("a PostgreSQL store");
    };
    let pg = match PostgresProvider::connect_with_schema(&pg_url(), schema).await {
        Ok(pg) => Arc::new(pg),
        Err(e) => panic!("this test needs a PostgreSQL server at DUROXIDE_PG_URL: {e}"),
    };
    let provider: Arc<dyn Provider> = pg.clone();
    let mut reg = common::Registries::new();
    reg.activity("Echo", |_ctx, x: String| async move { Ok(x) });
    reg.orchestration("Chain3", |ctx: OrchestrationContext, x: String| async move {
        let a = ctx.schedule_activity("Echo", x).await?;
        let b = ctx.schedule_activity("Echo", a).await?;
        ctx.schedule_activity("Echo", b).await
    });
    reg.orchestration("Sleep", |ctx: OrchestrationContext, ms: String| async move {
        let ms: u64 = ms.parse().map_err(|e| format!("{e}"))?;
        ctx.schedule_timer(Duration::from_millis(ms)).await;
        Ok(ms.to_string())
    });
    reg.orchestration("FanOut", |ctx: OrchestrationContext, n: String| async move {
        let n: usize = n.parse().map_err(|e| format!("{e}"))?;
        let tasks = (0..n)
            .map(|i| ctx.schedule_activity("Echo", i.to_string()))
            .collect();
        Ok(ctx.join(tasks).await.len().to_string())
    });
    let options = RuntimeOptions {
        orchestration_concurrency: 4,
        worker_concurrency: 8,
        dispatcher_poll_interval: poll,
        inline_activity_wait,
        ..common::options()
    };
    let runtime = common::runtime(&provider, &reg, options).await;
    (runtime, pg, Client::new(provider))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_work_waits_for_the_recheck_when_polls_are_short() {
    let store = Store::postgres();
    // Activities through the queue: quick ones would run inline, fan-outs too, and their results
    // would never wait for a locked instance.
    let (runtime, pg, client) = runtime_on_postgres(&store, Duration::from_millis(10), Duration::ZERO).await;
    // Rounds of orchestrations started together, each of which must return its input.
    let rounds = [("Chain3", 20, 20), ("FanOut", 3, 3), ("Sleep", 3, 40)];
    for (name, count, size) in rounds {
        for round in 0..count {
            let runs: Vec<(String, String)> = (0..size)
                .map(|i| {
                    let input = match name {
                        "FanOut" => "100".to_owned(),
                        "Sleep" => (20 + 5 * (i % 7)).to_string(),
                        _ => "x".to_owned(),
                    };
                    (format!("{name}-{round}-{i}"), input)
                })
                .collect();
            for (id, input) in &runs {
                client.start_orchestration(id, name, input).await.expect("start");
            }
            for (id, input) in &runs {
                assert_eq!(&common::completed(&client, id).await, input, "{id}");
            }
        }
    }
    assert!(
        pg.stats().results_deferred > 0,
        "fan-outs defer results: {:?}",
        pg.stats()
    );
    runtime.shutdown(common::SHUTDOWN).await;
    assert_eq!(
        pg.stats().found_by_recheck,
        0,
        "work found only by the recheck (a lost wake-up): {:?}",
        pg.stats()
    );
}

/// After a burst of chained activities, the runtime's fetches go quiet at once. Fetch queries stock
/// queued items beyond their own looks, so they take items whose announcements still owe a look;
/// those looks used to run anyway, one per fetch per poll interval, each finding nothing: after 300
/// chains an idle runtime queried about 170 times a second for three seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_work_leaves_no_looks_behind() {
    let store = Store::postgres();
    let inline_wait = common::options().inline_activity_wait;
    let (runtime, pg, client) = runtime_on_postgres(&store, Duration::from_millis(100), inline_wait).await;
    let ids: Vec<String> = (0..300).map(|i| format!("burst-{i}")).collect();
    for id in &ids {
        client
            .start_orchestration(id, "Chain3", "x")
            .await
            .expect("start");
    }
    for id in &ids {
        assert_eq!(common::completed(&client, id).await, "x", "{id}");
    }
    // A rate over a window: what the idle runtime asks the database right after the burst. Idle, it
    // makes one look per queue per two-second recheck; a few trailing looks and a vacuum may add to
    // that, never one look per item.
    let before = pg.stats().round_trips;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queries = pg.stats().round_trips - before;
    runtime.shutdown(common::SHUTDOWN).await;
    assert!(
        queries <= 12,
        "{queries} queries in the two seconds after the burst: {:?}",
        pg.stats()
    );
}
