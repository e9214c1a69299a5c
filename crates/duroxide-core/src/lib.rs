//! Pure core of duroxide: history model, replay engine, orchestration context and the Provider trait.
//!
//! Architecture invariant: this crate performs no I/O, reads no clock and draws no randomness. Time and
//! entropy enter as arguments of [`engine::ReplayEngine`]; everything else is a function of history.

pub mod codec;
pub mod compose;
pub mod context;
pub mod engine;
pub mod error;
pub mod history;
pub mod limits;
pub mod message;
pub mod provider;
pub mod registry;
pub mod retry;
pub mod turn;

#[cfg(feature = "testing")]
pub mod testing;

pub use compose::{join, join2, select, select2, Either};
pub use context::{ActivityOptions, DurableFuture, OrchestrationContext};
pub use engine::{Action, ReplayEngine, TurnOutput, TurnStatus};
pub use error::{ErrorDetails, ErrorKind, NondeterminismError};
pub use history::{CarriedMessage, Event, EventKind, ParentLink};
pub use message::{ActivityWork, OrchestratorMessage};
pub use provider::Provider;
pub use registry::{OrchestrationHandler, OrchestrationRegistry};
pub use retry::{Backoff, RetryPolicy};
