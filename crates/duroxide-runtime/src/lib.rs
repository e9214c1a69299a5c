//! The duroxide runtime and client: dispatchers that run orchestrations and activities from a
//! provider, and the API applications use to start, signal, observe and manage instances.
//!
//! ```no_run
//! # async fn demo(provider: std::sync::Arc<dyn duroxide_core::Provider>) -> anyhow::Result<()> {
//! use std::time::Duration;
//! use duroxide_runtime::{ActivityContext, ActivityRegistry, Client, Runtime, RuntimeOptions};
//! use duroxide_core::{OrchestrationContext, OrchestrationRegistry};
//!
//! let mut activities = ActivityRegistry::new();
//! activities.register("Greet", |_ctx: ActivityContext, name: String| async move { Ok(format!("Hello, {name}!")) })?;
//! let mut orchestrations = OrchestrationRegistry::new();
//! orchestrations.register("Hello", |ctx: OrchestrationContext, name: String| async move {
//!     ctx.schedule_activity("Greet", name).await
//! })?;
//! let runtime = Runtime::start(provider.clone(), activities, orchestrations, RuntimeOptions::default()).await?;
//! let client = Client::new(provider);
//! client.start_orchestration("hello-1", "Hello", "World").await?;
//! let state = client.wait_for_orchestration("hello-1", Duration::from_secs(5)).await?;
//! assert_eq!(state.output.as_deref(), Some("Hello, World!"));
//! runtime.shutdown(Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod activity;
mod cache;
mod cancel;
mod client;
mod dispatch_activities;
mod dispatch_orchestrations;
mod logging;
mod metrics;
mod notify;
mod options;
mod pending_acks;
mod runtime;
mod sessions;

pub use activity::{
    ActivityContext, ActivityFuture, ActivityHandler, ActivityRegistry, ActivityRegistryError,
};
pub use client::{Client, ClientError, OrchestrationState, Status};
pub use metrics::MetricsSnapshot;
pub use options::{validate_tag_filter, LogFormat, OptionsError, RuntimeOptions};
pub use runtime::{Runtime, RuntimeError};

pub use duroxide_core::provider::TagFilter;
pub use duroxide_core::{OrchestrationContext, OrchestrationRegistry, RetryPolicy};
