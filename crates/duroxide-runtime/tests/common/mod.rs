//! Shared set-up for the runtime's end-to-end tests: providers, registries, runtimes and condition waits.
#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use duroxide_core::{Event, OrchestrationContext, OrchestrationRegistry, Provider};
use duroxide_runtime::{
    ActivityContext, ActivityRegistry, Client, OrchestrationState, Runtime, RuntimeOptions, Status,
};
use duroxide_sqlite::SqliteProvider;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Upper bound for any wait in these tests. Reaching it is a failure, never a pacing device.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How long `Env::shutdown` lets in-flight work drain; idle runtimes return long before.
pub const SHUTDOWN: Duration = Duration::from_secs(5);

/// A private in-memory SQLite database.
pub fn memory() -> Arc<dyn Provider> {
    Arc::new(SqliteProvider::in_memory().expect("in-memory SQLite opens"))
}

/// A SQLite database file (created when missing), for tests where persistence across runtimes matters.
pub fn file(path: &Path) -> Arc<dyn Provider> {
    Arc::new(SqliteProvider::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display())))
}

/// Test options: the documented defaults (tests that need more say so where they build options).
pub fn options() -> RuntimeOptions {
    RuntimeOptions::default()
}

/// Activity and orchestration registrations of one test, kept so a restarted runtime gets the same code.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    pub activities: ActivityRegistry,
    pub orchestrations: OrchestrationRegistry,
}

impl Registries {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an activity; the closure's argument types are inferred, unlike with the raw registry.
    pub fn activity<F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(ActivityContext, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        self.activities
            .register(name, f)
            .unwrap_or_else(|e| panic!("registering activity {name}: {e}"));
        self
    }

    /// Registers version 1.0.0 of an orchestration.
    pub fn orchestration<F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(OrchestrationContext, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        self.orchestrations
            .register(name, f)
            .unwrap_or_else(|e| panic!("registering orchestration {name}: {e}"));
        self
    }

    pub fn orchestration_versioned<F, Fut>(&mut self, name: &str, version: &str, f: F) -> &mut Self
    where
        F: Fn(OrchestrationContext, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        self.orchestrations
            .register_versioned(name, version, f)
            .unwrap_or_else(|e| panic!("registering orchestration {name} {version}: {e}"));
        self
    }
}

/// Starts a runtime with copies of the registrations.
pub async fn runtime(provider: &Arc<dyn Provider>, reg: &Registries, options: RuntimeOptions) -> Runtime {
    Runtime::start(
        provider.clone(),
        reg.activities.clone(),
        reg.orchestrations.clone(),
        options,
    )
    .await
    .expect("runtime starts")
}

/// A provider, a client on it and one runtime: what most tests need.
pub struct Env {
    pub provider: Arc<dyn Provider>,
    pub client: Client,
    pub runtime: Runtime,
}

impl Env {
    /// A runtime with default options on a fresh in-memory database.
    pub async fn memory(reg: &Registries) -> Env {
        Env::start(memory(), reg, options()).await
    }

    pub async fn start(provider: Arc<dyn Provider>, reg: &Registries, options: RuntimeOptions) -> Env {
        let runtime = runtime(&provider, reg, options).await;
        Env {
            client: Client::new(provider.clone()),
            provider,
            runtime,
        }
    }

    pub async fn completed(&self, instance_id: &str) -> String {
        completed(&self.client, instance_id).await
    }

    pub async fn failed(&self, instance_id: &str) -> String {
        failed(&self.client, instance_id).await
    }

    pub async fn history(&self, instance_id: &str, execution_id: u64) -> Vec<Event> {
        history(&self.client, instance_id, execution_id).await
    }

    pub async fn shutdown(self) {
        self.runtime.shutdown(SHUTDOWN).await;
    }
}

/// Waits for the instance to end and returns its state.
pub async fn terminal(client: &Client, instance_id: &str) -> OrchestrationState {
    client
        .wait_for_orchestration(instance_id, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("waiting for {instance_id}: {e}"))
}

/// Waits for the instance to complete and returns its output; any other end fails the test.
pub async fn completed(client: &Client, instance_id: &str) -> String {
    let state = terminal(client, instance_id).await;
    assert_eq!(
        state.status,
        Status::Completed,
        "{instance_id} did not complete: {state:?}"
    );
    state.output.unwrap_or_default()
}

/// Waits for the instance to fail and returns its error text.
pub async fn failed(client: &Client, instance_id: &str) -> String {
    let state = terminal(client, instance_id).await;
    assert_eq!(
        state.status,
        Status::Failed,
        "{instance_id} did not fail: {state:?}"
    );
    state.error.unwrap_or_default()
}

pub async fn history(client: &Client, instance_id: &str, execution_id: u64) -> Vec<Event> {
    client
        .read_execution_history(instance_id, execution_id)
        .await
        .unwrap_or_else(|e| panic!("reading history of {instance_id} execution {execution_id}: {e}"))
}

/// The type names of a history, in order.
pub fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

/// Polls `condition` every 10 ms until it holds; panics naming `what` after `PATIENCE`.
/// For conditions the client has no dedicated wait for (history contents, counters).
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the current execution of the instance has recorded an event of type `kind`.
pub async fn recorded(client: &Client, instance_id: &str, kind: &str) {
    eventually(&format!("{instance_id} records {kind}"), || async {
        let Ok(info) = client.get_instance_info(instance_id).await else {
            return false;
        };
        let events = client
            .read_execution_history(instance_id, info.current_execution_id)
            .await
            .unwrap_or_default();
        events.iter().any(|e| e.kind.name() == kind)
    })
    .await;
}

/// A one-way latch activities wait on, so a test decides when they may finish.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(AtomicBool, Notify)>);

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn open(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }

    pub fn is_open(&self) -> bool {
        self.0 .0.load(Ordering::SeqCst)
    }

    pub async fn wait(&self) {
        loop {
            // Registered before checking, so an `open` between the check and the wait is not lost.
            let notified = self.0 .1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_open() {
                return;
            }
            notified.await;
        }
    }
}

/// Wall-clock epoch milliseconds, comparable with history timestamps.
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
