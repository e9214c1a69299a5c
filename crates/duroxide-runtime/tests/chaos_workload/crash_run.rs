//! The crash run shared by the SQLite and PostgreSQL crash tests: runtime processes on one store are
//! SIGKILLed at chosen points (in the middle of a turn, of an activity, just before an ack, right
//! after an ack committed, after a fetch) and after random delays, then replaced; the oracle demands
//! that every orchestration of the mixed workload completes exactly once with its fault-free result,
//! and the journals of all processes show no instance or worker item handed out twice within a lease.
//!
//! The worker processes are the test executable run again with `DUROXIDE_CRASH_DIR` set, selecting
//! only `crash_worker_process` (which does nothing in a normal run). A worker announces reaching its
//! kill point on stdout and freezes there until the parent kills it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use duroxide_conformance::faults::{
    CallPhase, FaultConfig, FaultyProvider, HookAction, Op, SplitMix64, TurnMonitor,
};
use duroxide_core::provider::ActivityRef;
use duroxide_runtime::{Client, Runtime, RuntimeOptions};

use super::store::Store;
use super::{Effects, FileEffects, Scale, Spec};

const WORKER_ENV: &str = "DUROXIDE_CRASH_DIR";
const ROUND_ENV: &str = "DUROXIDE_CRASH_ROUND";
const POINT_ENV: &str = "DUROXIDE_CRASH_POINT";
const ANNOUNCE: &str = "DUROXIDE-CRASH-POINT";
/// What a worker prints once its runtime has started.
pub const READY: &str = "DUROXIDE-CRASH-READY";

/// The test each crash binary declares as the worker entry point (it calls [`worker_main`]).
const WORKER_TEST: &str = "crash_worker_process";
/// Kills per seed at most (fewer when the workload finishes first): every kill point once, then
/// random ones.
const CI_KILLS: usize = 14;
/// How long a worker may take to reach its kill point before the parent kills it anyway.
const POINT_PATIENCE: Duration = Duration::from_secs(8);
/// How long the last (unkilled) worker may take to finish everything.
const FINISH_PATIENCE: Duration = Duration::from_secs(90);

/// Where a worker freezes and is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// Orchestration code is running (after an await, outside replay), before its turn is acked.
    Turn,
    /// An activity recorded its side effect but has not returned.
    Activity,
    /// A turn's ack is about to reach the store.
    AckBefore,
    /// A turn's ack committed; the runtime has not seen the reply.
    AckAfter,
    /// An activity's completion committed; the runtime has not seen the reply.
    WorkAckAfter,
    /// A fetch locked an instance; the turn has not run.
    FetchAfter,
    /// Whatever the process is doing after a random delay.
    Random,
}

impl Point {
    const AT_POINTS: [Point; 6] = [
        Point::Turn,
        Point::Activity,
        Point::AckBefore,
        Point::AckAfter,
        Point::WorkAckAfter,
        Point::FetchAfter,
    ];

    fn name(self) -> &'static str {
        match self {
            Point::Turn => "turn",
            Point::Activity => "activity",
            Point::AckBefore => "ack-before",
            Point::AckAfter => "ack-after",
            Point::WorkAckAfter => "work-ack-after",
            Point::FetchAfter => "fetch-after",
            Point::Random => "random",
        }
    }

    fn parse(text: &str) -> Option<Point> {
        Point::AT_POINTS
            .into_iter()
            .chain([Point::Random])
            .find(|p| p.name() == text)
    }

    /// The provider call and phase this point freezes, if it is one.
    fn call(self) -> Option<(Op, CallPhase)> {
        match self {
            Point::AckBefore => Some((Op::AckOrchestrationItem, CallPhase::BeforeStore)),
            Point::AckAfter => Some((Op::AckOrchestrationItem, CallPhase::AfterCommit)),
            Point::WorkAckAfter => Some((Op::AckWorkItem, CallPhase::AfterCommit)),
            Point::FetchAfter => Some((Op::FetchOrchestrationItem, CallPhase::AfterCommit)),
            _ => None,
        }
    }
}

// ---- worker mode ------------------------------------------------------------------------------------

/// Says the kill point was reached, then never returns (the parent SIGKILLs the process).
fn announce_and_block(point: Point) -> ! {
    announce(&format!("{ANNOUNCE} {}", point.name()));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Counts occurrences and says when the `n`-th one is reached.
#[derive(Debug)]
struct Countdown(AtomicU64, u64);

impl Countdown {
    fn hit(&self) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst) + 1 == self.1
    }
}

/// File effects that freeze the process at the `n`-th activity execution, after recording it.
struct KillingEffects {
    inner: FileEffects,
    countdown: Option<Countdown>,
}

impl Effects for KillingEffects {
    fn record(&self, activity: &ActivityRef, name: &str) {
        self.inner.record(activity, name);
        if self.countdown.as_ref().is_some_and(Countdown::hit) {
            announce_and_block(Point::Activity);
        }
    }
    fn ids_of(&self, instance_id: &str, execution_id: u64, name: &str) -> Vec<u64> {
        self.inner.ids_of(instance_id, execution_id, name)
    }
    fn counts(&self) -> std::collections::HashMap<ActivityRef, u32> {
        self.inner.counts()
    }
}

/// The entry point of a worker process, called by each crash binary's `crash_worker_process` test. In
/// a normal test run (no `DUROXIDE_CRASH_DIR`) it does nothing.
pub fn worker_main() {
    let Ok(dir) = std::env::var(WORKER_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let spec = std::env::var(POINT_ENV).unwrap_or_default();
    let (point, n) = match spec.split_once(':') {
        Some((p, n)) => (Point::parse(p), n.parse::<u64>().unwrap()),
        None => (None, 0),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(worker(dir, round, point, n));
}

async fn worker(dir: PathBuf, round: u64, point: Option<Point>, n: u64) {
    // Activities that take a moment, so that random kills find some of them running.
    super::set_activity_latency(Duration::from_millis(20));
    let countdown = |p: Point| (point == Some(p)).then(|| Countdown(AtomicU64::new(0), n));
    if let Some(countdown) = countdown(Point::Turn) {
        super::set_turn_hook(move || {
            if countdown.hit() {
                announce_and_block(Point::Turn);
            }
        });
    }
    let call_countdown = point
        .and_then(Point::call)
        .map(|call| (call, Countdown(AtomicU64::new(0), n)));
    let hook = Arc::new(move |op: Op, phase: CallPhase| match &call_countdown {
        Some((call, countdown)) if *call == (op, phase) && countdown.hit() => {
            announce(&format!("{ANNOUNCE} {}", point.map_or("", Point::name)));
            HookAction::Freeze
        }
        _ => HookAction::Continue,
    });
    let journal = TurnMonitor::with_journal(&journal_path(&dir, round)).unwrap();
    let store = Store::from_worker_env().open().await;
    let provider = FaultyProvider::new(store, FaultConfig::none(), round)
        .with_monitor(journal)
        .with_hook(hook);
    let effects = Arc::new(KillingEffects {
        inner: FileEffects(effects_path(&dir)),
        countdown: countdown(Point::Activity),
    });
    let options = RuntimeOptions {
        orchestration_concurrency: 2,
        worker_concurrency: 4,
        ..super::options()
    };
    let _runtime = Runtime::start(
        Arc::new(provider),
        super::activities(effects),
        super::orchestrations(),
        options,
    )
    .await
    .expect("runtime starts");
    announce(READY);
    std::future::pending::<()>().await;
}

// ---- the parent -------------------------------------------------------------------------------------

/// The lock journal of worker `round` in the run directory `dir`.
pub fn journal_path(dir: &Path, round: u64) -> PathBuf {
    dir.join(format!("journal-{round}.log"))
}

/// The side-effect log all worker processes of a run append to.
pub fn effects_path(dir: &Path) -> PathBuf {
    dir.join("effects.log")
}

/// A worker process and the lines it prints.
pub struct WorkerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far: a kill point may be announced before the worker says it is ready.
    seen: Vec<String>,
}

impl WorkerProcess {
    /// A worker with no kill point: it runs until it is killed.
    pub fn spawn_plain(store: &Store, dir: &Path, round: u64) -> WorkerProcess {
        WorkerProcess::spawn(store, dir, round, None)
    }

    fn spawn(store: &Store, dir: &Path, round: u64, point: Option<(Point, u64)>) -> WorkerProcess {
        let exe = std::env::current_exe().expect("the test executable");
        let mut command = Command::new(exe);
        let (store_var, store_value) = store.worker_env();
        command
            .args([WORKER_TEST, "--exact", "--nocapture", "--test-threads", "1"])
            .env(WORKER_ENV, dir)
            .env(store_var, store_value)
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((point, n)) = point {
            command.env(POINT_ENV, format!("{}:{n}", point.name()));
        }
        let mut child = command.spawn().expect("the worker process starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        WorkerProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line containing `prefix` (or finds one read earlier); `false` on timeout. Panics if the worker died.
    pub fn wait_for(&mut self, prefix: &str, patience: Duration) -> bool {
        if self.seen.iter().any(|line| line.contains(prefix)) {
            return true;
        }
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::task::block_in_place(|| self.lines.recv_timeout(left)) {
                // libtest prints "test crash_worker_process ... " without a newline first, so search the line.
                Ok(line) => {
                    let found = line.contains(prefix);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the worker process exited on its own before printing {prefix}")
                }
            }
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub fn kill(self) {
        // Dropping does it.
    }
}

impl Drop for WorkerProcess {
    /// A failing test must not leave workers behind, so the kill happens on every way out.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a seed's run did.
#[derive(Debug, Default)]
pub struct Kills {
    /// The store the kills were on.
    label: &'static str,
    /// Kills at an announced point, per point name.
    at_point: std::collections::BTreeMap<&'static str, u64>,
    /// Kills after a random delay, or at a point the worker did not reach in time.
    random: u64,
}

async fn all_ended(client: &Client, specs: &[Spec]) -> bool {
    for spec in specs {
        let ids = std::iter::once(spec.id.clone()).chain(spec.detached().into_iter().map(|(id, _)| id));
        for id in ids {
            match client.get_status(&id).await {
                Ok(state) if state.status.is_terminal() => {}
                _ => return false,
            }
        }
    }
    true
}

/// One seed on a fresh store: kill workers, then let a last one finish, then judge.
pub async fn run_seed(store: Store, seed: u64, kills: usize, scale: Scale, total: &mut Kills) {
    let label = store.name();
    eprintln!("crash {label} seed {seed:#x}: up to {kills} kills");
    // Effects and lock journals of all worker processes.
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(store.open().await);
    let specs = super::generate(seed, scale, "crash");
    super::drive(&client, &specs).await;

    let mut rng = SplitMix64::new(seed);
    let mut kills_done = Kills::default();
    let mut round = 0u64;
    for k in 0..kills {
        if all_ended(&client, &specs).await {
            break;
        }
        // Every kill point once (in a seed-chosen order) while there is plenty of work to reach them,
        // then random ones.
        let point = if k < Point::AT_POINTS.len() {
            let offset = (seed as usize) % Point::AT_POINTS.len();
            Point::AT_POINTS[(k + offset) % Point::AT_POINTS.len()]
        } else {
            Point::Random
        };
        let nth = 1 + rng.below(8);
        round += 1;
        let mut worker = WorkerProcess::spawn(
            &store,
            dir.path(),
            round,
            (point != Point::Random).then_some((point, nth)),
        );
        assert!(
            worker.wait_for(READY, POINT_PATIENCE),
            "worker {round} did not start"
        );
        let reached = if point == Point::Random {
            let delay = Duration::from_millis(50 + rng.below(600));
            tokio::time::sleep(delay).await;
            false
        } else {
            worker.wait_for(ANNOUNCE, POINT_PATIENCE)
        };
        worker.kill();
        if reached {
            *kills_done.at_point.entry(point.name()).or_insert(0) += 1;
        } else {
            kills_done.random += 1;
        }
    }

    // A last worker that nobody kills finishes whatever is left.
    round += 1;
    let mut last = WorkerProcess::spawn(&store, dir.path(), round, None);
    assert!(
        last.wait_for(READY, POINT_PATIENCE),
        "the last worker did not start"
    );
    super::wait_all(&client, &specs, FINISH_PATIENCE).await;
    last.kill();

    let effects = FileEffects(effects_path(dir.path())).counts();
    let context = format!("crash {label} seed {seed:#x} ({kills_done:?})");
    let verdict = super::check(&client, &specs, &effects, None, &context).await;
    let journals: Vec<PathBuf> = (1..=round).map(|r| journal_path(dir.path(), r)).collect();
    let monitor = TurnMonitor::from_journals(&journals).expect("journals read");
    monitor.assert_clean();
    eprintln!(
        "crash {label} seed {seed:#x}: ok — {} processes, kills at points {:?} and {} random; {} instances, {} activities \
         ({} ran more than once), {} lock hand-outs checked across processes",
        round,
        kills_done.at_point,
        kills_done.random,
        verdict.instances,
        verdict.activities,
        verdict.rerun_activities,
        monitor.handouts()
    );
    for (point, n) in kills_done.at_point {
        *total.at_point.entry(point).or_insert(0) += n;
    }
    total.random += kills_done.random;
    total.label = label;
}

/// The whole test: the CI seeds, one seed from `DUROXIDE_CRASH_SEED`, or (with `DUROXIDE_SOAK_SECS`)
/// random seeds with more kills until the time is up. Prints a summary.
pub async fn run(new_store: fn() -> Store, ci_seeds: &[u64], scale: Scale) {
    let mut total = Kills::default();
    if let Some(secs) = super::chaos_run::env_u64("DUROXIDE_SOAK_SECS") {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut seeds = SplitMix64::new(super::chaos_run::entropy());
        while Instant::now() < deadline {
            run_seed(new_store(), seeds.next_u64(), 16, scale, &mut total).await;
        }
    } else if let Some(seed) = super::chaos_run::env_u64("DUROXIDE_CRASH_SEED") {
        run_seed(new_store(), seed, CI_KILLS, scale, &mut total).await;
    } else {
        for &seed in ci_seeds {
            run_seed(new_store(), seed, CI_KILLS, scale, &mut total).await;
        }
    }
    let at_points: u64 = total.at_point.values().sum();
    eprintln!(
        "crash ({}) summary: {} SIGKILLs survived ({at_points} at chosen points {:?}, {} random)",
        total.label,
        at_points + total.random,
        total.at_point,
        total.random
    );
}
