//! Property tests of the replay core: generated orchestration programs replay deterministically and give
//! the same result under any causally valid delivery order; join and select are correct for 1..=2,000.
//!
//! One registered orchestration (`Interp`) interprets a small program language whose program travels in
//! the orchestration input, so proptest can generate orchestrations as data. A pure oracle computes what
//! each program must return.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use duroxide_core::provider::{InstanceStatus, KvEntry};
use duroxide_core::testing::{SimHost, SimResult};
use duroxide_core::{
    Action, Either, Event, EventKind, OrchestrationContext, OrchestrationHandler, OrchestrationRegistry,
    OrchestratorMessage, ReplayEngine, TurnOutput, TurnStatus,
};

// ---- the program language ----------------------------------------------------------------------------

/// One step of a generated orchestration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Step {
    /// `Echo("a{n}")`.
    Activity(u8),
    /// `Fail("f{n}")`, whose error the program catches.
    Fail(u8),
    /// A durable timer of this many ms.
    Timer(u16),
    /// A join of this many `Echo` activities (zero included).
    Join(u8),
    /// A select over this many `Echo` activities (at least one); the losers are cancelled.
    Select(u8),
    /// `Echo` raced against a timer of this many ms.
    Race(u16),
    /// Waits for external event `ev{name}`; the test raises it (early or when the instance is idle).
    Wait(u8),
    /// Sub-orchestration `Child(n)`; with `true` the child continues as new once before answering.
    Sub(u8, bool),
    /// Sets the custom status, then reads it back.
    Status(u8),
    /// Sets KV key `k{key}` to `v{value}`, then reads the key and the key count.
    Kv(u8, u8),
    UtcNow,
    NewGuid,
    /// Continues as new with the rest of the program (generated at most once per program).
    ContinueAsNew,
}

/// A program and how it reports values that legitimately depend on timing or entropy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Program {
    steps: Vec<Step>,
    /// Report race winners, `utc_now` and guids as placeholders, so the output is a function of the
    /// program alone (property (b) compares runs whose timing differs).
    timing_free: bool,
    /// How many of the program's events the test raises right after the start (they wait buffered).
    early_events: usize,
}

/// The input of `Interp`: the program, where this execution resumes, and the output so far.
#[derive(Debug, Serialize, Deserialize)]
struct Resume {
    program: Program,
    pc: usize,
    out: Vec<String>,
}

fn encode_start(program: &Program) -> String {
    let resume = Resume {
        program: program.clone(),
        pc: 0,
        out: Vec::new(),
    };
    serde_json::to_string(&resume).expect("programs serialise")
}

/// The data the test raises for the `ordinal`-th wait of the program.
fn event_data(ordinal: usize) -> String {
    format!("e{ordinal}")
}

/// The interpreter registered as `Interp`.
async fn interp(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let Resume { program, pc, mut out } = serde_json::from_str(&input).map_err(|e| e.to_string())?;
    for (index, step) in program.steps.iter().enumerate().skip(pc) {
        match step {
            Step::Activity(n) => out.push(ctx.schedule_activity("Echo", format!("a{n}")).await?),
            Step::Fail(n) => match ctx.schedule_activity("Fail", format!("f{n}")).await {
                Ok(v) => out.push(format!("unexpected success {v}")),
                Err(e) => out.push(format!("err:{e}")),
            },
            Step::Timer(ms) => {
                ctx.schedule_timer(Duration::from_millis(u64::from(*ms))).await;
                out.push(format!("t{ms}"));
            }
            Step::Join(k) => {
                let tasks = (0..*k)
                    .map(|i| ctx.schedule_activity("Echo", format!("j{i}")))
                    .collect();
                let results: Vec<String> = ctx.join(tasks).await.into_iter().collect::<Result<_, _>>()?;
                out.push(results.join(","));
            }
            Step::Select(k) => {
                let tasks = (0..*k)
                    .map(|i| ctx.schedule_activity("Echo", format!("s{i}")))
                    .collect();
                let (index, value) = ctx.select(tasks).await;
                let value = value?;
                // Any branch may win when completions are reordered; the winner must be consistent.
                if value != format!("s{index}") {
                    out.push(format!("select returned index {index} with value {value}"));
                } else if program.timing_free {
                    out.push("select".into());
                } else {
                    out.push(value);
                }
            }
            Step::Race(ms) => {
                let race = ctx
                    .select2(
                        ctx.schedule_activity("Echo", "r"),
                        ctx.schedule_timer(Duration::from_millis(u64::from(*ms))),
                    )
                    .await;
                let winner = match race {
                    Either::Left(result) => format!("race:activity:{}", result?),
                    Either::Right(()) => "race:timer".to_string(),
                };
                out.push(if program.timing_free {
                    "race".into()
                } else {
                    winner
                });
            }
            Step::Wait(name) => {
                let data = ctx.wait_for_event(&format!("ev{name}")).await;
                out.push(format!("ev{name}={data}"));
            }
            Step::Sub(n, restart) => {
                let child = ctx
                    .schedule_sub_orchestration("Child", format!("{n}:{restart}:0"))
                    .await?;
                out.push(child);
            }
            Step::Status(n) => {
                ctx.set_custom_status(format!("s{n}"));
                out.push(format!("status={:?}", ctx.get_custom_status()));
            }
            Step::Kv(key, value) => {
                let key = format!("k{key}");
                ctx.set_kv_value(&key, format!("v{value}"));
                out.push(format!("kv={:?}/{}", ctx.get_kv_value(&key), ctx.get_kv_length()));
            }
            Step::UtcNow => {
                let now = ctx.utc_now();
                out.push(if program.timing_free {
                    "now".into()
                } else {
                    now.to_string()
                });
            }
            Step::NewGuid => {
                let guid = ctx.new_guid();
                let well_formed = guid.len() == 36 && &guid[14..15] == "4";
                out.push(match (well_formed, program.timing_free) {
                    (false, _) => format!("malformed guid {guid}"),
                    (true, true) => "guid".into(),
                    (true, false) => guid,
                });
            }
            Step::ContinueAsNew => {
                out.push(format!("can@{}", ctx.execution_id()));
                let next = Resume {
                    program: program.clone(),
                    pc: index + 1,
                    out,
                };
                let input = serde_json::to_string(&next).map_err(|e| e.to_string())?;
                return ctx.continue_as_new(input).await;
            }
        }
    }
    serde_json::to_string(&out).map_err(|e| e.to_string())
}

/// The sub-orchestration: input `n:restart:generation`.
async fn child(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let mut parts = input.split(':');
    let (Some(n), Some(restart), Some(generation)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("bad child input {input:?}"));
    };
    let echoed = ctx.schedule_activity("Echo", format!("c{n}")).await?;
    if restart == "true" && generation == "0" {
        return ctx.continue_as_new(format!("{n}:{restart}:1")).await;
    }
    Ok(format!("child:{echoed}:{generation}"))
}

/// What `program` must return when run with `timing_free` set.
fn oracle(program: &Program) -> Vec<String> {
    let mut out = Vec::new();
    let mut waits = 0;
    let mut keys = BTreeSet::new();
    let mut execution = 1;
    for step in &program.steps {
        out.push(match step {
            Step::Activity(n) => format!("a{n}"),
            Step::Fail(n) => format!("err:f{n}"),
            Step::Timer(ms) => format!("t{ms}"),
            Step::Join(k) => (0..*k).map(|i| format!("j{i}")).collect::<Vec<_>>().join(","),
            Step::Select(_) => "select".into(),
            Step::Race(_) => "race".into(),
            Step::Wait(name) => {
                waits += 1;
                format!("ev{name}={}", event_data(waits - 1))
            }
            Step::Sub(n, restart) => format!("child:c{n}:{}", u8::from(*restart)),
            Step::Status(n) => format!("status={:?}", Some(format!("s{n}"))),
            Step::Kv(key, value) => {
                keys.insert(*key);
                format!("kv={:?}/{}", Some(format!("v{value}")), keys.len())
            }
            Step::UtcNow => "now".into(),
            Step::NewGuid => "guid".into(),
            Step::ContinueAsNew => {
                execution += 1;
                format!("can@{}", execution - 1)
            }
        });
    }
    out
}

fn registry() -> OrchestrationRegistry {
    let mut r = OrchestrationRegistry::new();
    r.register("Interp", interp).expect("registers");
    r.register("Child", child).expect("registers");
    r
}

fn handler_for(name: &str) -> Arc<dyn OrchestrationHandler> {
    match name {
        "Interp" => Arc::new(interp),
        "Child" => Arc::new(child),
        other => panic!("no handler named {other}"),
    }
}

fn sim(shuffle: Option<u64>, cache: bool) -> SimHost {
    let mut host = SimHost::new(registry())
        .activity("Echo", |w| Ok(w.input.clone()))
        .activity("Fail", |w| Err(w.input.clone()));
    if let Some(seed) = shuffle {
        host = host.shuffled(seed);
    }
    if !cache {
        host = host.without_cache();
    }
    host
}

// ---- running programs ----------------------------------------------------------------------------------

/// Everything a run of a program left behind.
#[derive(Debug)]
struct Run {
    result: SimResult,
    /// Decoded history per instance, per execution.
    histories: BTreeMap<String, Vec<Vec<Event>>>,
    /// (instance, execution, history length) after every turn: the points where a runtime replays.
    boundaries: BTreeSet<(String, u64, usize)>,
    activity_log: Vec<(String, String)>,
}

const ROOT: &str = "p";

/// Runs `program` to the end: raises its first `early_events` events right after the start and each
/// later one only when the host has nothing else to do (the instance must then be waiting for it).
fn run_program(program: &Program, mut host: SimHost) -> Run {
    let events: Vec<(String, String)> = program
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Wait(name) => Some(format!("ev{name}")),
            _ => None,
        })
        .enumerate()
        .map(|(ordinal, name)| (name, event_data(ordinal)))
        .collect();
    host.start(ROOT, "Interp", &encode_start(program));
    let mut raised = 0;
    while raised < program.early_events.min(events.len()) {
        host.raise_event(ROOT, &events[raised].0, &events[raised].1);
        raised += 1;
    }
    let mut boundaries = BTreeSet::new();
    let mut steps = 0usize;
    loop {
        loop {
            let turns = host.turns;
            if !host.step() {
                break;
            }
            steps += 1;
            assert!(steps < 200_000, "the program does not settle: {program:?}");
            if host.turns != turns {
                for id in host.instance_ids() {
                    let inst = host.instance(&id).expect("listed");
                    let execution = inst.executions.len() as u64;
                    let len = inst.executions.last().map_or(0, Vec::len);
                    boundaries.insert((id, execution, len));
                }
            }
        }
        let running = host.result(ROOT).expect("started").status == InstanceStatus::Running;
        if !running || raised == events.len() {
            break;
        }
        host.raise_event(ROOT, &events[raised].0, &events[raised].1);
        raised += 1;
    }
    let histories = host
        .instance_ids()
        .into_iter()
        .map(|id| {
            let executions = host.instance(&id).expect("listed").executions.len() as u64;
            let per_execution = (1..=executions).map(|e| host.execution_history(&id, e)).collect();
            (id, per_execution)
        })
        .collect();
    Run {
        result: host.result(ROOT).expect("started"),
        histories,
        boundaries,
        activity_log: host.activity_log.clone(),
    }
}

/// The KV state an execution starts from: the changes recorded by the executions before it.
fn kv_before(executions: &[Vec<Event>]) -> Vec<KvEntry> {
    let mut kv = BTreeMap::new();
    for event in executions.iter().flatten() {
        if let EventKind::KvSet { key, value } = &event.kind {
            let entry = KvEntry {
                key: key.clone(),
                value: value.clone(),
                updated_at_ms: event.timestamp_ms,
            };
            kv.insert(key.clone(), entry);
        }
    }
    kv.into_values().collect()
}

/// Replays `history` in a fresh engine, as a runtime does on a cache miss.
fn fresh_replay(instance: &str, execution: u64, history: &[Event], kv: Vec<KvEntry>) -> TurnOutput {
    let (name, version) = match &history[0].kind {
        EventKind::OrchestrationStarted { name, version, .. } => (name.clone(), version.clone()),
        other => panic!("history starts with {other:?}"),
    };
    let mut engine = ReplayEngine::new(instance, execution, handler_for(&name), version, kv);
    engine.replay(history)
}

/// Property (a), part one: at every point where a turn ended with the execution still running, a fresh
/// engine replays the history silently: no actions, no new events, still running.
fn assert_boundaries_replay_silently(run: &Run) -> Result<(), TestCaseError> {
    for (instance, execution, len) in &run.boundaries {
        let executions = &run.histories[instance];
        let history = &executions[*execution as usize - 1][..*len];
        if history.is_empty() || history.last().is_some_and(|e| e.kind.is_terminal()) {
            continue;
        }
        let kv = kv_before(&executions[..*execution as usize - 1]);
        let out = fresh_replay(instance, *execution, history, kv);
        let at = format!("{instance} execution {execution} after {len} events");
        prop_assert_eq!(&out.status, &TurnStatus::Running, "{}", at);
        prop_assert!(out.actions.is_empty(), "{}: {:?}", at, out.actions);
        prop_assert!(out.new_events.is_empty(), "{}: {:?}", at, out.new_events);
    }
    Ok(())
}

fn completed_with(out: &[String]) -> SimResult {
    SimResult {
        status: InstanceStatus::Completed,
        output: Some(serde_json::to_string(out).expect("serialises")),
    }
}

/// `cases` per property; failures are reported with their shrunk input rather than saved in the tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- generators ------------------------------------------------------------------------------------------

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..10).prop_map(Step::Activity),
        1 => (0u8..10).prop_map(Step::Fail),
        2 => (1u16..5_000).prop_map(Step::Timer),
        2 => (0u8..6).prop_map(Step::Join),
        1 => (1u8..5).prop_map(Step::Select),
        1 => (1u16..5_000).prop_map(Step::Race),
        2 => (0u8..2).prop_map(Step::Wait),
        1 => (0u8..5, any::<bool>()).prop_map(|(n, restart)| Step::Sub(n, restart)),
        1 => (0u8..5).prop_map(Step::Status),
        1 => (0u8..4, 0u8..10).prop_map(|(k, v)| Step::Kv(k, v)),
        1 => Just(Step::UtcNow),
        1 => Just(Step::NewGuid),
    ]
}

/// Programs of up to 10 steps, with a continue-as-new inserted at a generated position half the time.
fn program(timing_free: bool) -> impl Strategy<Value = Program> {
    (
        proptest::collection::vec(step(), 0..10),
        proptest::option::of(any::<proptest::sample::Index>()),
        0usize..4,
    )
        .prop_map(move |(mut steps, can, early_events)| {
            if let Some(at) = can {
                let at = at.index(steps.len() + 1);
                steps.insert(at, Step::ContinueAsNew);
            }
            Program {
                steps,
                timing_free,
                early_events,
            }
        })
}

// ---- (a) replay is deterministic --------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(384))]

    /// (a) The same run with and without the instance cache (every turn replayed from history by a
    /// fresh engine) leaves identical histories and results, and every turn boundary replays silently.
    #[test]
    fn replay_reproduces_every_history(
        program in program(false),
        shuffle in proptest::option::of(any::<u64>()),
    ) {
        let cached = run_program(&program, sim(shuffle, true));
        let uncached = run_program(&program, sim(shuffle, false));
        prop_assert_eq!(cached.result.status, InstanceStatus::Completed, "{:?}", cached.result);
        prop_assert_eq!(&cached.result, &uncached.result);
        prop_assert_eq!(&cached.histories, &uncached.histories);
        prop_assert_eq!(&cached.activity_log, &uncached.activity_log);
        assert_boundaries_replay_silently(&cached)?;
    }

    /// (b) Any causally valid delivery order and batching gives the result the oracle predicts.
    #[test]
    fn delivery_order_does_not_change_the_result(
        program in program(true),
        seeds in proptest::collection::vec(any::<u64>(), 3),
    ) {
        let expected = completed_with(&oracle(&program));
        let plain = run_program(&program, sim(None, true));
        prop_assert_eq!(&plain.result, &expected);
        for seed in seeds {
            let shuffled = run_program(&program, sim(Some(seed), true));
            prop_assert_eq!(&shuffled.result, &expected, "seed {}", seed);
        }
    }
}

// ---- (c) join and select for N = 1..=2,000 -----------------------------------------------------------------

/// `Join(n)`: a join of `n` activities `Work(i)`; answers their results, comma-separated, in input order.
async fn join_n(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let n: usize = input.parse().map_err(|e| format!("{e}"))?;
    let tasks = (0..n)
        .map(|i| ctx.schedule_activity("Work", i.to_string()))
        .collect();
    let results: Vec<String> = ctx.join(tasks).await.into_iter().collect::<Result<_, _>>()?;
    Ok(results.join(","))
}

fn start(name: &str, input: String) -> OrchestratorMessage {
    OrchestratorMessage::StartOrchestration {
        name: name.into(),
        version: None,
        input,
        parent: None,
    }
}

fn activity_done(event_id: u64, result: String) -> OrchestratorMessage {
    OrchestratorMessage::ActivityCompleted {
        execution_id: 1,
        event_id,
        result,
    }
}

/// Splits `items` into consecutive batches whose sizes come from `seed` (1 to 64 each).
fn batches<T: Clone>(items: &[T], mut seed: u64) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let take = (1 + (seed % 64) as usize).min(rest.len());
        out.push(rest[..take].to_vec());
        rest = &rest[take..];
    }
    out
}

/// Drives `Join(n)` on a bare engine, completing activity `i` with `r{i}` in the order `order`, in
/// batches drawn from `seed`; then checks that a fresh engine replaying the history up to the last turn
/// and running that turn reaches the same result.
fn check_join(n: usize, order: &[usize], seed: u64) -> Result<(), TestCaseError> {
    let mut engine = ReplayEngine::new("join", 1, Arc::new(join_n), "1.0.0", Vec::new());
    let first = engine
        .run_turn(vec![start("Join", n.to_string())], 1_000, 1)
        .expect("starts");
    let mut scheduled = vec![0u64; n];
    for action in &first.actions {
        if let Action::ScheduleActivity(work) = action {
            let i: usize = work.input.parse().expect("numeric input");
            scheduled[i] = work.event_id;
        }
    }
    prop_assert!(
        scheduled.iter().all(|&id| id != 0),
        "every activity was scheduled"
    );
    let mut history = first.new_events;
    let batches = batches(order, seed);
    let expected: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let mut last_boundary = history.len();
    let mut last_batch = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let messages: Vec<_> = batch
            .iter()
            .map(|&i| activity_done(scheduled[i], format!("r{i}")))
            .collect();
        last_boundary = history.len();
        last_batch = messages.clone();
        let out = engine.run_turn(messages, 2_000 + b as u64, 1).expect("runs");
        history.extend(out.new_events);
        if b + 1 < batches.len() {
            prop_assert_eq!(&out.status, &TurnStatus::Running);
            prop_assert!(out.actions.is_empty(), "{:?}", out.actions);
        } else {
            prop_assert_eq!(
                &out.status,
                &TurnStatus::Completed {
                    output: expected.join(",")
                }
            );
        }
    }
    let mut fresh = ReplayEngine::new("join", 1, Arc::new(join_n), "1.0.0", Vec::new());
    let replayed = fresh.replay(&history[..last_boundary]);
    prop_assert_eq!(&replayed.status, &TurnStatus::Running);
    prop_assert!(replayed.actions.is_empty(), "{:?}", replayed.actions);
    let last = fresh
        .run_turn(last_batch, 2_000 + batches.len() as u64 - 1, 1)
        .expect("runs");
    prop_assert_eq!(
        &last.status,
        &TurnStatus::Completed {
            output: expected.join(",")
        }
    );
    prop_assert_eq!(&last.new_events[..], &history[last_boundary..]);
    Ok(())
}

/// `Timers(delays)`: a select over one branch per delay — a timer, then activity `Work(i)` — answering
/// the winning index. The first timer to fire wins, since its activity runs before the clock moves on.
async fn select_timers(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let delays: Vec<u64> = serde_json::from_str(&input).map_err(|e| e.to_string())?;
    let branches = delays
        .iter()
        .enumerate()
        .map(|(i, ms)| {
            let ctx = ctx.clone();
            let timer = ctx.schedule_timer(Duration::from_millis(*ms));
            async move {
                timer.await;
                ctx.schedule_activity("Work", i.to_string()).await
            }
        })
        .collect();
    let (index, result) = ctx.select(branches).await;
    let result = result?;
    if result != index.to_string() {
        return Err(format!("branch {index} answered {result}"));
    }
    Ok(index.to_string())
}

/// Index of the smallest delay; the lowest index among equals.
fn earliest(delays: &[u64]) -> usize {
    let min = delays.iter().min().expect("not empty");
    delays.iter().position(|d| d == min).expect("present")
}

/// Runs `Timers(delays)` on the plain host; checks the winner and that the host ran no loser's activity
/// (ties schedule several activities in one turn: the losers must be cancelled before they run).
fn check_select_timers(delays: &[u64]) -> Result<(), TestCaseError> {
    let mut r = OrchestrationRegistry::new();
    r.register("Timers", select_timers).expect("registers");
    let mut host = SimHost::new(r).activity("Work", |w| Ok(w.input.clone()));
    host.start("s", "Timers", &serde_json::to_string(delays).expect("serialises"));
    // Stop once the clock moves past the decision: the remaining timers fire into a finished
    // instance, which proves nothing and costs a turn each.
    while host.result("s").expect("started").status == InstanceStatus::Running && host.step() {}
    let decided_at = host.now_ms();
    while host.step() && host.now_ms() == decided_at {}
    let winner = earliest(delays);
    prop_assert_eq!(
        host.result("s").expect("started"),
        SimResult {
            status: InstanceStatus::Completed,
            output: Some(winner.to_string()),
        }
    );
    let ran: Vec<&str> = host.activity_log.iter().map(|(_, name)| name.as_str()).collect();
    prop_assert_eq!(ran, vec!["Work"], "only the winner's activity ran");
    let history = host.history("s");
    let scheduled = history
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::ActivityScheduled { .. }))
        .count();
    let ties = delays.iter().filter(|&&d| d == delays[winner]).count();
    prop_assert_eq!(scheduled, ties, "every tied branch scheduled its activity");
    Ok(())
}

/// `Armed(delays)`: a select over one branch per delay; each branch schedules activity `Work(i)` at once
/// and then waits for its timer, handing the still-running activity to the winner.
async fn select_armed(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let delays: Vec<u64> = serde_json::from_str(&input).map_err(|e| e.to_string())?;
    let branches = delays
        .iter()
        .enumerate()
        .map(|(i, ms)| {
            let work = ctx.schedule_activity("Work", i.to_string());
            let timer = ctx.schedule_timer(Duration::from_millis(*ms));
            async move {
                timer.await;
                (i, work)
            }
        })
        .collect();
    let (index, (branch, work)) = ctx.select(branches).await;
    if branch != index {
        return Err(format!("select reported index {index} for branch {branch}"));
    }
    Ok(format!("{index}:{}", work.await?))
}

/// Drives `Armed(delays)` on a bare engine: fires every timer in fire order (ties by event id, as a
/// host with one clock does), in batches drawn from `batch_seed`; exactly the losers' activities must
/// be cancelled.
fn check_select_armed(delays: &[u64], batch_seed: u64) -> Result<(), TestCaseError> {
    let input = serde_json::to_string(delays).expect("serialises");
    let mut engine = ReplayEngine::new("armed", 1, Arc::new(select_armed), "1.0.0", Vec::new());
    let first = engine
        .run_turn(vec![start("Armed", input)], 1_000, 1)
        .expect("starts");
    let mut activities = vec![0u64; delays.len()];
    let mut timers = Vec::new();
    for action in &first.actions {
        match action {
            Action::ScheduleActivity(work) => {
                activities[work.input.parse::<usize>().expect("index")] = work.event_id
            }
            Action::StartTimer { event_id, fire_at_ms } => timers.push((*fire_at_ms, *event_id)),
            other => prop_assert!(false, "unexpected action {:?}", other),
        }
    }
    prop_assert_eq!(timers.len(), delays.len());
    timers.sort_unstable();
    let fired: Vec<_> = timers
        .iter()
        .map(|&(fire_at_ms, event_id)| OrchestratorMessage::TimerFired {
            execution_id: 1,
            event_id,
            fire_at_ms,
        })
        .collect();
    let winner = earliest(delays);
    let mut cancelled = BTreeSet::new();
    for (b, batch) in batches(&fired, batch_seed).into_iter().enumerate() {
        let out = engine.run_turn(batch, 10_000 + b as u64, 1).expect("runs");
        for action in out.actions {
            match action {
                Action::CancelActivity { event_id } => prop_assert!(cancelled.insert(event_id)),
                other => prop_assert!(false, "unexpected action {:?}", other),
            }
        }
    }
    let losers: BTreeSet<u64> = (0..delays.len())
        .filter(|&i| i != winner)
        .map(|i| activities[i])
        .collect();
    prop_assert_eq!(cancelled, losers);
    let done = engine
        .run_turn(vec![activity_done(activities[winner], "won".into())], 20_000, 1)
        .expect("runs");
    prop_assert_eq!(
        done.status,
        TurnStatus::Completed {
            output: format!("{winner}:won")
        }
    );
    Ok(())
}

/// Sizes from 1 to 2,000, mostly small so that a run stays quick, with the upper end well covered.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..=40, 1 => 1usize..=2_000, 1 => 1_900usize..=2_000]
}

proptest! {
    #![proptest_config(config(64))]

    /// (c) A join returns all N results in input order whatever the completion order and batching.
    #[test]
    fn join_returns_results_in_input_order(
        order in size().prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle()),
        seed in any::<u64>(),
    ) {
        check_join(order.len(), &order, seed)?;
    }

    /// (c) On a shuffled host (random completion order and batches) a join still keeps input order.
    #[test]
    fn join_on_a_shuffled_host(n in size(), seed in any::<u64>()) {
        let mut r = OrchestrationRegistry::new();
        r.register("Join", join_n).expect("registers");
        let mut host = SimHost::new(r)
            .activity("Work", |w| Ok(format!("r{}", w.input)))
            .shuffled(seed)
            .activities_first();
        host.start("j", "Join", &n.to_string());
        let expected: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        prop_assert_eq!(host.run_to_completion("j"), completed_plain(&expected.join(",")));
    }

    /// (c) A select over N timers picks the smallest delay (lowest index on ties); losers never run.
    #[test]
    fn select_over_timers_picks_the_earliest(
        delays in size().prop_flat_map(|n| proptest::collection::vec(1u64..=(n as u64 * 3), n)),
    ) {
        check_select_timers(&delays)?;
    }

    /// (c) The same with distinct delays, in any order.
    #[test]
    fn select_over_distinct_timers_picks_the_earliest(
        delays in size().prop_flat_map(|n| Just((1..=n as u64).map(|d| d * 7).collect::<Vec<_>>()).prop_shuffle()),
    ) {
        check_select_timers(&delays)?;
    }

    /// (c) When the select resolves, every loser's running activity is cancelled and only those.
    #[test]
    fn select_cancels_exactly_the_losers_activities(
        delays in size().prop_flat_map(|n| proptest::collection::vec(1u64..=(n as u64 * 3), n)),
        seed in any::<u64>(),
    ) {
        check_select_armed(&delays, seed)?;
    }
}

fn completed_plain(output: &str) -> SimResult {
    SimResult {
        status: InstanceStatus::Completed,
        output: Some(output.to_string()),
    }
}

// The ends of the range, always run (a generator might not reach them).

#[test]
fn join_of_one_and_of_two_thousand() {
    check_join(1, &[0], 3).unwrap();
    let reversed: Vec<usize> = (0..2_000).rev().collect();
    check_join(2_000, &reversed, 7).unwrap();
}

#[test]
fn select_of_one_and_of_two_thousand() {
    check_select_timers(&[5]).unwrap();
    check_select_armed(&[5], 1).unwrap();
    let descending: Vec<u64> = (1..=2_000).rev().collect();
    check_select_timers(&descending).unwrap();
    check_select_armed(&descending, 9).unwrap();
    let all_tied = vec![10; 2_000];
    check_select_timers(&all_tied).unwrap();
    check_select_armed(&all_tied, 11).unwrap();
}
