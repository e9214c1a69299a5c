//! Chaos: the mixed workload runs on two runtimes sharing a SQLite file while a seeded fault injector
//! fails, delays and loses the replies of their provider calls; the oracle then demands exactly the
//! fault-free results, no lost completion, no overlapping turns, and a side-effect count of 1 for
//! every activity no fault touched.
//!
//! CI runs a fixed set of seeds. `DUROXIDE_CHAOS_SEED=<n>` reruns one seed; `DUROXIDE_SOAK_SECS=<s>`
//! (what `cargo xtask soak` sets) runs fresh random seeds until that many seconds have passed. Every
//! seed is printed, so a failure names the seed that reproduces it.

#[path = "chaos_workload/mod.rs"]
mod workload;

use std::sync::Arc;
use std::time::Duration;

use duroxide_conformance::faults::{FaultConfig, FaultStats, FaultyProvider, SplitMix64, TurnMonitor};
use duroxide_core::Provider;
use duroxide_runtime::{Client, Runtime};
use duroxide_sqlite::SqliteProvider;
use workload::{Effects, MemoryEffects, Scale};

/// Seeds CI runs: each a different workload and fault schedule.
const CI_SEEDS: [u64; 3] = [0x5EED_0001, 0x5EED_0002, 0x5EED_0003];

/// A seed's run must finish well within this; reaching it means something hung or was lost.
const PATIENCE: Duration = Duration::from_secs(90);

/// What one seed's run amounted to.
#[derive(Debug, Default)]
struct Totals {
    seeds: u64,
    faults: FaultStats,
    handouts: u64,
    instances: usize,
    activities: usize,
    reruns: usize,
}

/// The fault mix of a seed: the moderate mix, scaled by a seed-chosen factor between 0.5 and 2.
fn fault_config(seed: u64) -> FaultConfig {
    let factor = 0.5 + SplitMix64::new(seed ^ 0xFA17).unit() * 1.5;
    let base = FaultConfig::moderate();
    FaultConfig {
        retryable_rate: base.retryable_rate * factor,
        permanent_rate: base.permanent_rate * factor,
        lost_reply_rate: base.lost_reply_rate * factor,
        delay_rate: base.delay_rate * factor,
        ..base
    }
}

async fn run_seed(seed: u64, scale: Scale, totals: &mut Totals) {
    let config = fault_config(seed);
    eprintln!("chaos seed {seed:#x}: {config:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chaos.db");
    let open = || -> Arc<dyn Provider> { Arc::new(SqliteProvider::open(&path).expect("SQLite file opens")) };
    let monitor = TurnMonitor::new();
    let effects = Arc::new(MemoryEffects::default());

    // Two runtimes, each on its own provider object (as two processes would be), each behind its own
    // injector; one monitor sees both.
    let mut faulty = Vec::new();
    let mut runtimes = Vec::new();
    for index in 0..2u64 {
        let wrapper = Arc::new(
            FaultyProvider::new(open(), config.clone(), seed.wrapping_add(index))
                .with_monitor(monitor.clone()),
        );
        let runtime = Runtime::start(
            wrapper.clone(),
            workload::activities(effects.clone()),
            workload::orchestrations(),
            workload::options(),
        )
        .await
        .expect("runtime starts");
        faulty.push(wrapper);
        runtimes.push(runtime);
    }
    // The client talks to the store directly: the test's own starts and events must happen exactly once.
    let client = Client::new(open());
    let specs = workload::generate(seed, scale, "chaos");
    workload::drive(&client, &specs).await;
    workload::wait_all(&client, &specs, PATIENCE).await;

    let stats = faulty
        .iter()
        .fold(FaultStats::default(), |acc, f| acc.merged(&f.stats()));
    let touched = faulty.iter().flat_map(|f| f.touched_activities()).collect();
    let context = format!("chaos seed {seed:#x} ({stats})");
    let verdict = workload::check(&client, &specs, &effects.counts(), Some(&touched), &context).await;
    monitor.assert_clean();
    eprintln!(
        "chaos seed {seed:#x}: ok — {} instances, {} activities ({} re-ran after faults), {} lock hand-outs; faults: {stats}",
        verdict.instances,
        verdict.activities,
        verdict.rerun_activities,
        monitor.handouts()
    );
    for runtime in runtimes {
        runtime.shutdown(Duration::from_secs(5)).await;
    }
    totals.seeds += 1;
    totals.faults = std::mem::take(&mut totals.faults).merged(&stats);
    totals.handouts += monitor.handouts();
    totals.instances += verdict.instances;
    totals.activities += verdict.activities;
    totals.reruns += verdict.rerun_activities;
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text:?}: {e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_survives_injected_faults_on_a_sqlite_file() {
    let scale = Scale {
        light: 2,
        fan_outs: 2,
        heavy: 1,
    };
    let mut totals = Totals::default();
    if let Some(secs) = env_u64("DUROXIDE_SOAK_SECS") {
        // Soak: fresh seeds (printed before each run) until the time is up, at a larger scale.
        let soak = Scale {
            light: 4,
            fan_outs: 3,
            heavy: 2,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        let mut seeds = SplitMix64::new(workload_entropy());
        while std::time::Instant::now() < deadline {
            run_seed(seeds.next_u64(), soak, &mut totals).await;
        }
    } else if let Some(seed) = env_u64("DUROXIDE_CHAOS_SEED") {
        run_seed(seed, scale, &mut totals).await;
    } else {
        for seed in CI_SEEDS {
            run_seed(seed, scale, &mut totals).await;
        }
    }
    eprintln!(
        "chaos (SQLite file) summary: {} seeds, {} instances, {} activities ({} re-ran), {} lock hand-outs checked; \
         faults injected and survived: {}",
        totals.seeds, totals.instances, totals.activities, totals.reruns, totals.handouts, totals.faults
    );
}

/// A seed source for soak runs that differs from run to run (time and process id).
fn workload_entropy() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
