//! The mixed workload of the chaos and crash tests, with the oracle that judges a run.
//!
//! A seed generates a list of instances (chains, fan-outs of 100, timers with a select, external
//! events and queue messages, sub-orchestrations with a detached start, continue-as-new with carried
//! queue messages, KV and custom status, durable retries, sessions). Every orchestration's result is a
//! pure function of its input, so the oracle knows the fault-free result without running anything.
//! Activities record each execution in an [`Effects`] sink (in memory, or an append-only file when
//! processes are killed), which is how the oracle counts side effects per activity.
#![allow(dead_code)] // the chaos and crash binaries each use their own subset

pub mod chaos_run;
pub mod crash_run;
pub mod fleet_run;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use duroxide_conformance::faults::SplitMix64;
use duroxide_core::provider::ActivityRef;
use duroxide_core::{codec, Backoff, EventKind, OrchestrationContext, OrchestrationRegistry, RetryPolicy};
use duroxide_runtime::{ActivityContext, ActivityRegistry, Client, RuntimeOptions, Status};
use tokio::time::Instant;

// ---- side effects -----------------------------------------------------------------------------------

/// Where activities record that they ran. Keyed by the activity's identity (instance, execution,
/// scheduling event id), which is unique per scheduling.
pub trait Effects: Send + Sync + 'static {
    fn record(&self, activity: &ActivityRef, name: &str);
    /// Distinct activity ids of `name` recorded for this execution, ascending.
    fn ids_of(&self, instance_id: &str, execution_id: u64, name: &str) -> Vec<u64>;
    /// Executions per activity.
    fn counts(&self) -> HashMap<ActivityRef, u32>;
}

/// Effects of one process, in memory.
#[derive(Debug, Default)]
pub struct MemoryEffects(Mutex<HashMap<ActivityRef, (String, u32)>>);

impl Effects for MemoryEffects {
    fn record(&self, activity: &ActivityRef, name: &str) {
        let mut map = self.0.lock().unwrap();
        map.entry(activity.clone()).or_insert((name.to_string(), 0)).1 += 1;
    }

    fn ids_of(&self, instance_id: &str, execution_id: u64, name: &str) -> Vec<u64> {
        let map = self.0.lock().unwrap();
        let mut ids: Vec<u64> = map
            .iter()
            .filter(|(a, (n, _))| a.instance_id == instance_id && a.execution_id == execution_id && n == name)
            .map(|(a, _)| a.event_id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn counts(&self) -> HashMap<ActivityRef, u32> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(a, (_, c))| (a.clone(), *c))
            .collect()
    }
}

/// Effects shared by processes through an append-only file: one line per execution, written with a
/// single `write` so a killed process leaves whole lines (a torn last line is ignored).
#[derive(Debug, Clone)]
pub struct FileEffects(pub PathBuf);

impl FileEffects {
    fn lines(&self) -> Vec<(ActivityRef, String)> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                if f.len() != 5 || f[4] != "." {
                    return None;
                }
                let activity = ActivityRef {
                    instance_id: f[0].to_string(),
                    execution_id: f[1].parse().ok()?,
                    event_id: f[2].parse().ok()?,
                };
                Some((activity, f[3].to_string()))
            })
            .collect()
    }
}

impl Effects for FileEffects {
    fn record(&self, activity: &ActivityRef, name: &str) {
        let line = format!(
            "{}\t{}\t{}\t{name}\t.\n",
            activity.instance_id, activity.execution_id, activity.event_id
        );
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0)
            .expect("effects file opens");
        file.write_all(line.as_bytes()).expect("effects file is writable");
    }

    fn ids_of(&self, instance_id: &str, execution_id: u64, name: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .lines()
            .into_iter()
            .filter(|(a, n)| a.instance_id == instance_id && a.execution_id == execution_id && n == name)
            .map(|(a, _)| a.event_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn counts(&self) -> HashMap<ActivityRef, u32> {
        let mut counts = HashMap::new();
        for (activity, _) in self.lines() {
            *counts.entry(activity).or_insert(0) += 1;
        }
        counts
    }
}

// ---- the workload -----------------------------------------------------------------------------------

/// One root instance of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `n` sequential `Add` activities starting from `x`.
    Chain { n: u64, x: u64 },
    /// `n` parallel `Square` activities of `base..base + n`, joined.
    FanOut { n: u64, base: u64 },
    /// `k` sequential timers, then an activity raced against a long timer.
    Timers { k: u64 },
    /// Two external events (one likely raised before the wait) and `m` queue messages.
    Events { m: u64 },
    /// `k` child chains joined, plus one detached chain.
    Parent { k: u64 },
    /// Continue-as-new until `n`, keeping a KV counter and custom status; then reads `q` queue
    /// messages sent while earlier executions ran (carried across continue-as-new).
    Counter { n: u64, q: u64 },
    /// A durable retry of an activity that fails its first two attempts.
    Retry,
    /// `k` sequential activities on one session.
    Session { k: u64 },
}

/// A root instance: its id and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub id: String,
    pub kind: Kind,
}

impl Spec {
    pub fn orchestration(&self) -> &'static str {
        match self.kind {
            Kind::Chain { .. } => "Chain",
            Kind::FanOut { .. } => "FanOut",
            Kind::Timers { .. } => "Timers",
            Kind::Events { .. } => "Events",
            Kind::Parent { .. } => "Parent",
            Kind::Counter { .. } => "Counter",
            Kind::Retry => "Retry",
            Kind::Session { .. } => "Session",
        }
    }

    pub fn input(&self) -> String {
        match self.kind {
            Kind::Chain { n, x } => format!("{n},{x}"),
            Kind::FanOut { n, base } => format!("{n},{base}"),
            Kind::Timers { k } => k.to_string(),
            Kind::Events { m } => m.to_string(),
            Kind::Parent { k } => k.to_string(),
            Kind::Counter { n, q } => format!("0,{n},{q}"),
            Kind::Retry => self.id.clone(),
            Kind::Session { k } => k.to_string(),
        }
    }

    /// The result a fault-free run gives, computed without running anything.
    pub fn expected(&self) -> String {
        match self.kind {
            Kind::Chain { n, x } => chain_result(n, x).to_string(),
            Kind::FanOut { n, base } => (base..base + n).map(|v| v * v).sum::<u64>().to_string(),
            Kind::Timers { k } => format!("{k} timers, then echo:{}", self.id),
            Kind::Events { m } => format!("one|two|{}", numbered("q", m)),
            Kind::Parent { k } => (0..k).map(|i| chain_result(3, i)).sum::<u64>().to_string(),
            Kind::Counter { n, q } => format!("{n} kv={n} status={n} {}", numbered("c", q)),
            Kind::Retry => format!("ok:{}", self.id),
            Kind::Session { k } => (0..k).map(|i| (b'a' + (i % 26) as u8) as char).collect(),
        }
    }

    /// Other instances this one creates under ids known in advance, with their expected results.
    pub fn detached(&self) -> Vec<(String, String)> {
        match self.kind {
            Kind::Parent { .. } => vec![(format!("{}-detached", self.id), chain_result(2, 100).to_string())],
            _ => Vec::new(),
        }
    }

    /// Instances in all (root, children, detached) that the run creates.
    pub fn instance_count(&self) -> usize {
        match self.kind {
            Kind::Parent { k } => 2 + k as usize,
            _ => 1,
        }
    }
}

fn chain_result(n: u64, x: u64) -> u64 {
    x + n * n.saturating_sub(1) / 2
}

fn numbered(prefix: &str, m: u64) -> String {
    (0..m)
        .map(|i| format!("{prefix}{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Instances of each light kind (chains, timers, events, retries, sessions).
    pub light: u64,
    /// Fan-outs of 100.
    pub fan_outs: u64,
    /// Parents (each with children and a detached chain) and counters.
    pub heavy: u64,
}

/// The workload of one seed: the same seed always gives the same list.
pub fn generate(seed: u64, scale: Scale, prefix: &str) -> Vec<Spec> {
    let mut rng = SplitMix64::new(seed);
    let mut specs = Vec::new();
    let mut push = |kind: Kind| {
        let id = format!("{prefix}-{}-{}", specs.len(), seed);
        specs.push(Spec { id, kind });
    };
    for _ in 0..scale.fan_outs {
        push(Kind::FanOut {
            n: 100,
            base: rng.below(1000),
        });
    }
    for _ in 0..scale.heavy {
        push(Kind::Parent { k: 2 + rng.below(3) });
        push(Kind::Counter {
            n: 2 + rng.below(3),
            q: 1 + rng.below(3),
        });
    }
    for _ in 0..scale.light {
        push(Kind::Chain {
            n: 2 + rng.below(6),
            x: rng.below(1000),
        });
        push(Kind::Timers { k: 1 + rng.below(3) });
        push(Kind::Events { m: rng.below(4) });
        push(Kind::Retry);
        push(Kind::Session { k: 2 + rng.below(4) });
    }
    specs
}

// ---- registrations ----------------------------------------------------------------------------------

/// Called by chains and fan-outs each time their code runs past an await outside replay: the crash
/// test's way to stop a process in the middle of a turn.
static TURN_HOOK: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

/// Installs the turn hook (once per process).
pub fn set_turn_hook(hook: impl Fn() + Send + Sync + 'static) {
    let _ = TURN_HOOK.set(Box::new(hook));
}

/// Time each activity spends "working" after recording its effect (the crash test sets it so that
/// kills land in the middle of activities too).
static ACTIVITY_LATENCY: OnceLock<Duration> = OnceLock::new();

/// Sets the activity latency (once per process).
pub fn set_activity_latency(latency: Duration) {
    let _ = ACTIVITY_LATENCY.set(latency);
}

async fn work() {
    if let Some(latency) = ACTIVITY_LATENCY.get() {
        tokio::time::sleep(*latency).await;
    }
}

fn turn_hook(ctx: &OrchestrationContext) {
    if !ctx.is_replaying() {
        if let Some(hook) = TURN_HOOK.get() {
            hook();
        }
    }
}

fn parse_pair(input: &str) -> Result<(u64, u64), String> {
    let (a, b) = input
        .split_once(',')
        .ok_or_else(|| format!("bad input {input:?}"))?;
    Ok((
        a.parse().map_err(|e| format!("{input:?}: {e}"))?,
        b.parse().map_err(|e| format!("{input:?}: {e}"))?,
    ))
}

fn number(s: &str) -> Result<u64, String> {
    s.parse().map_err(|e| format!("{s:?} is not a number: {e}"))
}

fn identity(ctx: &ActivityContext) -> ActivityRef {
    ActivityRef {
        instance_id: ctx.instance_id().to_string(),
        execution_id: ctx.execution_id(),
        event_id: ctx.activity_id(),
    }
}

/// The activities of the workload; each records its execution in `effects` before doing anything.
pub fn activities(effects: Arc<dyn Effects>) -> ActivityRegistry {
    let mut reg = ActivityRegistry::new();
    let e = effects.clone();
    reg.register("Add", move |ctx: ActivityContext, input: String| {
        e.record(&identity(&ctx), "Add");
        async move {
            work().await;
            let (x, i) = parse_pair(&input)?;
            Ok((x + i).to_string())
        }
    })
    .unwrap();
    let e = effects.clone();
    reg.register("Square", move |ctx: ActivityContext, input: String| {
        e.record(&identity(&ctx), "Square");
        async move {
            work().await;
            let v = number(&input)?;
            Ok((v * v).to_string())
        }
    })
    .unwrap();
    let e = effects.clone();
    reg.register("Echo", move |ctx: ActivityContext, input: String| {
        e.record(&identity(&ctx), "Echo");
        async move {
            work().await;
            Ok(format!("echo:{input}"))
        }
    })
    .unwrap();
    let e = effects.clone();
    reg.register("Flaky", move |ctx: ActivityContext, input: String| {
        let me = identity(&ctx);
        e.record(&me, "Flaky");
        // Fails on the first two distinct schedulings of this execution, whichever process runs
        // them and however often: a re-run of the same scheduling gives the same answer.
        let position = e
            .ids_of(&me.instance_id, me.execution_id, "Flaky")
            .iter()
            .position(|&id| id == me.event_id)
            .unwrap_or(0);
        async move {
            work().await;
            if position < 2 {
                Err(format!("flaky failure on attempt {}", position + 1))
            } else {
                Ok(format!("ok:{input}"))
            }
        }
    })
    .unwrap();
    let e = effects;
    reg.register("Append", move |ctx: ActivityContext, input: String| {
        e.record(&identity(&ctx), "Append");
        async move {
            work().await;
            let (acc, i) = input.split_once(',').ok_or("bad Append input")?;
            let i = number(i)?;
            Ok(format!("{acc}{}", (b'a' + (i % 26) as u8) as char))
        }
    })
    .unwrap();
    reg
}

/// The orchestrations of the workload.
pub fn orchestrations() -> OrchestrationRegistry {
    let mut reg = OrchestrationRegistry::new();
    reg.register("Chain", |ctx: OrchestrationContext, input: String| async move {
        let (n, mut x) = parse_pair(&input)?;
        for i in 0..n {
            x = number(&ctx.schedule_activity("Add", format!("{x},{i}")).await?)?;
            turn_hook(&ctx);
        }
        Ok(x.to_string())
    })
    .unwrap();
    reg.register("FanOut", |ctx: OrchestrationContext, input: String| async move {
        let (n, base) = parse_pair(&input)?;
        let tasks = (base..base + n)
            .map(|v| ctx.schedule_activity("Square", v.to_string()))
            .collect();
        let results = ctx.join(tasks).await;
        turn_hook(&ctx);
        let mut sum = 0;
        for result in results {
            sum += number(&result?)?;
        }
        Ok(sum.to_string())
    })
    .unwrap();
    reg.register("Timers", |ctx: OrchestrationContext, input: String| async move {
        let k = number(&input)?;
        for i in 0..k {
            ctx.schedule_timer(Duration::from_millis(10 + 20 * i)).await;
        }
        // Recorded values and status changes ride along; they must replay, not change the result.
        let guid = ctx.new_guid();
        ctx.set_custom_status(format!("after timers at {} ({guid})", ctx.utc_now()));
        let echo = ctx.schedule_activity("Echo", ctx.instance_id());
        let deadline = ctx.schedule_timer(Duration::from_secs(60));
        match ctx.select2(echo, deadline).await {
            duroxide_core::Either::Left(result) => Ok(format!("{k} timers, then {}", result?)),
            duroxide_core::Either::Right(()) => Err("the 60 s deadline won the race".into()),
        }
    })
    .unwrap();
    reg.register("Events", |ctx: OrchestrationContext, input: String| async move {
        let m = number(&input)?;
        let first = ctx.wait_for_event("first").await;
        let second = ctx.wait_for_event("second").await;
        let mut messages = Vec::new();
        for _ in 0..m {
            messages.push(ctx.dequeue_event("q").await);
        }
        Ok(format!("{first}|{second}|{}", messages.join(",")))
    })
    .unwrap();
    reg.register("Parent", |ctx: OrchestrationContext, input: String| async move {
        let k = number(&input)?;
        ctx.start_orchestration("Chain", &format!("{}-detached", ctx.instance_id()), "2,100");
        let children = (0..k)
            .map(|i| ctx.schedule_sub_orchestration("Chain", format!("3,{i}")))
            .collect();
        let mut sum = 0;
        for result in ctx.join(children).await {
            sum += number(&result?)?;
        }
        Ok(sum.to_string())
    })
    .unwrap();
    reg.register("Counter", |ctx: OrchestrationContext, input: String| async move {
        let parts: Vec<&str> = input.split(',').collect();
        let [c, n, q] = parts[..] else {
            return Err(format!("bad Counter input {input:?}"));
        };
        let (c, n, q) = (number(c)?, number(n)?, number(q)?);
        let v = number(&ctx.schedule_activity("Add", format!("{c},1")).await?)?;
        ctx.set_kv_value("count", v.to_string());
        ctx.set_custom_status(v.to_string());
        if v < n {
            return ctx.continue_as_new(format!("{v},{n},{q}")).await;
        }
        let mut messages = Vec::new();
        for _ in 0..q {
            messages.push(ctx.dequeue_event("cq").await);
        }
        let kv = ctx.get_kv_value("count").unwrap_or_default();
        let status = ctx.get_custom_status().unwrap_or_default();
        Ok(format!("{v} kv={kv} status={status} {}", messages.join(",")))
    })
    .unwrap();
    reg.register("Retry", |ctx: OrchestrationContext, input: String| async move {
        let policy = RetryPolicy::new(5).with_backoff(Backoff::Fixed {
            delay: Duration::from_millis(20),
        });
        ctx.schedule_activity_with_retry("Flaky", input, &policy).await
    })
    .unwrap();
    reg.register("Session", |ctx: OrchestrationContext, input: String| async move {
        let k = number(&input)?;
        let session = format!("s-{}", ctx.instance_id());
        let mut acc = String::new();
        for i in 0..k {
            acc = ctx
                .schedule_activity_on_session("Append", format!("{acc},{i}"), &session)
                .await?;
        }
        Ok(acc)
    })
    .unwrap();
    reg
}

/// Runtime options for runs under faults and kills: short leases so that work held by a lost reply or
/// a killed process comes back within a second or two.
pub fn options() -> RuntimeOptions {
    RuntimeOptions {
        orchestrator_lock_timeout: Duration::from_secs(1),
        worker_lock_timeout: Duration::from_secs(2),
        session_idle_timeout: Duration::from_secs(2),
        ..RuntimeOptions::default()
    }
}

// ---- driving ----------------------------------------------------------------------------------------

/// Starts every root and sends the events and queue messages the workload waits for. Events are sent
/// right after the start, so most arrive before the code waits (they must be buffered).
pub async fn drive(client: &Client, specs: &[Spec]) {
    for spec in specs {
        client
            .start_orchestration(&spec.id, spec.orchestration(), &spec.input())
            .await
            .unwrap_or_else(|e| panic!("starting {}: {e}", spec.id));
    }
    for spec in specs {
        match spec.kind {
            Kind::Events { m } => {
                client.raise_event(&spec.id, "first", "one").await.unwrap();
                for i in 0..m {
                    client
                        .enqueue_event(&spec.id, "q", &format!("q{i}"))
                        .await
                        .unwrap();
                }
                client.raise_event(&spec.id, "second", "two").await.unwrap();
            }
            Kind::Counter { q, .. } => {
                for i in 0..q {
                    client
                        .enqueue_event(&spec.id, "cq", &format!("c{i}"))
                        .await
                        .unwrap();
                }
            }
            _ => {}
        }
    }
}

/// Waits until every instance the workload creates has ended, or `patience` passes (then the caller's
/// oracle reports what is still running).
pub async fn wait_all(client: &Client, specs: &[Spec], patience: Duration) {
    let deadline = Instant::now() + patience;
    let ids: Vec<String> = specs
        .iter()
        .flat_map(|s| std::iter::once(s.id.clone()).chain(s.detached().into_iter().map(|(id, _)| id)))
        .collect();
    for id in ids {
        let left = deadline.saturating_duration_since(Instant::now());
        if client.wait_for_orchestration(&id, left).await.is_err() {
            return;
        }
    }
}

// ---- the oracle -------------------------------------------------------------------------------------

/// What the oracle saw, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Verdict {
    pub instances: usize,
    pub activities: usize,
    /// Activities that ran more than once (all of them touched by a fault or kill).
    pub rerun_activities: usize,
}

/// Judges a finished run. `touched` is the set of activities a fault touched (`None`: every activity
/// may have been touched, as when processes are killed). Panics with every finding.
pub async fn check(
    client: &Client,
    specs: &[Spec],
    effects: &HashMap<ActivityRef, u32>,
    touched: Option<&HashSet<ActivityRef>>,
    context: &str,
) -> Verdict {
    let mut problems = Vec::new();
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for spec in specs {
        expected.insert(spec.id.clone(), spec.expected());
        expected.extend(spec.detached());
    }
    let all = client.list_all_instances().await.expect("listing instances");
    let want: usize = specs.iter().map(Spec::instance_count).sum();
    if all.len() != want {
        problems.push(format!(
            "{} instances exist; the workload creates {want}",
            all.len()
        ));
    }
    let mut scheduled: HashSet<ActivityRef> = HashSet::new();
    for id in &all {
        let state = client.get_status(id).await.expect("status");
        match (&state.status, expected.get(id)) {
            (Status::Completed, Some(want)) if state.output.as_deref() == Some(want.as_str()) => {}
            (Status::Completed, None) if id.contains("::sub::") => {}
            _ => problems.push(format!(
                "{id}: {:?} output {:?} error {:?}, expected Completed with {:?}",
                state.status,
                state.output,
                state.error,
                expected.get(id)
            )),
        }
        audit_histories(client, id, &mut scheduled, &mut problems).await;
    }
    for activity in &scheduled {
        let runs = effects.get(activity).copied().unwrap_or(0);
        let may_rerun = touched.is_none_or(|t| t.contains(activity));
        if runs == 0 {
            problems.push(format!("{activity:?} is in history but never ran"));
        } else if runs > 1 && !may_rerun {
            problems.push(format!(
                "{activity:?} ran {runs} times although no fault touched it"
            ));
        }
    }
    for activity in effects.keys() {
        if !scheduled.contains(activity) {
            problems.push(format!("{activity:?} ran but no history schedules it"));
        }
    }
    assert!(
        problems.is_empty(),
        "{context}: the oracle found {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    Verdict {
        instances: all.len(),
        activities: scheduled.len(),
        rerun_activities: scheduled
            .iter()
            .filter(|a| effects.get(*a).is_some_and(|&n| n > 1))
            .count(),
    }
}

/// Every execution's history is valid (dense ids, one start, one terminal event at the end), each
/// scheduled activity, timer and child has exactly one completion, and nothing completes twice.
async fn audit_histories(
    client: &Client,
    id: &str,
    scheduled: &mut HashSet<ActivityRef>,
    problems: &mut Vec<String>,
) {
    let executions = client.list_executions(id).await.expect("executions");
    for (index, &execution) in executions.iter().enumerate() {
        let records = client
            .provider()
            .read_history(id, execution)
            .await
            .expect("history");
        let events = match codec::decode_history(&records) {
            Ok(events) => events,
            Err(e) => {
                problems.push(format!("{id} execution {execution}: invalid history: {e}"));
                continue;
            }
        };
        let terminal = events.iter().filter(|e| e.kind.is_terminal()).count();
        let last_is_terminal = events.last().is_some_and(|e| e.kind.is_terminal());
        if terminal != 1 || !last_is_terminal {
            problems.push(format!(
                "{id} execution {execution}: {terminal} terminal events (last is {:?})",
                events.last().map(|e| e.kind.name())
            ));
        }
        let continued = matches!(
            events.last().map(|e| &e.kind),
            Some(EventKind::OrchestrationContinuedAsNew { .. })
        );
        if continued != (index + 1 < executions.len()) {
            problems.push(format!(
                "{id} execution {execution}: continue-as-new does not match the executions"
            ));
        }
        let mut completions: HashMap<u64, u32> = HashMap::new();
        for event in &events {
            if let Some(source) = event.source_event_id {
                *completions.entry(source).or_insert(0) += 1;
            }
        }
        for event in &events {
            let needs_completion = match &event.kind {
                EventKind::ActivityScheduled { .. } => {
                    scheduled.insert(ActivityRef {
                        instance_id: id.to_string(),
                        execution_id: execution,
                        event_id: event.event_id,
                    });
                    true
                }
                EventKind::SubOrchestrationScheduled { .. } => true,
                // The raced 60 s deadline is cancelled, and continue-as-new ends waits.
                _ => false,
            };
            let got = completions.get(&event.event_id).copied().unwrap_or(0);
            if got > 1 || (needs_completion && got != 1) {
                problems.push(format!(
                    "{id} execution {execution}: event {} ({}) has {got} completions",
                    event.event_id,
                    event.kind.name()
                ));
            }
        }
    }
}
