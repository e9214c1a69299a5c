//! The checks, one module per category of the provider contract; each `pub async fn` is one check.

pub mod atomic_ack;
pub mod attempts;
pub mod custom_status;
pub mod events;
pub mod executions;
pub mod instance_locks;
pub mod kv;
pub mod lock_expiry;
pub mod management;
pub mod orchestrator_queue;
pub mod peek_lock;
pub mod sessions;
pub mod tags;
pub mod timers;
pub mod wakeups;
pub mod worker_queue;
