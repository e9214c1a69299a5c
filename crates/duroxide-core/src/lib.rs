//! Pure core of duroxide: history model, replay engine, orchestration context and the Provider trait.
//!
//! Architecture invariant: this crate performs no I/O, reads no clock and draws no randomness. Time and
//! entropy enter as arguments of [`engine::ReplayEngine`]; everything else is a function of history.

pub mod codec;
pub mod error;
pub mod history;
pub mod limits;
pub mod message;
pub mod provider;

pub use error::{ErrorDetails, ErrorKind, NondeterminismError};
pub use history::{CarriedMessage, Event, EventKind, ParentLink};
pub use message::{ActivityWork, OrchestratorMessage};
pub use provider::Provider;
