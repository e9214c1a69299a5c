//! Chaos on a SQLite file: the mixed workload runs on two runtimes sharing the file while seeded fault
//! injectors fail, delay and lose the replies of their provider calls; the oracle then demands exactly
//! the fault-free results, no lost completion, no overlapping turns, and a side-effect count of 1 for
//! every activity no fault touched (see `chaos_workload/chaos_run.rs`).
//!
//! CI runs a fixed set of seeds. `DUROXIDE_CHAOS_SEED=<n>` reruns one seed; `DUROXIDE_SOAK_SECS=<s>`
//! (what `cargo xtask soak` sets) runs fresh random seeds until that many seconds have passed. Every
//! seed is printed, so a failure names the seed that reproduces it.

#[path = "chaos_workload/mod.rs"]
mod workload;

use workload::store::Store;
use workload::Scale;

/// Seeds CI runs: each a different workload and fault schedule.
const CI_SEEDS: [u64; 3] = [0x5EED_0001, 0x5EED_0002, 0x5EED_0003];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_survives_injected_faults_on_a_sqlite_file() {
    let scale = Scale {
        light: 2,
        fan_outs: 2,
        heavy: 1,
    };
    workload::chaos_run::run(Store::sqlite_file, &CI_SEEDS, scale).await;
}

/// The checks can fail: two stores that know nothing of each other's locks hand out the same instance
/// id at once (the monitor must flag it), and a history whose activity ran twice with no fault on it
/// (the oracle must flag it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_and_the_oracle_have_teeth() {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use duroxide_conformance::faults::{FaultConfig, FaultyProvider, TurnMonitor, Violation};
    use duroxide_core::OrchestrationRegistry;
    use duroxide_runtime::{ActivityRegistry, Client, Runtime};

    let monitor = TurnMonitor::new();
    let mut orchestrations = OrchestrationRegistry::new();
    orchestrations
        .register(
            "SlowTurn",
            |_ctx: duroxide_runtime::OrchestrationContext, _input: String| async move {
                // Holds the turn (and so the lock) long enough for the other store's fetch to land.
                std::thread::sleep(Duration::from_millis(300));
                Ok("done".to_string())
            },
        )
        .unwrap();
    let mut runtimes = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let store = Store::sqlite_file();
        let provider = Arc::new(
            FaultyProvider::new(store.open().await, FaultConfig::none(), 0).with_monitor(monitor.clone()),
        );
        let client = Client::new(store.open().await);
        client
            .start_orchestration("same-id", "SlowTurn", "")
            .await
            .unwrap();
        let runtime = Runtime::start(
            provider,
            ActivityRegistry::new(),
            orchestrations.clone(),
            workload::options(),
        )
        .await
        .unwrap();
        runtimes.push((runtime, store));
        clients.push(client);
    }
    for client in &clients {
        client
            .wait_for_orchestration("same-id", Duration::from_secs(10))
            .await
            .unwrap();
    }
    let violations = monitor.violations();
    // The second hand-out overlaps the first, and the first one's ack, begun after the takeover,
    // still succeeded (in its own store).
    let overlap = violations
        .iter()
        .any(|v| matches!(v, Violation::Overlap { resource, .. } if resource == "orch:same-id"));
    let stale = violations
        .iter()
        .any(|v| matches!(v, Violation::StaleCommit { resource, .. } if resource == "orch:same-id"));
    assert!(overlap && stale, "{violations:?}");
    for (runtime, _store) in runtimes {
        runtime.shutdown(Duration::from_secs(5)).await;
    }

    // A completed chain whose first activity ran twice, with no fault recorded against it.
    let specs = workload::generate(
        7,
        Scale {
            light: 1,
            fan_outs: 0,
            heavy: 0,
        },
        "teeth",
    )
    .into_iter()
    .filter(|s| matches!(s.kind, workload::Kind::Chain { .. }))
    .collect::<Vec<_>>();
    let store = Store::sqlite_file();
    let effects = Arc::new(workload::MemoryEffects::default());
    let runtime = Runtime::start(
        store.open().await,
        workload::activities(effects.clone()),
        workload::orchestrations(),
        workload::options(),
    )
    .await
    .unwrap();
    let client = Client::new(store.open().await);
    workload::drive(&client, &specs).await;
    workload::wait_all(&client, &specs, Duration::from_secs(20)).await;
    let mut counts: HashMap<_, _> = workload::Effects::counts(effects.as_ref());
    let clean = workload::check(&client, &specs, &counts, Some(&Default::default()), "teeth").await;
    assert!(clean.activities > 0);
    let first = counts.keys().min_by_key(|a| a.event_id).cloned().unwrap();
    counts.insert(first, 2);
    let judged = tokio::spawn(async move {
        workload::check(&client, &specs, &counts, Some(&Default::default()), "teeth").await;
    })
    .await;
    let panic = judged.expect_err("the oracle flags the second run").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("ran 2 times although no fault touched it"),
        "{message}"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}
