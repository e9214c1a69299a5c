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
//!
//! # Inline activities
//!
//! A turn that only schedules activities changes nothing anyone else reads. When the orchestration
//! waits for nothing but activities (no timer, event, queue message or child that could arrive
//! meanwhile and must be taken first), and this runtime can
//! run those activities (untagged, without a session, registered here) and their recent runs were
//! short (a couple of milliseconds; an activity's first run always goes through the worker queue),
//! the orchestration dispatcher runs them itself while it still holds the instance, runs the next
//! turn on their results, and commits the turns as one. A chain of short activities then costs one
//! commit instead of a stored work item, a fetch and a completion per activity, and so does a
//! fan-out of them: it runs as many at a time as `worker_concurrency` has free, the next starting
//! as one ends. The recorded history holds the same events (a fan-out's results in the order of its
//! calls). What differs:
//!
//! - Until the chain commits nothing of it is stored. A crash in between loses those turns; the
//!   instance replays from its stored history and the activities run again (they are at-least-once
//!   in any case).
//! - A chain holds the instance for at most 100 ms and 64 turns (and a quarter of
//!   `orchestrator_lock_timeout`), so events and cancellations reach it that much later at most.
//! - An activity still running after `inline_activity_wait` (20 ms) is not run twice: the results
//!   that came in so far are taken by the next turn, the turns commit with the other activities'
//!   work items, and the worker that fetches the running one's item takes that execution's result
//!   (if the next turn no longer wants it, having lost a race, it is cancelled instead). Inline
//!   activities count against `worker_concurrency`.
//! - `MetricsSnapshot::activity_inline_runs` counts them; `inline_activity_wait = 0` turns them off.

mod activity;
mod cache;
mod cancel;
mod client;
mod dispatch_activities;
mod dispatch_orchestrations;
mod inline;
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
