//! The runtime: starts the orchestration and activity dispatchers over a provider, and stops them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide_core::provider::{ActivityRef, Provider};
use duroxide_core::OrchestrationRegistry;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::activity::ActivityRegistry;
use crate::cache::InstanceCache;
use crate::cancel::CancelSignal;
use crate::inline::Inline;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::options::{OptionsError, RuntimeOptions};
use crate::sessions::SessionTracker;
use crate::{dispatch_activities, dispatch_orchestrations, logging};

/// State shared by all dispatcher tasks of one runtime.
pub(crate) struct Shared {
    pub provider: Arc<dyn Provider>,
    pub orchestrations: OrchestrationRegistry,
    pub activities: ActivityRegistry,
    pub options: RuntimeOptions,
    pub metrics: Metrics,
    pub cache: Arc<InstanceCache>,
    pub sessions: SessionTracker,
    /// Activities running in this process, so a cancellation committed here reaches them at once.
    pub running: Mutex<HashMap<ActivityRef, CancelSignal>>,
    /// One permit per concurrent activity (`worker_concurrency`), taken by worker slots and by
    /// activities the orchestration dispatcher runs inline.
    pub activity_permits: Arc<Semaphore>,
    /// Activities run inline by the orchestration dispatcher (`inline`).
    pub inline: Inline,
    /// Stop fetching new work.
    pub stop: CancelSignal,
    /// The shutdown timeout passed: hand back in-flight work now.
    pub hard_stop: CancelSignal,
    /// Identity of this runtime for session ownership and logs.
    pub node_id: String,
}

impl Shared {
    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Registers an activity running in this process, so a cancellation committed here reaches it.
    pub fn track_running(&self, activity: ActivityRef, cancel: CancelSignal) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(activity, cancel);
    }

    /// Forgets an activity that stopped running here.
    pub fn untrack_running(&self, activity: &ActivityRef) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(activity);
    }

    /// Signals in-process activities that their orchestration cancelled them.
    pub fn cancel_local(&self, activities: &[ActivityRef]) {
        if activities.is_empty() {
            return;
        }
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for activity in activities {
            if let Some(signal) = running.get(activity) {
                signal.cancel();
            }
        }
    }
}

/// Starting the runtime failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    InvalidOptions(#[from] OptionsError),
}

/// A running set of dispatchers. Dropping it without [`Runtime::shutdown`] stops fetching but does
/// not wait for in-flight work.
pub struct Runtime {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("node_id", &self.shared.node_id)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Validates the options and starts the dispatchers on the current tokio runtime.
    pub async fn start(
        provider: Arc<dyn Provider>,
        activities: ActivityRegistry,
        orchestrations: OrchestrationRegistry,
        options: RuntimeOptions,
    ) -> Result<Runtime, RuntimeError> {
        options.validate()?;
        logging::init(&options);
        let node_id = options
            .worker_node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", uuid::Uuid::new_v4()));
        let shared = Arc::new(Shared {
            provider,
            orchestrations,
            activities,
            metrics: Metrics::default(),
            cache: Arc::new(InstanceCache::new(
                options.cache_max_instances,
                options.cache_max_events,
            )),
            sessions: SessionTracker::new(options.max_sessions_per_runtime, options.session_idle_timeout),
            running: Mutex::new(HashMap::new()),
            activity_permits: Arc::new(Semaphore::new(options.worker_concurrency)),
            inline: Inline::default(),
            stop: CancelSignal::default(),
            hard_stop: CancelSignal::default(),
            node_id,
            options,
        });
        let mut tasks = Vec::new();
        for _ in 0..shared.options.orchestration_concurrency {
            tasks.push(tokio::spawn(dispatch_orchestrations::run(shared.clone())));
        }
        for _ in 0..shared.options.worker_concurrency {
            tasks.push(tokio::spawn(dispatch_activities::run(shared.clone())));
        }
        if shared.options.worker_concurrency > 0 {
            tasks.push(tokio::spawn(dispatch_activities::maintain_sessions(
                shared.clone(),
            )));
        }
        tracing::debug!(target: "duroxide::runtime", node_id = %shared.node_id, "runtime started");
        Ok(Runtime { shared, tasks })
    }

    /// The runtime's node id (session owner identity).
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// A copy of the runtime's counters.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Number of instances whose replayed state is cached.
    pub fn cached_instances(&self) -> usize {
        self.shared.cache.len()
    }

    /// Stops fetching, lets in-flight turns and activities finish for up to `timeout`, then hands back
    /// what is still running (abandoning its locks so other runtimes continue at once), releases
    /// sessions, and returns as soon as everything is idle.
    pub async fn shutdown(mut self, timeout: Duration) {
        self.shared.stop.cancel();
        self.shared.provider.wake_all();
        let tasks = std::mem::take(&mut self.tasks);
        let mut all = Box::pin(async {
            for task in tasks {
                let _ = task.await;
            }
        });
        if tokio::time::timeout(timeout, &mut all).await.is_err() {
            self.shared.hard_stop.cancel();
            self.shared.provider.wake_all();
            all.await;
        }
        let owner = self.shared.node_id.clone();
        for session in self.shared.sessions.drain() {
            let _ = self.shared.provider.release_session(&owner, &session).await;
        }
        tracing::debug!(target: "duroxide::runtime", node_id = %owner, "runtime stopped");
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        self.shared.hard_stop.cancel();
        self.shared.provider.wake_all();
    }
}
