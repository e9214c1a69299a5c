//! duroxide's SQLite provider: an embedded, zero-set-up store implementing `duroxide_core::Provider`.
//!
//! # Design
//!
//! * **One writer, no hand-offs.** One connection runs one transaction at a time, each operation
//!   inside `BEGIN IMMEDIATE … COMMIT`. A caller that finds it free runs its operation right away on
//!   its own thread (a tokio worker: these transactions take microseconds, less than a thread wake-up);
//!   callers that find it busy queue and wait without blocking their thread. The provider's own load
//!   therefore never meets "database is locked"; `busy_timeout` only guards against other processes.
//! * **Group commit.** Operations that queue while a transaction runs share the next one, run by the
//!   caller already at work, each in its own savepoint: a failing operation is rolled back alone, the
//!   others commit with one `COMMIT`. Replies are sent only after the commit. A caller that has run
//!   others' operations for about a millisecond hands that role to one of them.
//! * **Reads beside the writer.** Short client reads of a file database (status, custom status, KV,
//!   executions) run at once on a second connection in their own read transaction: WAL lets them
//!   proceed while a write transaction runs, and they see every commit made before they began.
//! * **Long work off the async threads.** Operations whose duration grows with the data (bulk deletes
//!   and prunes, history and list reads, metrics, very large acks) and, with [`Durability::Full`],
//!   every operation (each commit waits for an fsync) run on the writer's background thread instead.
//! * **Precise wake-ups.** New work wakes one waiting fetch, and a fetch that finds work while more is
//!   fetchable wakes the next, so idle dispatchers do not all look for the same item. (Waiting worker
//!   fetches with different tag filters or session routing are all woken, as any of them may be the
//!   one that can take the item.)
//! * **Durability.** File databases use WAL with `synchronous = NORMAL` by default, SQLite's standard
//!   pairing for WAL: a commit survives a process crash at once and a power loss from the next
//!   checkpoint on. Checkpoints run on a background connection so the writer rarely waits for their
//!   fsyncs (only for a short last pass that lets a long WAL start over). [`Durability::Full`] syncs every commit instead. In-memory databases
//!   ([`SqliteProvider::in_memory`]) run the same schema and transactions.
//! * **Schema.** Versioned, forward-only migrations recorded in `schema_migrations`; a database from a
//!   newer version is refused ([`OpenError::SchemaTooNew`]) before anything is written. Hot statements
//!   are checked against their query plans in the tests (index use, no sorts).
//! * **Routing without parsing.** Payloads are stored and returned verbatim; queues, instances,
//!   visibility times, sessions, tags and activity identities come from the explicit fields of the
//!   contract. A corrupt payload therefore never blocks anything: it is handed back, its attempt count
//!   grows, and the runtime decides it is poison.
//! * **Lock tokens** are a random 122-bit secret followed by the locked row's key, so acks find their
//!   row by primary key and no token index is written on every fetch and ack.
//! * **Long polls.** A fetch that finds nothing waits for an enqueue made through the same provider
//!   object, for the next stored due time (timer, expiring lease, backoff), for a commit by another
//!   process (noticed by the writer's background thread through `PRAGMA data_version` within
//!   ~100 ms), or for [`Provider::wake_all`](duroxide_core::Provider::wake_all).
//!
//! # Contract readings
//!
//! Where the `Provider` contract leaves room, this provider: orders instances by the visibility time of
//! their oldest message, and an abandon without delay moves the fetched messages behind work already
//! waiting (so a poison instance abandoned again and again cannot starve others); an abandon with a
//! delay keeps the whole instance unfetchable until then (so its messages stay in order); an empty
//! `InstanceFilter` is `InvalidInput` for bulk deletes and bulk prunes alike (`limit` alone counts as
//! a criterion); `prune_executions` on an unknown instance is `NotFound`, while reads of unknown
//! instances return `None` or empty lists; session leases are renewed only while they are live.
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
mod reader;
mod reads;
mod retention;
mod rows;
mod transaction;
mod turn_ack;
mod wakeups;
mod worker_queue;
mod writer;

pub use error::OpenError;
pub use migrations::LATEST_VERSION as SCHEMA_VERSION;
pub use options::{Durability, SqliteOptions};
pub use provider::SqliteProvider;
