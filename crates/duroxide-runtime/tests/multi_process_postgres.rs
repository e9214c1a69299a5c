//! Three runtime processes on one PostgreSQL schema complete 1,000 orchestrations together while one
//! of them is SIGKILLed mid-run: the survivors take over its work once its leases expire, no instance
//! or worker item is ever held by two processes within a lease (cross-process lock journals), no
//! activity result is lost, and every orchestration completes exactly once with its fault-free result
//! (see `chaos_workload/fleet_run.rs`).
//!
//! Runs on a fresh schema of the server at `DUROXIDE_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped afterwards; without a reachable server the
//! test fails and says so. `DUROXIDE_FLEET_SEED=<n>` runs another workload.

#[path = "chaos_workload/mod.rs"]
mod workload;

use workload::fleet_run::Fleet;
use workload::store::Store;
use workload::Scale;

const CI_SEED: u64 = 0xF1EE_7001;

/// 1,000 root orchestrations: 4 fan-outs of 100, 3 parents (each with 2–4 child chains and a detached
/// chain) and 3 continue-as-new counters, and 198 each of chains, timer sequences, event and queue
/// waits, durable retries and session sequences.
const SCALE: Scale = Scale {
    light: 198,
    fan_outs: 4,
    heavy: 3,
};

/// The entry point of the worker processes this test starts; does nothing in a normal test run.
#[test]
fn crash_worker_process() {
    workload::crash_run::worker_main();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_finish_1000_orchestrations_on_postgres_when_one_is_sigkilled() {
    let seed = workload::chaos_run::env_u64("DUROXIDE_FLEET_SEED").unwrap_or(CI_SEED);
    let fleet = Fleet {
        processes: 3,
        victim: 2,
        kill_at: 0.35,
    };
    workload::fleet_run::run(Store::postgres(), seed, SCALE, fleet).await;
}
