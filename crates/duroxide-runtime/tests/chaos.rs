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
