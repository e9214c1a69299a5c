//! Instance changes reported to other processes (`Provider::watch_instance_changes`): two provider
//! objects on one schema stand for two processes. An ack that changes what a waiting client reads
//! (a terminal status, a custom status) reaches the other object's hooks after its commit, and a
//! client there wakes at once instead of at its next poll; other acks announce nothing, and
//! notifications the provider does not understand are ignored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duroxide_conformance::faults::{CallPhase, FaultConfig, FaultyProvider, HookAction, Op};
use duroxide_core::provider::{
    CustomStatusChange, ExecutionStatus, HistoryRecord, OrchestrationItem, Provider, TurnAck,
};
use duroxide_postgres::PostgresProvider;
use duroxide_runtime::{
    ActivityContext, ActivityRegistry, Client, OrchestrationContext, OrchestrationRegistry, Runtime,
    RuntimeOptions, Status,
};
use tokio::sync::Notify;

mod common;

const LOCK: Duration = Duration::from_secs(30);
/// How long a condition that should hold within milliseconds may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// A first turn that records one event and changes nothing a waiting client reads.
fn quiet_turn(item: &OrchestrationItem) -> TurnAck {
    TurnAck {
        execution_id: item.instance.current_execution_id,
        history: vec![HistoryRecord {
            event_id: 1,
            kind: "OrchestrationStarted".into(),
            payload: "{}".into(),
        }],
        name: Some("Orchestration".into()),
        version: Some("1.0.0".into()),
        ..TurnAck::default()
    }
}

fn completing_turn(item: &OrchestrationItem) -> TurnAck {
    TurnAck {
        status: Some(ExecutionStatus::Completed),
        output: Some("\"done\"".into()),
        ..quiet_turn(item)
    }
}

async fn fetch(p: &PostgresProvider) -> OrchestrationItem {
    p.fetch_orchestration_item(LOCK, Duration::from_secs(5))
        .await
        .expect("fetch")
        .expect("an instance with work")
}

/// Creates `instance` and commits one turn of it, `turn` building the ack.
async fn run_turn(p: &PostgresProvider, instance: &str, turn: fn(&OrchestrationItem) -> TurnAck) {
    p.create_instance(common::start(instance)).await.expect("create");
    let item = fetch(p).await;
    assert_eq!(item.instance_id, instance);
    p.ack_orchestration_item(&item.lock_token, turn(&item))
        .await
        .expect("ack");
}

/// A hook that counts calls per instance id, and lets a test wait for a count.
#[derive(Default)]
struct Heard {
    calls: Mutex<HashMap<String, u64>>,
    changed: Notify,
}

impl Heard {
    /// Registers a new counter on `provider`.
    fn on(provider: &PostgresProvider) -> Arc<Heard> {
        let heard = Arc::new(Heard::default());
        let hook = heard.clone();
        let reports = provider.watch_instance_changes(Arc::new(move |id: &str| {
            *hook.calls.lock().unwrap().entry(id.to_owned()).or_default() += 1;
            hook.changed.notify_waiters();
        }));
        assert!(reports, "PostgreSQL reports other processes' changes");
        heard
    }

    fn count(&self, instance: &str) -> u64 {
        self.calls.lock().unwrap().get(instance).copied().unwrap_or(0)
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.calls.lock().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Waits until `instance` was heard at least once; fails the test after [`PATIENCE`].
    async fn wait_for(&self, instance: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.count(instance) > 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("no change of {instance:?} was reported; heard {:?}", self.ids());
            }
        }
    }
}

/// Counts the client's completed reads, and lets a test wait until a number of them completed.
#[derive(Default)]
struct Reads {
    done: AtomicU64,
    changed: Notify,
}

impl Reads {
    async fn wait_until(&self, at_least: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.done.load(Ordering::SeqCst) >= at_least {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("the client did not read the instance within {PATIENCE:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_wakes_as_soon_as_another_process_completes_the_instance() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let runtime_side = common::connect(&schema).await;
    let client_side = common::connect(&schema).await;
    let heard = Heard::on(&client_side);
    // Reads pass through a transparent wrapper, so the test knows when the waiting client has read
    // the still-running instance and is waiting.
    let reads = Arc::new(Reads::default());
    let counter = reads.clone();
    let observed = FaultyProvider::new(Arc::new(client_side.clone()), FaultConfig::none(), 0).with_hook(
        Arc::new(move |op, phase| {
            if op == Op::ReadOrManage && phase == CallPhase::AfterCommit {
                counter.done.fetch_add(1, Ordering::SeqCst);
                counter.changed.notify_waiters();
            }
            HookAction::Continue
        }),
    );
    let client = Client::new(Arc::new(observed));

    let mut latencies = Vec::new();
    for n in 0..10 {
        let instance = format!("done-{n}");
        runtime_side
            .create_instance(common::start(&instance))
            .await
            .expect("create");
        let item = fetch(&runtime_side).await;
        let before = reads.done.load(Ordering::SeqCst);
        let waiting = {
            let (client, instance) = (client.clone(), instance.clone());
            tokio::spawn(async move {
                let state = client.wait_for_orchestration(&instance, PATIENCE).await;
                (state, Instant::now())
            })
        };
        // The wait read the instance (one read: status and custom status together) and saw it
        // running; only a report of the change or a poll can end it now.
        reads.wait_until(before + 1).await;
        if n == 0 {
            // Since changes are reported, the wait polls only as a safety net, not every millisecond.
            let first_read = Instant::now();
            reads.wait_until(before + 2).await;
            let gap = first_read.elapsed();
            assert!(gap >= Duration::from_millis(20), "polled again after {gap:?}");
        }
        runtime_side
            .ack_orchestration_item(&item.lock_token, completing_turn(&item))
            .await
            .expect("ack");
        let committed = Instant::now();
        let (state, returned) = waiting.await.expect("join");
        let state = state.expect("the wait ends");
        assert_eq!(state.status, Status::Completed);
        assert_eq!(state.output.as_deref(), Some("\"done\""));
        latencies.push(returned.saturating_duration_since(committed));
        heard.wait_for(&instance).await;
        assert_eq!(heard.count(&instance), 1, "one report per change");
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    eprintln!(
        "completion seen by the other object's client: p50 {p50:?}, max {:?}",
        latencies.last()
    );
    // Without reports the first safety-net poll comes ~25 ms after the first read.
    assert!(
        p50 < Duration::from_millis(10),
        "p50 {p50:?}: the client did not wake on the report"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_acks_that_change_what_waiters_read_are_reported() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let writer = common::connect(&schema).await;
    let other = common::connect(&schema).await;
    let heard = Heard::on(&other);
    let on_writer = Heard::on(&writer);

    run_turn(&writer, "quiet", quiet_turn).await;
    run_turn(&writer, "status", |item| TurnAck {
        custom_status: CustomStatusChange::Set(Some("busy".into())),
        ..quiet_turn(item)
    })
    .await;
    run_turn(&writer, "failed", |item| TurnAck {
        status: Some(ExecutionStatus::Failed),
        output: Some("boom".into()),
        ..quiet_turn(item)
    })
    .await;
    // Announcements leave in order, so once the last is heard any earlier one would have been.
    heard.wait_for("status").await;
    heard.wait_for("failed").await;
    assert_eq!(heard.ids(), ["failed", "status"], "the quiet turn was reported");
    // An object does not report its own changes (its process's runtime wakes local waiters).
    assert!(
        on_writer.ids().is_empty(),
        "heard its own changes: {:?}",
        on_writer.ids()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_it_does_not_understand_are_ignored() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let provider = common::connect(&schema).await;
    let heard = Heard::on(&provider);

    let raw = common::plain_client().await;
    let channel = format!("duroxide.{schema}");
    let garbage = [
        "",
        "garbage",
        "i",
        "i3",
        "i3:ab",
        "ix:abc",
        "i-1:a",
        "i99999999999999999999999:a",
        "i1:é",
        "o-1",
        "w",
        "\u{1}\u{7f}",
    ];
    for payload in garbage {
        raw.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .expect("notify");
    }
    // A well-formed report after them: once it is heard, the garbage before it was processed.
    raw.execute("SELECT pg_notify($1, $2)", &[&channel, &"i4:real"])
        .await
        .expect("notify");
    heard.wait_for("real").await;
    assert_eq!(heard.ids(), ["real"]);
    assert!(provider.stats().listening, "the listener survived the garbage");

    // The provider still works and still hears real changes.
    let writer = common::connect(&schema).await;
    run_turn(&writer, "after", completing_turn).await;
    heard.wait_for("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_reports_completions_to_a_client_on_another_provider_object() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let runtime_side = Arc::new(common::connect(&schema).await);
    let client_side = common::connect(&schema).await;
    let heard = Heard::on(&client_side);

    let mut activities = ActivityRegistry::new();
    activities
        .register("Greet", |_ctx: ActivityContext, name: String| async move {
            Ok(format!("Hello, {name}!"))
        })
        .expect("register the activity");
    let mut orchestrations = OrchestrationRegistry::new();
    orchestrations
        .register("Hello", |ctx: OrchestrationContext, name: String| async move {
            let greeting = ctx.schedule_activity("Greet", name).await?;
            Ok(greeting)
        })
        .expect("register the orchestration");
    let runtime = Runtime::start(
        runtime_side.clone(),
        activities,
        orchestrations,
        RuntimeOptions::default(),
    )
    .await
    .expect("the runtime starts");
    let client = Client::new(Arc::new(client_side.clone()));

    for n in 0..5 {
        let instance = format!("hello-{n}");
        client
            .start_orchestration(&instance, "Hello", "you")
            .await
            .expect("start");
        let state = client
            .wait_for_orchestration(&instance, PATIENCE)
            .await
            .expect("completes");
        assert_eq!(state.status, Status::Completed, "{:?}", state.error);
        heard.wait_for(&instance).await;
        // The turn that scheduled the activity changed nothing a waiter reads; only the completion
        // was reported.
        assert_eq!(heard.count(&instance), 1, "{instance}");
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}
