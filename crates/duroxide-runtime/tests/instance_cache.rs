//! The instance cache runs a turn on a cached engine only for the very history that engine saw. A
//! stored history of the same length but other content (a store that lost its latest commits in a
//! crash, after which another runtime took the instance on along another path) is replayed instead.

mod common;

use std::sync::Arc;

use common::{options, recorded, Env, Gate, Registries};
use duroxide_conformance::faults::{FaultConfig, FaultyProvider};
use duroxide_core::Provider;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_saw_another_history_of_the_same_length_is_not_used() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cache.db");
    // Without faults the wrapper only passes calls on, and its fetches bring the whole history (as
    // PostgreSQL's do), which is what the cached engine is checked against.
    let provider: Arc<dyn Provider> =
        Arc::new(FaultyProvider::new(common::file(&path), FaultConfig::none(), 0));
    let gate = Gate::new();
    let mut reg = Registries::new();
    let held = gate.clone();
    reg.activity("Held", move |_, input| {
        let held = held.clone();
        async move {
            held.wait().await;
            Ok(input)
        }
    })
    .orchestration("Twice", |ctx, input| async move {
        let first = ctx.schedule_activity("Held", input).await?;
        ctx.schedule_activity("Held", first).await
    });
    let env = Env::start(provider, &reg, options()).await;
    env.client
        .start_orchestration("twice", "Twice", "input")
        .await
        .expect("start");
    recorded(&env.client, "twice", "ActivityScheduled").await;

    // Behind the runtime's back the stored schedule now names another activity: a history as long
    // as the one the cached engine saw (it scheduled "Held"), but not the same.
    let conn = rusqlite::Connection::open(&path).expect("raw connection");
    let changed = conn
        .execute(
            "UPDATE history SET payload = replace(payload, 'Held', 'Hold') \
             WHERE instance_id = 'twice' AND payload LIKE '%Held%'",
            [],
        )
        .expect("rewrite the stored schedule");
    assert_eq!(changed, 1, "one stored event names the activity");
    drop(conn);
    gate.open();

    // Replayed from what is stored, the code's "Held" does not match the recorded "Hold". (The cached
    // engine would have gone on as if nothing had changed, and completed.)
    let error = env.failed("twice").await;
    assert!(error.contains("nondeterministic"), "{error}");
    env.shutdown().await;
}
