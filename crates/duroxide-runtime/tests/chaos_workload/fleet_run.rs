//! The fleet run: several runtime processes (the crash workers of `crash_run.rs`, without a kill
//! point) share one store and work through a large workload together; one of them is SIGKILLed once a
//! good part of the work is done, and the others must finish what it held once its leases run out.
//! So that the kill lands while the victim holds locks, it is frozen (SIGSTOP) and its lock journal
//! read first; holding nothing, it is resumed and looked at again a moment later.
//!
//! Judged by the oracle (every orchestration completed exactly once with its fault-free result, every
//! scheduled activity ran and completed once in history), by the merged lock journals of all processes
//! (no instance or worker item held by two processes within a lease), and by the killed process's own
//! journal: it died holding locks, and every one of them was taken over by a survivor.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use duroxide_conformance::faults::{epoch_us, TurnMonitor};
use duroxide_runtime::Client;

use super::crash_run::{effects_path, journal_path, WorkerProcess, READY};
use super::store::Store;
use super::{Effects, FileEffects, Scale, Spec};

/// How long a worker process may take to start.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// How long the fleet may take to reach the kill threshold, and the survivors to finish after it.
const PROGRESS_PATIENCE: Duration = Duration::from_secs(120);
/// An unreleased hand-out younger than this is a lock its process still holds: the run's shortest
/// lease is one second, so nobody else can have taken it over yet.
const HELD: Duration = Duration::from_millis(500);
/// How often progress is sampled while waiting for the kill threshold.
const PROGRESS_POLL: Duration = Duration::from_millis(50);
/// How long the victim runs between two looks at what it holds.
const HOLD_POLL: Duration = Duration::from_millis(5);

/// How a fleet run is set up.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    /// Runtime processes sharing the store.
    pub processes: u64,
    /// The process (1-based) that is SIGKILLed.
    pub victim: u64,
    /// The share of all instances that must have completed before the kill.
    pub kill_at: f64,
}

/// One hand-out read back from a lock journal.
#[derive(Debug, Clone)]
struct Handout {
    resource: String,
    token: String,
    /// When the fetch returned (epoch µs).
    fetched_us: u64,
}

/// A process's journal: its hand-outs, and the tokens whose release (ack or abandon) it began.
#[derive(Debug, Default)]
struct Journal {
    handouts: Vec<Handout>,
    releases_begun: HashSet<String>,
}

impl Journal {
    /// Reads a whole journal.
    fn read(path: &Path) -> Journal {
        let mut journal = Journal::default();
        journal.add(&std::fs::read_to_string(path).unwrap_or_default());
        journal
    }

    /// Takes in the journal lines this run needs (see `TurnRecord` in duroxide-conformance's
    /// `faults.rs` for the format: tab-separated, strings hex-encoded). A torn line is skipped.
    fn add(&mut self, text: &str) {
        let journal = self;
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            match f[..] {
                ["F", resource, token, _start, end, _lease] => {
                    if let (Some(resource), Some(token), Ok(fetched_us)) =
                        (unhex(resource), unhex(token), end.parse())
                    {
                        journal.handouts.push(Handout {
                            resource,
                            token,
                            fetched_us,
                        });
                    }
                }
                ["B", token, _at] => {
                    if let Some(token) = unhex(token) {
                        journal.releases_begun.insert(token);
                    }
                }
                _ => {}
            }
        }
    }

    /// Hand-outs whose release never began: locks the process still held (as far as it had written).
    fn open_holds(&self) -> Vec<&Handout> {
        self.handouts
            .iter()
            .filter(|h| !self.releases_begun.contains(&h.token))
            .collect()
    }
}

/// A journal being written by a live process, read as it grows (whole lines only), so that checking
/// what the process holds right now costs only the new lines.
#[derive(Debug)]
struct JournalTail {
    path: std::path::PathBuf,
    offset: u64,
    journal: Journal,
}

impl JournalTail {
    fn new(path: std::path::PathBuf) -> JournalTail {
        JournalTail {
            path,
            offset: 0,
            journal: Journal::default(),
        }
    }

    /// Reads the lines completed since the last call.
    fn refresh(&mut self) -> &Journal {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            if file.seek(SeekFrom::Start(self.offset)).is_ok() {
                let _ = file.read_to_end(&mut bytes);
            }
        }
        if let Some(end) = bytes.iter().rposition(|&b| b == b'\n') {
            self.journal.add(&String::from_utf8_lossy(&bytes[..=end]));
            self.offset += end as u64 + 1;
        }
        &self.journal
    }
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Sends `signal` (a name such as `STOP`) to the process `pid`, one this run started.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("the kill command runs");
    assert!(status.success(), "kill -{signal} {pid} failed: {status}");
}

/// Waits until every thread of `pid` is stopped (state `T` in `/proc`), so it writes nothing more.
async fn await_stopped(pid: u32) {
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the victim's threads");
        let all_stopped = tasks.flatten().all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // `pid (name) state ...`: the state follows the last parenthesis.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.trim_start().chars().next());
            matches!(state, Some('T' | 't'))
        });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn completed_instances(client: &Client) -> u64 {
    client
        .get_system_metrics()
        .await
        .expect("system metrics")
        .completed_instances
}

/// The whole run on a fresh store: start the fleet, drive the workload, kill the victim at the
/// threshold, let the survivors finish, then judge.
pub async fn run(store: Store, seed: u64, scale: Scale, fleet: Fleet) {
    let label = store.name();
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(store.open().await);
    let specs = super::generate(seed, scale, "fleet");
    let instances: u64 = specs.iter().map(Spec::instance_count).sum::<usize>() as u64;
    eprintln!(
        "fleet {label} seed {seed:#x}: {} processes, {} orchestrations ({instances} instances with children)",
        fleet.processes,
        specs.len()
    );

    let mut workers: HashMap<u64, WorkerProcess> = HashMap::new();
    for round in 1..=fleet.processes {
        workers.insert(round, WorkerProcess::spawn_plain(&store, dir.path(), round));
    }
    for (round, worker) in &mut workers {
        assert!(
            worker.wait_for(READY, START_PATIENCE),
            "worker process {round} did not start"
        );
    }
    // Four clients start the workload in parallel (one would take about as long as the whole run),
    // while the fleet is already working through it.
    let chunk = specs.len().div_ceil(4);
    let drivers: Vec<_> = specs
        .chunks(chunk)
        .map(|part| {
            let client = Client::new(client.provider().clone());
            let part = part.to_vec();
            tokio::spawn(async move { super::drive(&client, &part).await })
        })
        .collect();

    // The kill: once enough has completed, at a moment the victim's journal shows it running an
    // activity (so it dies holding that lease).
    let threshold = (instances as f64 * fleet.kill_at).ceil() as u64;
    let deadline = Instant::now() + PROGRESS_PATIENCE;
    loop {
        let done = completed_instances(&client).await;
        if done >= threshold {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet completed {done} of {instances} instances within {PROGRESS_PATIENCE:?}; the kill waits \
             for {threshold}"
        );
        tokio::time::sleep(PROGRESS_POLL).await;
    }
    // The victim is frozen (SIGSTOP) before its journal is read, so what the journal shows is what it
    // holds when the SIGKILL lands; while it holds nothing it is let go (SIGCONT) and tried again.
    let victim_pid = workers[&fleet.victim].id();
    let mut victim_journal = JournalTail::new(journal_path(dir.path(), fleet.victim));
    let kill_us = loop {
        signal(victim_pid, "STOP");
        await_stopped(victim_pid).await;
        let stopped_us = epoch_us();
        let holding = victim_journal
            .refresh()
            .open_holds()
            .iter()
            .any(|h| stopped_us.saturating_sub(h.fetched_us) < HELD.as_micros() as u64);
        if holding {
            break stopped_us;
        }
        signal(victim_pid, "CONT");
        assert!(
            Instant::now() < deadline,
            "the victim was never found holding a lock after the kill threshold"
        );
        tokio::time::sleep(HOLD_POLL).await;
    };
    workers
        .remove(&fleet.victim)
        .expect("the victim is a worker")
        .kill();
    let killed_at = began.elapsed();
    let done_at_kill = completed_instances(&client).await;
    assert!(
        done_at_kill < instances,
        "everything had completed by the time the victim was killed; the kill proves nothing"
    );
    eprintln!(
        "fleet {label}: SIGKILLed process {} at {killed_at:.1?}; {done_at_kill} of {instances} instances had \
         completed",
        fleet.victim
    );

    for driver in drivers {
        driver.await.expect("starting the workload");
    }
    let driven = began.elapsed();
    super::wait_all(&client, &specs, PROGRESS_PATIENCE).await;
    let finished = began.elapsed();
    for (_, worker) in workers.drain() {
        worker.kill();
    }

    // The oracle: results, histories, and every scheduled activity ran (re-runs are allowed, since a
    // killed process may have run an activity whose completion it never acked).
    let effects = FileEffects(effects_path(dir.path())).counts();
    let context = format!("fleet {label} seed {seed:#x}");
    let verdict = super::check(&client, &specs, &effects, None, &context).await;

    // No lock held twice within a lease, across all processes.
    let journals: Vec<_> = (1..=fleet.processes)
        .map(|r| journal_path(dir.path(), r))
        .collect();
    let monitor = TurnMonitor::from_journals(&journals).expect("journals read");
    monitor.assert_clean();

    // Every process took part; the victim died holding locks, and survivors took each one over.
    let per_process: Vec<Journal> = journals.iter().map(|p| Journal::read(p)).collect();
    for (index, journal) in per_process.iter().enumerate() {
        assert!(
            !journal.handouts.is_empty(),
            "process {} never fetched anything",
            index + 1
        );
    }
    // A hand-out the victim never began to release is one it still held when it died, unless the
    // resource was handed out again before the kill (its lease had run out, e.g. after a failed renewal).
    let all: Vec<&Handout> = per_process.iter().flat_map(|j| &j.handouts).collect();
    let victim = &per_process[(fleet.victim - 1) as usize];
    let orphans: Vec<&Handout> = victim
        .open_holds()
        .into_iter()
        .filter(|o| {
            !all.iter()
                .any(|h| h.resource == o.resource && h.fetched_us > o.fetched_us && h.fetched_us < kill_us)
        })
        .collect();
    assert!(
        !orphans.is_empty(),
        "the victim's journal shows no lock held when it was killed"
    );
    let mut takeover_ms = Vec::new();
    for orphan in &orphans {
        let taken = per_process
            .iter()
            .enumerate()
            .filter(|(index, _)| *index as u64 + 1 != fleet.victim)
            .flat_map(|(_, journal)| &journal.handouts)
            .filter(|h| h.resource == orphan.resource && h.fetched_us > orphan.fetched_us)
            .map(|h| h.fetched_us)
            .min();
        match taken {
            Some(at) => takeover_ms.push(at.saturating_sub(kill_us) / 1000),
            None => panic!(
                "{}: held by the killed process (lock {}) and never fetched by a survivor",
                orphan.resource, orphan.token
            ),
        }
    }
    takeover_ms.sort_unstable();
    let handouts: Vec<usize> = per_process.iter().map(|j| j.handouts.len()).collect();
    eprintln!(
        "fleet {label} seed {seed:#x}: ok — {} instances, {} activities ({} ran more than once); lock hand-outs per \
         process {handouts:?}, {} checked across processes; the killed process held {} lock(s) ({}), taken over \
         {:?} ms after the kill; killed at {killed_at:.1?}, all started by {driven:.1?}, finished at {finished:.1?}, \
         judged at {:.1?}",
        verdict.instances,
        verdict.activities,
        verdict.rerun_activities,
        monitor.handouts(),
        orphans.len(),
        orphans
            .iter()
            .map(|o| o.resource.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        takeover_ms,
        began.elapsed()
    );
}
