//! The chaos run shared by the SQLite and PostgreSQL chaos tests: two runtimes, each on its own
//! provider object behind its own seeded fault injector, one exclusive-turn monitor over both, the
//! mixed workload, and the oracle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide_conformance::faults::{FaultConfig, FaultStats, FaultyProvider, SplitMix64, TurnMonitor};
use duroxide_runtime::{Client, Runtime};

use super::store::Store;
use super::{Effects, MemoryEffects, Scale};

/// A seed's run must finish well within this; reaching it means something hung or was lost.
const PATIENCE: Duration = Duration::from_secs(90);

/// What the runs of one test amounted to.
#[derive(Debug, Default)]
pub struct Totals {
    /// The store the runs were on.
    pub label: &'static str,
    pub seeds: u64,
    pub faults: FaultStats,
    pub handouts: u64,
    pub instances: usize,
    pub activities: usize,
    pub reruns: usize,
    /// Activities the runtimes ran inline (no work item).
    pub inline: u64,
}

/// The fault mix of a seed: the moderate mix, scaled by a seed-chosen factor between 0.5 and 2.
pub fn fault_config(seed: u64) -> FaultConfig {
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

/// One seed on a fresh store.
pub async fn run_seed(store: Store, seed: u64, scale: Scale, totals: &mut Totals) {
    let config = fault_config(seed);
    let label = store.name();
    eprintln!("chaos {label} seed {seed:#x}: {config:?}");
    let monitor = TurnMonitor::new();
    let effects = Arc::new(MemoryEffects::default());

    // Two runtimes, each on its own provider object (as two processes would be), each behind its own
    // injector; one monitor sees both.
    let mut faulty = Vec::new();
    let mut runtimes = Vec::new();
    for index in 0..2u64 {
        let wrapper = Arc::new(
            FaultyProvider::new(store.open().await, config.clone(), seed.wrapping_add(index))
                .with_monitor(monitor.clone()),
        );
        let runtime = Runtime::start(
            wrapper.clone(),
            super::activities(effects.clone()),
            super::orchestrations(),
            super::options(),
        )
        .await
        .expect("runtime starts");
        faulty.push(wrapper);
        runtimes.push(runtime);
    }
    // The client talks to the store directly: the test's own starts and events must happen exactly once.
    let client = Client::new(store.open().await);
    let specs = super::generate(seed, scale, "chaos");
    super::drive(&client, &specs).await;
    super::wait_all(&client, &specs, PATIENCE).await;

    let stats = faulty
        .iter()
        .fold(FaultStats::default(), |acc, f| acc.merged(&f.stats()));
    let touched = faulty.iter().flat_map(|f| f.touched_activities()).collect();
    let context = format!("chaos {label} seed {seed:#x} ({stats})");
    let verdict = super::check(&client, &specs, &effects.counts(), Some(&touched), &context).await;
    monitor.assert_clean();
    let inline: u64 = runtimes
        .iter()
        .map(|r| r.metrics_snapshot().activity_inline_runs)
        .sum();
    eprintln!(
        "chaos {label} seed {seed:#x}: ok — {} instances, {} activities ({} re-ran after faults, {inline} \
         ran inline), {} lock hand-outs; faults: {stats}",
        verdict.instances,
        verdict.activities,
        verdict.rerun_activities,
        monitor.handouts()
    );
    for runtime in runtimes {
        runtime.shutdown(Duration::from_secs(5)).await;
    }
    totals.label = label;
    totals.seeds += 1;
    totals.faults = std::mem::take(&mut totals.faults).merged(&stats);
    totals.handouts += monitor.handouts();
    totals.instances += verdict.instances;
    totals.activities += verdict.activities;
    totals.reruns += verdict.rerun_activities;
    totals.inline += inline;
}

pub fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={text:?}: {e}")))
}

/// A seed source for soak runs that differs from run to run (time and process id).
pub fn entropy() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// The whole test: the CI seeds, one seed from `DUROXIDE_CHAOS_SEED`, or (with `DUROXIDE_SOAK_SECS`)
/// fresh random seeds at a larger scale until the time is up. Prints a summary.
pub async fn run(new_store: fn() -> Store, ci_seeds: &[u64], scale: Scale) {
    let mut totals = Totals::default();
    if let Some(secs) = env_u64("DUROXIDE_SOAK_SECS") {
        let soak = Scale {
            light: 4,
            fan_outs: 3,
            heavy: 2,
        };
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seeds = SplitMix64::new(entropy());
        while Instant::now() < deadline {
            run_seed(new_store(), seeds.next_u64(), soak, &mut totals).await;
        }
    } else if let Some(seed) = env_u64("DUROXIDE_CHAOS_SEED") {
        run_seed(new_store(), seed, scale, &mut totals).await;
    } else {
        for &seed in ci_seeds {
            run_seed(new_store(), seed, scale, &mut totals).await;
        }
    }
    eprintln!(
        "chaos ({}) summary: {} seeds, {} instances, {} activities ({} re-ran, {} ran inline), {} lock \
         hand-outs checked; faults injected and survived: {}",
        totals.label,
        totals.seeds,
        totals.instances,
        totals.activities,
        totals.reruns,
        totals.inline,
        totals.handouts,
        totals.faults
    );
}
