//! Fuzzing the core with proptest: arbitrary bytes and arbitrary well-formed-but-wrong data go to the
//! decoders (`codec::decode_history`, `decode_message`, `decode_activity`), the replay engine
//! (`ReplayEngine::replay` then `run_turn`) and the turn driver (`turn::process_item`). Whatever comes
//! in, the result must be an error or a failed status, never a panic; and what they do return must
//! keep their promises (a decoded history is valid, an ack continues the history's ids densely).
//!
//! Wrong histories are made two ways: generated from scratch (random kinds, source ids, duplicate
//! completions, terminal events in the middle), and by mutating real histories that the simulated
//! host recorded for a "kitchen sink" orchestration, which gets far deeper into replay before the
//! mismatch. Case counts are modest for CI; `DUROXIDE_FUZZ_CASES` raises them (`cargo xtask soak`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use duroxide_core::codec;
use duroxide_core::engine::TurnStatus;
use duroxide_core::history::{CarriedMessage, ParentLink};
use duroxide_core::provider::{
    CustomStatus, HistoryRecord, InstanceInfo, InstanceStatus, KvEntry, OrchestrationItem, StoredMessage,
};
use duroxide_core::testing::SimHost;
use duroxide_core::turn::{process_item, TurnDecision, TurnOptions};
use duroxide_core::{
    ErrorDetails, ErrorKind, Event, EventKind, OrchestrationContext, OrchestrationHandler,
    OrchestrationRegistry, OrchestratorMessage, ReplayEngine,
};

fn config(default_cases: u32) -> Config {
    let cases = std::env::var("DUROXIDE_FUZZ_CASES")
        .ok()
        .map(|v| v.parse().expect("DUROXIDE_FUZZ_CASES is a number"))
        .unwrap_or(default_cases);
    Config {
        cases,
        // Shrunk failures are printed; regression files would land in the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---- orchestrations ---------------------------------------------------------------------------------

/// Uses most of the context API, so that replaying a mutated history of it reaches every matcher.
async fn sink(ctx: OrchestrationContext, input: String) -> Result<String, String> {
    let activity = ctx.schedule_activity("A", input.clone());
    let timer = ctx.schedule_timer(Duration::from_millis(5));
    let event = ctx.wait_for_event("ev");
    let raced = match ctx.select2(activity, timer).await {
        duroxide_core::Either::Left(result) => result.unwrap_or_else(|e| e),
        duroxide_core::Either::Right(()) => "timer".to_string(),
    };
    ctx.set_custom_status(format!("raced {raced}"));
    ctx.set_kv_value("k", raced.clone());
    let now = ctx.utc_now();
    let guid = ctx.new_guid();
    let joined = ctx
        .join(vec![
            ctx.schedule_activity("B", "1"),
            ctx.schedule_activity("B", "2"),
            ctx.schedule_activity_on_session("B", "3", "s"),
        ])
        .await;
    let child = ctx.schedule_sub_orchestration("Child", "c").await;
    let queued = ctx.dequeue_event("q").await;
    let event = event.await;
    ctx.clear_kv_value("k");
    if input == "again" {
        return ctx.continue_as_new("last").await;
    }
    ctx.start_orchestration("Child", &format!("{}-detached", ctx.instance_id()), "d");
    Ok(format!(
        "{raced} {now} {guid} {} {child:?} {queued} {event}",
        joined.len()
    ))
}

fn registry() -> OrchestrationRegistry {
    let mut r = OrchestrationRegistry::new();
    r.register("Sink", sink).unwrap();
    r.register("Child", |ctx: OrchestrationContext, input: String| async move {
        let value = ctx.schedule_activity("A", input).await?;
        ctx.schedule_timer(Duration::from_millis(1)).await;
        Ok(value)
    })
    .unwrap();
    r.register(
        "Trivial",
        |_ctx: OrchestrationContext, input: String| async move { Ok(input) },
    )
    .unwrap();
    r.register(
        "Forever",
        |ctx: OrchestrationContext, _input: String| async move { Ok(ctx.wait_for_event("never").await) },
    )
    .unwrap();
    r.register("Retry", |ctx: OrchestrationContext, input: String| async move {
        let policy = duroxide_core::RetryPolicy::new(3)
            .with_backoff(duroxide_core::Backoff::Fixed {
                delay: Duration::from_millis(3),
            })
            .with_timeout(Duration::from_millis(50));
        ctx.schedule_activity_with_retry("B", input, &policy).await
    })
    .unwrap();
    r
}

fn handler(name: &str) -> Arc<dyn OrchestrationHandler> {
    registry()
        .resolve(name, None)
        .map(|(_, h)| h)
        .unwrap_or_else(|| panic!("{name} is registered"))
}

/// The largest id a SQL store can hand back (BIGINT). Ids inside JSON payloads go up to `u64::MAX`.
const STORED_MAX: u64 = i64::MAX as u64;

const NAMES: [&str; 6] = ["Sink", "Child", "Trivial", "Forever", "Retry", "Nope"];

// ---- a corpus of real histories ---------------------------------------------------------------------

/// (orchestration name, one execution's history) recorded by the simulated host, under several
/// delivery orders.
fn corpus() -> &'static Vec<(String, Vec<Event>)> {
    static CORPUS: OnceLock<Vec<(String, Vec<Event>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut out = Vec::new();
        for seed in 1..=6u64 {
            let mut host = SimHost::new(registry())
                .activity("A", |w| Ok(format!("a:{}", w.input)))
                .activity("B", |w| {
                    if w.input == "1" && w.event_id % 2 == 0 {
                        Err("b failed".into())
                    } else {
                        Ok(format!("b:{}", w.input))
                    }
                });
            if seed > 1 {
                host = host.shuffled(seed);
            }
            for (id, name, input) in [
                ("sink", "Sink", "x"),
                ("again", "Sink", "again"),
                ("retry", "Retry", "r"),
                ("trivial", "Trivial", "t"),
            ] {
                host.start(id, name, input);
                if seed % 2 == 0 {
                    host.raise_event(id, "ev", "early");
                }
            }
            host.run(10_000);
            for id in ["sink", "again"] {
                host.raise_event(id, "ev", "late");
                host.enqueue_event(id, "q", "m1");
                host.enqueue_event(id, "q", "m2");
            }
            host.run(100_000);
            for id in host.instance_ids() {
                let executions = host.instance(&id).map_or(0, |i| i.executions.len() as u64);
                for execution in 1..=executions {
                    let history = host.execution_history(&id, execution);
                    let name = match history.first().map(|e| &e.kind) {
                        Some(EventKind::OrchestrationStarted { name, .. }) => name.clone(),
                        _ => continue,
                    };
                    out.push((name, history));
                }
            }
        }
        assert!(out.len() >= 20, "the corpus has histories to mutate");
        out
    })
}

// ---- strategies -------------------------------------------------------------------------------------

fn small_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        prop::sample::select(vec!["A", "B", "ev", "q", "x", "s", "Child", "Sink", "again", "1"])
            .prop_map(str::to_string),
        "[a-z0-9é\\\\\"{}]{0,12}",
    ]
}

fn error_details() -> impl Strategy<Value = ErrorDetails> {
    (
        prop::sample::select(vec![
            ErrorKind::Application,
            ErrorKind::Nondeterminism,
            ErrorKind::Poison,
            ErrorKind::Infrastructure,
            ErrorKind::Configuration,
            ErrorKind::LimitExceeded,
            ErrorKind::Cancelled,
        ]),
        small_text(),
    )
        .prop_map(|(kind, message)| ErrorDetails::new(kind, message))
}

fn parent_link() -> impl Strategy<Value = Option<ParentLink>> {
    prop::option::of(
        (small_text(), 0u64..4, 0u64..40).prop_map(|(instance_id, execution_id, event_id)| ParentLink {
            instance_id,
            execution_id,
            event_id,
        }),
    )
}

/// Any event kind, with values from small sets so that names and ids collide with real ones.
fn event_kind() -> impl Strategy<Value = EventKind> {
    let t = small_text;
    let n = || prop_oneof![0u64..50, Just(u64::MAX), any::<u64>()];
    prop_oneof![
        (t(), t(), t(), parent_link(), prop::option::of(t())).prop_map(
            |(name, version, input, parent, s)| {
                EventKind::OrchestrationStarted {
                    name,
                    version,
                    input,
                    parent,
                    initial_custom_status: s,
                }
            }
        ),
        (t(), t(), prop::option::of(t()), prop::option::of(t())).prop_map(
            |(name, input, session_id, tag)| {
                EventKind::ActivityScheduled {
                    name,
                    input,
                    session_id,
                    tag,
                }
            }
        ),
        t().prop_map(|result| EventKind::ActivityCompleted { result }),
        error_details().prop_map(|error| EventKind::ActivityFailed { error }),
        n().prop_map(|fire_at_ms| EventKind::TimerCreated { fire_at_ms }),
        n().prop_map(|fire_at_ms| EventKind::TimerFired { fire_at_ms }),
        t().prop_map(|name| EventKind::ExternalSubscribed { name }),
        (t(), t()).prop_map(|(name, data)| EventKind::ExternalEventReceived { name, data }),
        t().prop_map(|queue| EventKind::QueueSubscribed { queue }),
        (t(), t()).prop_map(|(queue, data)| EventKind::QueueMessageReceived { queue, data }),
        (t(), prop::option::of(t()), t(), t()).prop_map(|(name, version, instance_id, input)| {
            EventKind::SubOrchestrationScheduled {
                name,
                version,
                instance_id,
                input,
            }
        }),
        t().prop_map(|result| EventKind::SubOrchestrationCompleted { result }),
        error_details().prop_map(|error| EventKind::SubOrchestrationFailed { error }),
        (t(), prop::option::of(t()), t(), t()).prop_map(|(name, version, instance_id, input)| {
            EventKind::OrchestrationChained {
                name,
                version,
                instance_id,
                input,
            }
        }),
        prop::option::of(t()).prop_map(|status| EventKind::CustomStatusUpdated { status }),
        (t(), t()).prop_map(|(key, value)| EventKind::KvSet { key, value }),
        t().prop_map(|key| EventKind::KvCleared { key }),
        Just(EventKind::KvClearedAll),
        n().prop_map(|cutoff_ms| EventKind::KvPruned { cutoff_ms }),
        n().prop_map(|now_ms| EventKind::UtcNowRecorded { now_ms }),
        t().prop_map(|guid| EventKind::GuidRecorded { guid }),
        t().prop_map(|reason| EventKind::CancelRequested { reason }),
        (t(), prop::option::of(t()))
            .prop_map(|(input, version)| EventKind::OrchestrationContinuedAsNew { input, version }),
        t().prop_map(|output| EventKind::OrchestrationCompleted { output }),
        error_details().prop_map(|error| EventKind::OrchestrationFailed { error }),
    ]
}

fn carried() -> impl Strategy<Value = Vec<CarriedMessage>> {
    prop::collection::vec(
        prop_oneof![
            (small_text(), small_text()).prop_map(|(name, data)| CarriedMessage::Event { name, data }),
            (small_text(), small_text()).prop_map(|(queue, data)| CarriedMessage::Queue { queue, data }),
            small_text().prop_map(|reason| CarriedMessage::Cancel { reason }),
        ],
        0..3,
    )
}

/// Any orchestrator message, addressed to plausible (and implausible) executions and events.
fn message() -> impl Strategy<Value = OrchestratorMessage> {
    let t = small_text;
    let exec = || prop_oneof![0u64..4, Just(u64::MAX)];
    let ev = || prop_oneof![0u64..40, Just(u64::MAX)];
    let name = || prop::sample::select(NAMES.to_vec()).prop_map(str::to_string);
    prop_oneof![
        (name(), prop::option::of(t()), t(), parent_link()).prop_map(|(name, version, input, parent)| {
            OrchestratorMessage::StartOrchestration {
                name,
                version,
                input,
                parent,
            }
        }),
        (
            exec(),
            name(),
            prop::option::of(t()),
            t(),
            parent_link(),
            prop::option::of(t()),
            carried()
        )
            .prop_map(
                |(execution_id, name, version, input, parent, custom_status, carried)| {
                    OrchestratorMessage::ContinueAsNew {
                        execution_id,
                        name,
                        version,
                        input,
                        parent,
                        custom_status,
                        carried,
                    }
                }
            ),
        (exec(), ev(), t()).prop_map(|(execution_id, event_id, result)| {
            OrchestratorMessage::ActivityCompleted {
                execution_id,
                event_id,
                result,
            }
        }),
        (exec(), ev(), error_details()).prop_map(|(execution_id, event_id, error)| {
            OrchestratorMessage::ActivityFailed {
                execution_id,
                event_id,
                error,
            }
        }),
        (exec(), ev(), any::<u64>()).prop_map(|(execution_id, event_id, fire_at_ms)| {
            OrchestratorMessage::TimerFired {
                execution_id,
                event_id,
                fire_at_ms,
            }
        }),
        (exec(), ev(), t()).prop_map(|(execution_id, event_id, result)| {
            OrchestratorMessage::SubOrchestrationCompleted {
                execution_id,
                event_id,
                result,
            }
        }),
        (exec(), ev(), error_details()).prop_map(|(execution_id, event_id, error)| {
            OrchestratorMessage::SubOrchestrationFailed {
                execution_id,
                event_id,
                error,
            }
        }),
        (t(), t()).prop_map(|(name, data)| OrchestratorMessage::ExternalEvent { name, data }),
        (t(), t()).prop_map(|(queue, data)| OrchestratorMessage::QueueMessage { queue, data }),
        t().prop_map(|reason| OrchestratorMessage::CancelRequested { reason }),
    ]
}

/// A change to a real history.
#[derive(Debug, Clone)]
enum Mutation {
    ReplaceKind(usize, EventKind),
    SetSource(usize, Option<u64>),
    Duplicate(usize),
    Delete(usize),
    Insert(usize, EventKind),
    Swap(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = || any::<prop::sample::Index>().prop_map(|x| x.index(1 << 16));
    prop_oneof![
        (i(), event_kind()).prop_map(|(i, k)| Mutation::ReplaceKind(i, k)),
        (i(), prop::option::of(prop_oneof![0u64..60, Just(u64::MAX)]))
            .prop_map(|(i, s)| Mutation::SetSource(i, s)),
        i().prop_map(Mutation::Duplicate),
        i().prop_map(Mutation::Delete),
        (i(), event_kind()).prop_map(|(i, k)| Mutation::Insert(i, k)),
        (i(), i()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        i().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut events: Vec<Event>, mutations: &[Mutation], renumber: bool) -> Vec<Event> {
    for m in mutations {
        let len = events.len().max(1);
        match m.clone() {
            Mutation::ReplaceKind(i, kind) => {
                if let Some(e) = events.get_mut(i % len) {
                    e.kind = kind;
                }
            }
            Mutation::SetSource(i, source) => {
                if let Some(e) = events.get_mut(i % len) {
                    e.source_event_id = source;
                }
            }
            Mutation::Duplicate(i) => {
                if let Some(e) = events.get(i % len).cloned() {
                    events.insert(i % len, e);
                }
            }
            Mutation::Delete(i) => {
                if !events.is_empty() {
                    events.remove(i % len);
                }
            }
            Mutation::Insert(i, kind) => {
                let at = i % (events.len() + 1);
                events.insert(
                    at,
                    Event {
                        event_id: at as u64 + 1,
                        source_event_id: None,
                        timestamp_ms: 1_000_000,
                        kind,
                    },
                );
            }
            Mutation::Swap(a, b) => {
                if !events.is_empty() {
                    events.swap(a % len, b % len);
                }
            }
            Mutation::Truncate(n) => events.truncate(n % (len + 1)),
        }
    }
    if renumber {
        // Dense ids get the history past `decode_history`'s checks and into the engine.
        for (i, e) in events.iter_mut().enumerate() {
            e.event_id = i as u64 + 1;
        }
    }
    events
}

/// A wrong history: mutated from the corpus (usually) or generated from scratch.
fn wrong_history() -> impl Strategy<Value = (String, Vec<Event>)> {
    let mutated = (
        any::<prop::sample::Index>(),
        prop::collection::vec(mutation(), 0..5),
        prop::bool::weighted(0.85),
    )
        .prop_map(|(pick, mutations, renumber)| {
            let (name, history) = &corpus()[pick.index(corpus().len())];
            (name.clone(), apply(history.clone(), &mutations, renumber))
        });
    let generated = (
        prop::sample::select(NAMES.to_vec()),
        prop::collection::vec((prop::option::of(0u64..40), event_kind()), 0..30),
    )
        .prop_map(|(name, kinds)| {
            let events = kinds
                .into_iter()
                .enumerate()
                .map(|(i, (source_event_id, kind))| Event {
                    event_id: i as u64 + 1,
                    source_event_id,
                    timestamp_ms: 1_000_000 + i as u64,
                    kind,
                })
                .collect();
            (name.to_string(), events)
        });
    prop_oneof![4 => mutated, 1 => generated]
}

/// Stored text: valid encodings, encodings with their bytes mutated, and junk.
fn mutated_text(valid: String) -> impl Strategy<Value = String> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 0..4);
    (Just(valid), edits).prop_map(|(valid, edits)| {
        let mut bytes = valid.into_bytes();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                2 if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => bytes.truncate(i),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn stored_text(valid: impl Strategy<Value = String> + 'static) -> impl Strategy<Value = String> {
    let valid = valid.boxed();
    prop_oneof![
        3 => valid.clone(),
        3 => valid.prop_flat_map(mutated_text),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => prop::sample::select(vec!["", "{}", "null", "[]", "{\"type\":\"FromTheFuture\"}", "\"x\"", "1e999"])
            .prop_map(str::to_string),
    ]
}

fn history_records() -> impl Strategy<Value = Vec<HistoryRecord>> {
    let record = (
        // A stored id column is a SQL BIGINT: anything up to i64::MAX (see `STORED_MAX`).
        prop_oneof![0u64..40, Just(STORED_MAX), Just(STORED_MAX - 1)],
        stored_text((0u64..40, event_kind()).prop_map(|(id, kind)| {
            codec::encode_event(&Event {
                event_id: id,
                source_event_id: None,
                timestamp_ms: 7,
                kind,
            })
            .payload
        })),
    )
        .prop_map(|(event_id, payload)| HistoryRecord {
            event_id,
            kind: "Whatever".into(),
            payload,
        });
    prop_oneof![
        prop::collection::vec(record, 0..12),
        wrong_history().prop_map(|(_, h)| h.iter().map(codec::encode_event).collect()),
    ]
}

// ---- properties -------------------------------------------------------------------------------------

/// What `decode_history` promises about a history it accepts.
fn assert_valid(events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event_id, i as u64 + 1, "ids are dense");
        assert!(
            !e.kind.is_terminal() || i + 1 == events.len(),
            "nothing follows a terminal event"
        );
    }
    if let Some(first) = events.first() {
        assert!(matches!(first.kind, EventKind::OrchestrationStarted { .. }));
    }
}

/// Runs `test` on `cases` values of `strategy` (a shrunk counterexample fails the test), then
/// reports how many executions ran.
fn fuzz<S: Strategy>(
    what: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let executions = AtomicU64::new(0);
    let mut runner = TestRunner::new(config(default_cases));
    let result = runner.run(&strategy, |value| {
        executions.fetch_add(1, Ordering::Relaxed);
        // A panic inside is caught by proptest, shrunk, and reported as the failure.
        test(value)
    });
    if let Err(e) = result {
        panic!("{what}: {e}");
    }
    eprintln!(
        "fuzz {what}: {} executions, no panic",
        executions.load(Ordering::Relaxed)
    );
}

#[test]
fn decoders_never_panic_on_arbitrary_bytes() {
    let activity = r#"{"instance_id":"i","execution_id":1,"event_id":2,"name":"A","input":"x","orchestration_name":"O","orchestration_version":"1.0.0"}"#;
    let strategy = (
        history_records(),
        stored_text(message().prop_map(|m| codec::encode_message(&m))),
        stored_text(Just(activity.to_string())),
    );
    fuzz("decoders", 4_000, strategy, |(records, message, activity)| {
        if let Ok(events) = codec::decode_history(&records) {
            assert_valid(&events);
            // What decodes re-encodes to the same events.
            let again: Vec<HistoryRecord> = events.iter().map(codec::encode_event).collect();
            prop_assert_eq!(codec::decode_history(&again).ok(), Some(events));
        }
        if let Ok(decoded) = codec::decode_message(&message) {
            prop_assert_eq!(
                codec::decode_message(&codec::encode_message(&decoded)).ok(),
                Some(decoded)
            );
        }
        if let Ok(work) = codec::decode_activity(&activity) {
            prop_assert_eq!(
                codec::decode_activity(&codec::encode_activity(&work)).ok(),
                Some(work)
            );
        }
        Ok(())
    });
}

#[test]
fn replay_and_turns_of_wrong_histories_fail_cleanly() {
    let strategy = (
        wrong_history(),
        prop::collection::vec(message(), 0..6),
        prop::collection::vec((small_text(), small_text()), 0..3),
        any::<u64>(),
        any::<u64>(),
    );
    fuzz(
        "replay engine",
        3_000,
        strategy,
        |((name, history), messages, kv, now_ms, entropy)| {
            let handler = match registry().resolve(&name, None) {
                Some((_, h)) => h,
                None => handler("Sink"),
            };
            let kv = kv
                .into_iter()
                .map(|(key, value)| KvEntry {
                    key,
                    value,
                    updated_at_ms: 0,
                })
                .collect();
            let mut engine = ReplayEngine::new("fuzz", 1, handler, "1.0.0", kv);
            let replayed = engine.replay(&history);
            let base = history.len() as u64;
            let mut next = base + 1;
            for e in &replayed.new_events {
                prop_assert_eq!(e.event_id, next, "replay's own events continue the history");
                next += 1;
            }
            if replayed.status == TurnStatus::Running {
                if let Ok(turn) = engine.run_turn(messages, now_ms, entropy) {
                    for e in &turn.new_events {
                        prop_assert_eq!(e.event_id, next, "a turn's events continue the history");
                        next += 1;
                    }
                }
            }
            Ok(())
        },
    );
}

/// Everything `process_item` gets, as a provider might return it after something went wrong.
fn item() -> impl Strategy<Value = (OrchestrationItem, u32)> {
    let messages = prop::collection::vec(
        stored_text(message().prop_map(|m| codec::encode_message(&m)))
            .prop_map(|payload| StoredMessage { payload }),
        0..6,
    );
    (
        history_records(),
        messages,
        prop::sample::select(vec![
            InstanceStatus::Running,
            InstanceStatus::Completed,
            InstanceStatus::Failed,
        ]),
        prop_oneof![1u64..4, Just(0u64), Just(STORED_MAX)],
        0u32..14,
        1u32..12,
        prop::sample::select(NAMES.to_vec()),
        prop::collection::vec((small_text(), small_text()), 0..3),
    )
        .prop_map(
            |(history, messages, status, execution, attempt, max_attempts, name, kv)| {
                let item = OrchestrationItem {
                    instance_id: "fuzz-instance".into(),
                    lock_token: "token".into(),
                    attempt,
                    instance: InstanceInfo {
                        instance_id: "fuzz-instance".into(),
                        name: name.to_string(),
                        version: None,
                        current_execution_id: execution,
                        status,
                        output: None,
                        created_at_ms: 1,
                        updated_at_ms: 2,
                        parent_instance_id: None,
                    },
                    history,
                    messages,
                    kv_snapshot: kv
                        .into_iter()
                        .map(|(key, value)| KvEntry {
                            key,
                            value,
                            updated_at_ms: 1,
                        })
                        .collect(),
                    custom_status: CustomStatus::default(),
                };
                (item, max_attempts)
            },
        )
}

#[test]
fn the_turn_driver_acks_or_abandons_whatever_it_is_given() {
    let strategy = (item(), 0u64..u64::MAX / 2, any::<u64>(), any::<bool>());
    fuzz(
        "turn driver",
        3_000,
        strategy,
        |((item, max_attempts), now_ms, entropy, warm)| {
            let registry = registry();
            let options = TurnOptions {
                now_ms,
                entropy,
                max_attempts,
            };
            // A cached engine from a previous turn of the same (valid-looking) item, as the runtime keeps.
            let cached = if warm {
                match process_item(&item, &registry, None, &options) {
                    TurnDecision::Ack { engine, .. } => engine,
                    TurnDecision::Abandon { .. } => None,
                }
            } else {
                None
            };
            match process_item(&item, &registry, cached, &options) {
                TurnDecision::Ack { ack, .. } => {
                    let ids: Vec<u64> = ack.history.iter().map(|r| r.event_id).collect();
                    for pair in ids.windows(2) {
                        prop_assert_eq!(pair[1], pair[0] + 1, "an ack's events are consecutive: {:?}", ids);
                    }
                    // Every event an ack writes decodes, and its record carries the event's own id.
                    let kinds: BTreeSet<&str> = ack.history.iter().map(|r| r.kind.as_str()).collect();
                    for record in &ack.history {
                        let event = codec::decode_event(record).expect("the engine writes what it can read");
                        prop_assert_eq!(event.event_id, record.event_id);
                    }
                    prop_assert!(kinds.iter().all(|k| !k.is_empty()));
                }
                TurnDecision::Abandon { reason, .. } => {
                    prop_assert!(
                        reason.contains("fuzz-instance") || reason.contains("not registered"),
                        "{}",
                        reason
                    );
                }
            }
            Ok(())
        },
    );
}

/// The fuzz strategies above keep stored id columns within what a SQL store holds (`STORED_MAX`). A
/// third-party provider may still hand back any `u64`: ids at the very top must give an error or a
/// failed instance, not an arithmetic-overflow panic (which in the runtime escapes its panic guard,
/// because `fail_item`, the guard's fallback, computes the same `+ 1`).
#[test]
fn ids_at_the_top_of_u64_do_not_panic_the_turn_driver() {
    let registry = registry();
    let options = TurnOptions {
        now_ms: 1,
        entropy: 2,
        max_attempts: 3,
    };
    let start = codec::encode_message(&OrchestratorMessage::StartOrchestration {
        name: "Trivial".into(),
        version: None,
        input: "x".into(),
        parent: None,
    });
    let base = OrchestrationItem {
        instance_id: "top".into(),
        lock_token: "t".into(),
        attempt: 1,
        instance: InstanceInfo {
            instance_id: "top".into(),
            name: "Trivial".into(),
            version: None,
            current_execution_id: 1,
            status: InstanceStatus::Running,
            output: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            parent_instance_id: None,
        },
        history: Vec::new(),
        messages: vec![StoredMessage { payload: start }],
        kv_snapshot: Vec::new(),
        custom_status: CustomStatus::default(),
    };
    let mut top_event = base.clone();
    top_event.history = vec![HistoryRecord {
        event_id: u64::MAX,
        kind: "OrchestrationStarted".into(),
        payload: "{}".into(),
    }];
    let mut top_execution = base.clone();
    top_execution.instance.current_execution_id = u64::MAX;
    top_execution.history = vec![
        codec::encode_event(&Event {
            event_id: 1,
            source_event_id: None,
            timestamp_ms: 1,
            kind: EventKind::OrchestrationStarted {
                name: "Trivial".into(),
                version: "1.0.0".into(),
                input: "x".into(),
                parent: None,
                initial_custom_status: None,
            },
        }),
        codec::encode_event(&Event {
            event_id: 2,
            source_event_id: None,
            timestamp_ms: 1,
            kind: EventKind::OrchestrationContinuedAsNew {
                input: "y".into(),
                version: None,
            },
        }),
    ];
    top_execution.messages = vec![StoredMessage {
        payload: codec::encode_message(&OrchestratorMessage::ContinueAsNew {
            execution_id: u64::MAX,
            name: "Trivial".into(),
            version: None,
            input: "y".into(),
            parent: None,
            custom_status: None,
            carried: Vec::new(),
        }),
    }];
    let mut panics = Vec::new();
    for (case, item) in [
        ("event id u64::MAX", &top_event),
        ("execution id u64::MAX", &top_execution),
    ] {
        let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            process_item(item, &registry, None, &options)
        }));
        if let Err(panic) = turn {
            panics.push(format!("process_item with {case}: {}", panic_text(&panic)));
        }
        let failed = std::panic::catch_unwind(|| {
            duroxide_core::turn::fail_item(item, ErrorDetails::application("code panicked"))
        });
        if let Err(panic) = failed {
            panics.push(format!("fail_item with {case}: {}", panic_text(&panic)));
        }
    }
    assert!(
        panics.is_empty(),
        "the turn driver panicked:\n  {}",
        panics.join("\n  ")
    );
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
