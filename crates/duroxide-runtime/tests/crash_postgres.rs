//! Crashes with real processes on PostgreSQL: the run of `crash.rs` (workers SIGKILLed at chosen
//! points and at random, then replaced; the oracle and the cross-process lock journals) on a fresh
//! schema of the server at `DUROXIDE_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! dropped afterwards.
//!
//! `DUROXIDE_CRASH_SEED` and `DUROXIDE_SOAK_SECS` work as in `crash.rs`.

#[path = "chaos_workload/mod.rs"]
mod workload;

use workload::store::Store;
use workload::Scale;

/// Seeds of the CI run on PostgreSQL.
const CI_SEEDS: [u64; 1] = [0xC4A5_1001];

/// The entry point of the worker processes this test starts; does nothing in a normal test run.
#[test]
fn crash_worker_process() {
    workload::crash_run::worker_main();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_runtime_processes_on_postgres_finish_every_orchestration_exactly_once() {
    let scale = Scale {
        light: 4,
        fan_outs: 3,
        heavy: 2,
    };
    workload::crash_run::run(Store::postgres, &CI_SEEDS, scale).await;
}
