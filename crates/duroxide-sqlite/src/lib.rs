//! duroxide's SQLite provider: an embedded, zero-set-up store implementing `duroxide_core::Provider`.
//!
//! # Design
//!
//! * **One writer.** A dedicated thread owns the only connection; every operation is a closure sent to
//!   it and run inside `BEGIN IMMEDIATE … COMMIT` (see [`writer`](self) notes in the source). The
//!   provider's own load therefore never meets "database is locked"; `busy_timeout` guards against
//!   other processes on the same file. Operations that queue up meanwhile share one transaction, each
//!   in its own savepoint (group commit), so a failed operation never takes others down with it.
//! * **Durability.** File databases use WAL with `synchronous = NORMAL`, SQLite's standard pairing for
//!   WAL: a commit survives a process crash at once and a power loss from the next checkpoint on.
//!   In-memory databases ([`SqliteProvider::in_memory`]) run the same schema and transactions.
//! * **Schema.** Versioned, forward-only migrations recorded in `schema_migrations`; a database from a
//!   newer version is refused ([`OpenError::SchemaTooNew`]) before anything is written.
//! * **Routing without parsing.** Payloads are stored and returned verbatim; queues, instances,
//!   visibility times, sessions, tags and activity identities come from the explicit fields of the
//!   contract. A corrupt payload therefore never blocks anything: it is handed back, its attempt count
//!   grows, and the runtime decides it is poison.
//! * **Long polls.** A fetch that finds nothing waits for an enqueue made through the same provider
//!   object, for the next stored due time (timer, expiring lease, backoff), for a commit by another
//!   process (noticed by the idle writer), or for [`Provider::wake_all`](duroxide_core::Provider::wake_all).
//!
//! # Example
//!
//! ```no_run
//! use duroxide_sqlite::SqliteProvider;
//!
//! let provider = SqliteProvider::open("sqlite://data/app.db")?;
//! let scratch = SqliteProvider::in_memory()?;
//! # let _ = (provider, scratch);
//! # Ok::<(), duroxide_sqlite::OpenError>(())
//! ```

mod checkpointer;
mod clock;
mod connection;
mod error;
mod location;
mod lock_token;
mod management;
mod migrations;
mod options;
mod orchestrator_queue;
mod provider;
#[cfg(test)]
mod query_plans;
mod reads;
mod retention;
mod rows;
mod turn_ack;
mod wakeups;
mod worker_queue;
mod writer;

pub use error::OpenError;
pub use migrations::LATEST_VERSION as SCHEMA_VERSION;
pub use options::{Durability, SqliteOptions};
pub use provider::SqliteProvider;
