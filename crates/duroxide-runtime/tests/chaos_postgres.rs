//! Chaos on PostgreSQL: the same run as `chaos.rs` (two runtimes with their own provider objects and
//! seeded fault injectors, one monitor, the mixed workload and its oracle) on a fresh schema of the
//! server at `DUROXIDE_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped
//! afterwards. Without a reachable server the test fails and says so.
//!
//! `DUROXIDE_CHAOS_SEED` and `DUROXIDE_SOAK_SECS` work as in `chaos.rs`.

#[path = "chaos_workload/mod.rs"]
mod workload;

use workload::store::Store;
use workload::Scale;

/// Seeds CI runs on PostgreSQL (different from the SQLite ones, so together they cover more).
const CI_SEEDS: [u64; 2] = [0x5EED_1001, 0x5EED_1002];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_survives_injected_faults_on_postgres() {
    let scale = Scale {
        light: 2,
        fan_outs: 2,
        heavy: 1,
    };
    workload::chaos_run::run(Store::postgres, &CI_SEEDS, scale).await;
}
