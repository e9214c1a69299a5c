//! PostgreSQL connections cut mid-run: two runtimes (in this process, each on its own provider object)
//! run the mixed chaos workload while an admin connection keeps terminating their backends with
//! `pg_terminate_backend` — pooled connections idle or in the middle of a statement, and the LISTEN
//! connections. The runtimes must log, back off, reconnect and finish: every orchestration completes
//! with its fault-free result, no lock is held twice within a lease, and no connection loss is ever
//! reported as a permanent error.
//!
//! Only this test's connections are cut: the runtimes connect with an `application_name` of their
//! own, and the client (the test's starts, events and waits) and the admin connection use others.
//! Runs on a fresh schema of the server at `DUROXIDE_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped afterwards; without a reachable server the
//! test fails and says so. `DUROXIDE_CUT_SEED=<n>` runs another workload and cut schedule;
//! `DUROXIDE_CUT_LOG=<path>` writes the warnings the runtimes and the provider logged to a file.

#[path = "chaos_workload/mod.rs"]
mod workload;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duroxide_conformance::faults::{epoch_us, FaultConfig, FaultyProvider, SplitMix64, TurnMonitor};
use duroxide_runtime::{Client, Runtime, Status};
use tokio::sync::watch;
use workload::store::{pg_url, with_application_name, Store, DEFAULT_PG_URL};
use workload::{Effects, Kind, MemoryEffects, Scale, Spec};

const CI_SEED: u64 = 0xC07_0001;

/// 120 light orchestrations (chains, timers, events, retries, sessions), 3 fan-outs of 100, 2 parents
/// with children and 2 continue-as-new counters.
const SCALE: Scale = Scale {
    light: 24,
    fan_outs: 3,
    heavy: 2,
};

/// The run must finish well within this; reaching it means something hung or failed for good.
const PATIENCE: Duration = Duration::from_secs(120);

/// Shortest and longest pause between two cuts (a pacing of the fault, not a synchronisation).
const CUT_PAUSE_MS: (u64, u64) = (10, 100);

/// Pooled connections per runtime.
const POOL: usize = 6;

/// Collects the formatted log output of the whole test binary.
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// What the cutter did.
#[derive(Debug, Default, Clone, Copy)]
struct Cuts {
    /// Rounds of `pg_terminate_backend`.
    rounds: u64,
    /// Backends terminated in all.
    terminated: u64,
    /// Of those, backends that were running a statement at that moment.
    mid_statement: u64,
}

/// Terminates backends named `application_name` (never the admin connection itself) at random
/// intervals until `stop` says so: in some rounds all of them, in others only those running a statement.
async fn cut_until(
    admin: Arc<tokio_postgres::Client>,
    application_name: String,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) -> Cuts {
    let sql = "SELECT count(*) FILTER (WHERE terminated), count(*) FILTER (WHERE terminated AND active)
               FROM (SELECT state = 'active' AS active, pg_terminate_backend(pid) AS terminated
                     FROM pg_stat_activity
                     WHERE application_name = $1 AND pid <> pg_backend_pid()
                       AND (NOT $2 OR state = 'active')) AS cut";
    let mut rng = SplitMix64::new(seed ^ 0xC07);
    let mut cuts = Cuts::default();
    loop {
        let pause = CUT_PAUSE_MS.0 + rng.below(CUT_PAUSE_MS.1 - CUT_PAUSE_MS.0);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
            _ = stop.changed() => return cuts,
        }
        let only_active = rng.chance(0.5);
        let row = admin
            .query_one(sql, &[&application_name, &only_active])
            .await
            .unwrap_or_else(|e| panic!("the admin connection failed to cut connections: {e}"));
        cuts.rounds += 1;
        cuts.terminated += row.get::<_, i64>(0) as u64;
        cuts.mid_statement += row.get::<_, i64>(1) as u64;
    }
}

async fn backends_named(admin: &tokio_postgres::Client, application_name: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&application_name],
        )
        .await
        .expect("reading pg_stat_activity")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_reconnect_and_finish_every_orchestration_when_their_connections_are_cut() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("duroxide=warn"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this binary");

    let seed = workload::chaos_run::env_u64("DUROXIDE_CUT_SEED").unwrap_or(CI_SEED);
    let began = Instant::now();
    let store = Store::postgres();
    // Unique to this run: other tests on the same server never carry it.
    let victims = format!("dxcut_{}_{}", std::process::id(), epoch_us() % 1_000_000_000);
    let (admin, connection) = tokio_postgres::connect(
        &with_application_name(&pg_url(), "dxcut_admin"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap_or_else(|e| {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            reason.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        panic!(
            "this test needs a PostgreSQL server at DUROXIDE_PG_URL (default {DEFAULT_PG_URL}) where the user \
             may create schemas and terminate its own backends: {reason}"
        )
    });
    tokio::spawn(connection);
    let admin = Arc::new(admin);

    let monitor = TurnMonitor::new();
    let effects = Arc::new(MemoryEffects::default());
    let mut runtimes = Vec::new();
    for index in 0..2u64 {
        let provider = store.open_named(&victims, POOL).await;
        // A transparent wrapper: no injected faults, only the exclusive-turn monitor.
        let wrapped = FaultyProvider::new(provider, FaultConfig::none(), index).with_monitor(monitor.clone());
        let runtime = Runtime::start(
            Arc::new(wrapped),
            workload::activities(effects.clone()),
            workload::orchestrations(),
            workload::options(),
        )
        .await
        .expect("runtime starts");
        runtimes.push(runtime);
    }
    // The test's own client is never cut: its starts, events and waits must not fail.
    let client = Client::new(store.open().await);
    assert!(
        backends_named(&admin, &victims).await > 0,
        "the runtimes' connections do not show up under application_name {victims}"
    );

    let (stop, stopped) = watch::channel(false);
    let cutter = tokio::spawn(cut_until(admin.clone(), victims.clone(), seed, stopped));
    let specs = workload::generate(seed, SCALE, "cut");
    workload::drive(&client, &specs).await;
    workload::wait_all(&client, &specs, PATIENCE).await;
    let finished = began.elapsed();
    stop.send(true).expect("the cutter is running");
    let cuts = cutter.await.expect("the cutter task");

    let context = format!("connection cuts seed {seed:#x} ({cuts:?})");
    let verdict = workload::check(&client, &specs, &effects.counts(), None, &context).await;
    monitor.assert_clean();
    assert!(
        cuts.terminated > 0,
        "no cut hit a connection of the runtimes ({cuts:?}): the test proved nothing"
    );

    // Nothing a cut causes is permanent: every failure the runtimes and the provider logged must be
    // a transient one.
    let logs = capture.lines();
    if let Ok(path) = std::env::var("DUROXIDE_CUT_LOG") {
        std::fs::write(&path, logs.join("\n")).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    let permanent: Vec<&String> = logs.iter().filter(|l| l.contains("(Permanent)")).collect();
    assert!(
        permanent.is_empty(),
        "a lost connection was reported as a permanent error {} time(s), e.g.:\n  {}",
        permanent.len(),
        permanent
            .iter()
            .take(5)
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    let provider_errors: u64 = runtimes
        .iter()
        .map(|r| r.metrics_snapshot().provider_errors)
        .sum();
    let listener_reconnects = logs
        .iter()
        .filter(|l| l.contains("listener connection failed"))
        .count();
    assert!(
        provider_errors > 0,
        "the runtimes never saw a failed call although {} backends were cut ({cuts:?})",
        cuts.terminated
    );

    // The cuts are over and the runtimes are still sound: a new orchestration completes.
    let after = Spec {
        id: format!("cut-after-{seed}"),
        kind: Kind::Chain { n: 3, x: 7 },
    };
    client
        .start_orchestration(&after.id, after.orchestration(), &after.input())
        .await
        .expect("starting an orchestration after the cuts");
    let state = client
        .wait_for_orchestration(&after.id, PATIENCE)
        .await
        .expect("the orchestration started after the cuts ends");
    assert_eq!(
        (state.status, state.output.as_deref()),
        (Status::Completed, Some(after.expected().as_str())),
        "the orchestration started after the cuts: {state:?}"
    );

    eprintln!(
        "connection cuts seed {seed:#x}: ok — {} instances, {} activities ({} ran more than once), {} lock \
         hand-outs checked; {} cut rounds terminated {} backends ({} mid-statement); the runtimes counted {} \
         failed provider calls and logged {} warnings ({} listener reconnects); finished at {finished:.1?}",
        verdict.instances,
        verdict.activities,
        verdict.rerun_activities,
        monitor.handouts(),
        cuts.rounds,
        cuts.terminated,
        cuts.mid_statement,
        provider_errors,
        logs.len(),
        listener_reconnects
    );
    for runtime in runtimes {
        runtime.shutdown(Duration::from_secs(5)).await;
    }
}
