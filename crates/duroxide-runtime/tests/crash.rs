//! Crashes with real processes on a SQLite file: runtime processes are SIGKILLed mid-turn,
//! mid-activity, around acks, after fetches and at random moments, then replaced; every orchestration
//! must still complete exactly once with its fault-free result, and no lock may have been handed out
//! twice within its lease (see `chaos_workload/crash_run.rs`).
//!
//! `DUROXIDE_CRASH_SEED=<n>` reruns one seed; `DUROXIDE_SOAK_SECS=<s>` runs random seeds with more
//! kills until the time is up.

#[path = "chaos_workload/mod.rs"]
mod workload;

use workload::store::Store;
use workload::Scale;

/// Seeds of the CI run.
const CI_SEEDS: [u64; 2] = [0xC4A5_0001, 0xC4A5_0002];

/// The entry point of the worker processes this test starts; does nothing in a normal test run.
#[test]
fn crash_worker_process() {
    workload::crash_run::worker_main();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_runtime_processes_finish_every_orchestration_exactly_once() {
    let scale = Scale {
        light: 4,
        fan_outs: 3,
        heavy: 2,
    };
    workload::crash_run::run(Store::sqlite_file, &CI_SEEDS, scale).await;
}
