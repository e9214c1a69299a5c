//! Activities: the handler trait, the registry, and the context an activity runs with.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::cancel::CancelSignal;
use duroxide_core::message::ActivityWork;
use duroxide_core::provider::Provider;

use crate::client::Client;

/// The future an activity returns: its result, or an error message recorded as its failure.
pub type ActivityFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Code that runs one activity. Runs at least once per scheduling; make it idempotent.
pub trait ActivityHandler: Send + Sync + 'static {
    fn invoke(&self, ctx: ActivityContext, input: String) -> ActivityFuture;
}

impl<F, Fut> ActivityHandler for F
where
    F: Fn(ActivityContext, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    fn invoke(&self, ctx: ActivityContext, input: String) -> ActivityFuture {
        Box::pin(self(ctx, input))
    }
}

/// Activities by name.
#[derive(Default, Clone)]
pub struct ActivityRegistry {
    handlers: HashMap<String, Arc<dyn ActivityHandler>>,
}

impl fmt::Debug for ActivityRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("ActivityRegistry").field("names", &names).finish()
    }
}

/// Registering an activity failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivityRegistryError {
    #[error("activity name must not be empty")]
    EmptyName,
    #[error("activity {0:?} is already registered")]
    Duplicate(String),
    #[error("activity names starting with \"__duroxide\" are reserved ({0:?})")]
    Reserved(String),
}

impl ActivityRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(
        &mut self,
        name: &str,
        handler: impl ActivityHandler,
    ) -> Result<(), ActivityRegistryError> {
        self.register_arc(name, Arc::new(handler))
    }

    pub fn register_arc(
        &mut self,
        name: &str,
        handler: Arc<dyn ActivityHandler>,
    ) -> Result<(), ActivityRegistryError> {
        if name.is_empty() {
            return Err(ActivityRegistryError::EmptyName);
        }
        if name.starts_with("__duroxide") {
            return Err(ActivityRegistryError::Reserved(name.to_string()));
        }
        if self.handlers.contains_key(name) {
            return Err(ActivityRegistryError::Duplicate(name.to_string()));
        }
        self.handlers.insert(name.to_string(), handler);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn ActivityHandler>> {
        self.handlers.get(name).cloned()
    }
}

/// What an activity knows about itself, and its way to see cancellation.
#[derive(Clone)]
pub struct ActivityContext {
    pub(crate) work: Arc<ActivityWork>,
    pub(crate) worker_id: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) cancel: CancelSignal,
    pub(crate) provider: Arc<dyn Provider>,
}

impl fmt::Debug for ActivityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityContext")
            .field("instance_id", &self.work.instance_id)
            .field("activity_name", &self.work.name)
            .field("activity_id", &self.work.event_id)
            .finish_non_exhaustive()
    }
}

impl ActivityContext {
    pub fn instance_id(&self) -> &str {
        &self.work.instance_id
    }
    pub fn execution_id(&self) -> u64 {
        self.work.execution_id
    }
    pub fn orchestration_name(&self) -> &str {
        &self.work.orchestration_name
    }
    pub fn orchestration_version(&self) -> &str {
        &self.work.orchestration_version
    }
    pub fn activity_name(&self) -> &str {
        &self.work.name
    }
    /// The scheduling event id: unique within the execution.
    pub fn activity_id(&self) -> u64 {
        self.work.event_id
    }
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
    pub fn session_id(&self) -> Option<&str> {
        self.work.session_id.as_deref()
    }
    pub fn tag(&self) -> Option<&str> {
        self.work.tag.as_deref()
    }
    /// 1 on the first run, higher when the item was handed out again (lease expiry, crash).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// True once the orchestration no longer wants the result (lost a race, ended, cancelled).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
    /// Resolves when the activity is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
    /// A client on the same provider (to start orchestrations, raise events, ...).
    pub fn get_client(&self) -> Client {
        Client::new(self.provider.clone())
    }

    pub fn trace_info(&self, message: &str) {
        tracing::info!(target: "duroxide::activity", instance_id = %self.work.instance_id, activity_name = %self.work.name, activity_id = self.work.event_id, worker_id = %self.worker_id, "{message}");
    }
    pub fn trace_warn(&self, message: &str) {
        tracing::warn!(target: "duroxide::activity", instance_id = %self.work.instance_id, activity_name = %self.work.name, activity_id = self.work.event_id, worker_id = %self.worker_id, "{message}");
    }
    pub fn trace_error(&self, message: &str) {
        tracing::error!(target: "duroxide::activity", instance_id = %self.work.instance_id, activity_name = %self.work.name, activity_id = self.work.event_id, worker_id = %self.worker_id, "{message}");
    }
    pub fn trace_debug(&self, message: &str) {
        tracing::debug!(target: "duroxide::activity", instance_id = %self.work.instance_id, activity_name = %self.work.name, activity_id = self.work.event_id, worker_id = %self.worker_id, "{message}");
    }
}
