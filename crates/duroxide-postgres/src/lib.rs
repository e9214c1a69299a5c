//! duroxide's PostgreSQL provider: many processes, one database, nothing lost.
//!
//! # Design
//!
//! * **One statement per fetch and per ack.** The hot operations are PL/pgSQL functions installed by
//!   the migrations; a fetch (lock the next instance, stamp its messages, read history and KV) and a
//!   turn's whole ack (history, metadata, KV, worker items, messages, cancellations, lock release) are
//!   each one prepared statement. Acks pass their parts as arrays, never as parsed payloads: the
//!   provider stores what it is given.
//! * **Durable where it shows.** Creates, enqueues, and acks that change what a client or another
//!   instance can see (status, output, custom status, KV, messages to other instances) are durable
//!   before they return and before anyone can read them. Fetches, abandons and, by default
//!   ([`Durability::Normal`]), acks that only advance their own instance commit without waiting for
//!   their WAL flush (`synchronous_commit = off` for that transaction only): a lock or an attempt
//!   count lost in a server crash is soft state (the holder's ack fails with `LockLost` and the turn
//!   is redone), and lost progress is redone from the stored history. [`Durability::Full`] makes
//!   every ack wait for its flush.
//! * **Few round trips under load.** On a busy server a round trip costs more than the statement in
//!   it. Single statements share a few connections and concurrent ones are pipelined (`mux` in the
//!   source); concurrent acks share one transaction and one WAL flush (group commit, `batch`), and an
//!   ack that fails there runs again alone, so it never fails another. A batch's `BEGIN` … `COMMIT`
//!   goes out in one piece, so no other statement on its connection runs inside it. Transactions of several
//!   statements (deletes, pruning) and scans over whole tables use pooled connections of their own.
//! * **Fetches that arrive together share a query.** While a fetch query runs, fetches of the same
//!   kind that arrive wait for it and then go as one query that leases up to that many items (one
//!   summary row says whether more is fetchable), so a busy queue is fetched a batch per round trip.
//!   A look that sees more work lets every waiting fetch look, since their looks are batched.
//! * **Work handed over, not fetched.** An ack that makes work for this provider object's idle
//!   fetches stores it already leased to them, and they get it when the ack commits instead of
//!   querying for it: a turn's ack leases its untagged, session-less work items to idle worker
//!   fetches, and an activity's ack locks the instance its completion goes to (when no turn of it
//!   runs) for an idle orchestration fetch, as a create does with its new instance (a client that
//!   shares the provider object with a runtime). Under load, when no fetch is idle, these lock it
//!   anyway for a small stock that the next orchestration fetch takes before it looks (two items for
//!   each fetch there was at once, filled only while fetches run, handed back after half a second or
//!   when the runtime stops), and a fetch query leases a few more queued instances for it. A work
//!   fetch query likewise leases up to sixteen more queued plain items (untagged, session-less; it
//!   stops at the first item that is not, so queue order holds) for a stock of work items that the
//!   next worker fetches take (migration 0007): in a fan-out each worker slot paid a query after
//!   every activity. Work whose fetch went away is handed back at once, and a
//!   hand-back does not count as an attempt. A fetch never starts a look while an ack promises it an
//!   item, and one woken for a look it then does not make (it took a handed or stocked item) passes
//!   the wake-up on, so no announced work waits for the recheck
//!   ([`ProviderStats::found_by_recheck`]). [`ProviderStats::work_items_handed`] and
//!   [`ProviderStats::turns_handed`] count what was handed.
//! * **No wake-up for a locked instance.** An activity's result for an instance this object holds
//!   locked for a turn (fetched, stocked, or with its ack in flight) wakes no fetch, which would only
//!   find it locked: the turn's end announces it, and an ack that leaves messages waiting keeps
//!   results deferring for the moment its wake-up's fetch takes to lock the instance again
//!   (`held_turns` in the source; [`ProviderStats::results_deferred`]). In a fan-out this removed
//!   about three empty fetch queries per turn, each a scan of the queue's visible messages.
//! * **Flat functions on the hot path.** A turn's ack and an activity's plain completion are each
//!   one PL/pgSQL function without nested function calls (migration 0004): a nested call applied and
//!   restored its settings and started another executor: about a third of an ack's server time in
//!   a chain of activities (pg_stat_statements). The plain completions that one batch of acks
//!   carries go as one call taking arrays (migration 0005), since most of a call's time is the call
//!   itself; [`ProviderStats::batch_reruns`] counts batches that failed as a whole.
//! * **No history the runtime holds.** Every lock secret a provider object makes starts with its own
//!   8 random bytes, which its connections name in the setting `duroxide.history_owner`. When the
//!   instance a query locks was last acked under that prefix, the query returns only the stored
//!   history's length (migration 0006), and the provider hands the turn over without its history
//!   when the fetching runtime's cache holds exactly that length, or reads the history itself when
//!   not. A history another provider object (another process) wrote last comes whole, so a turn's
//!   cost does not grow with its history while one runtime keeps running the instance: a fan-out of
//!   500 activities read about 30,000 history rows over its turns before.
//! * **Claims that never wait and never miss.** Candidates are locked with `FOR NO KEY UPDATE SKIP
//!   LOCKED`, so concurrent fetchers move on to the next free instance or item instead of blocking or
//!   reporting "no work". Session claims re-check ownership atomically.
//! * **Fetches read only what is visible.** Both queues are walked in visibility order through an
//!   index (the worker queue since migration 0008), and the next due time comes from that index's
//!   first delayed row, so messages and items waiting out a delay (timers, backoffs) cost a fetch
//!   nothing: before, 20,000 items backing off made each work fetch read all of them (8.7 ms).
//! * **One clock.** Leases, visibility and timestamps use the database clock at millisecond precision,
//!   so hosts with skewed clocks still agree on who holds a lock.
//! * **Idempotent acks.** The instance remembers the last committed ack's token and fingerprint; the
//!   same ack repeated after a lost reply succeeds instead of failing the turn. What an ack with a
//!   lost reply leased for this object's fetches (they never got it) is handed back when the ack is
//!   repeated, rather than left locked until its lease runs out (`unsettled` in the source).
//! * **Wake-ups, not polling.** A dedicated listener connection per provider object LISTENs on the
//!   schema's channel; writes announce themselves to local fetches at once and to other processes
//!   with `pg_notify`, saying how many items they made fetchable, and each item wakes one waiting
//!   fetch, not all. A turn's timer wakes no local fetch: it brings their next look forward to its
//!   due time instead. After a look that left nothing fetchable a queue is known empty until an
//!   announcement, a stored or hinted due time or a two-second recheck, so an idle runtime issues
//!   about one query per queue every two seconds (see `wakeups` and `listener` in the source for why
//!   NOTIFY is sent after the commit). Acks that change an instance's status or custom status announce its id
//!   the same way, so a client waiting in another process wakes at once
//!   (`Provider::watch_instance_changes`). Listeners say hello and ping every ten seconds, and an
//!   object that no other object listens beside sends no NOTIFY for its writes
//!   ([`ProviderStats::notifying`]; `presence` in the source).
//! * **Queues stay small.** Queue rows live for moments and leave dead index entries that every claim
//!   would step over; the provider vacuums the two queue tables itself after every few thousand rows
//!   it deleted (`maintenance` in the source), since autovacuum comes by about once a minute.
//! * **Schema.** All objects live in one schema (default [`DEFAULT_SCHEMA`]), validated and always
//!   quoted. Versioned, forward-only migrations run in one transaction under an advisory lock, so many
//!   processes can start at once; a schema from a newer version is refused
//!   ([`ConnectError::SchemaTooNew`]).
//! * **Errors.** Lost connections, serialization failures, deadlocks and server restarts are
//!   `Retryable`; the pool replaces broken connections, and the listener reconnects with backoff.
//!
//! TLS is not built in: connect over a trusted network or a local socket.
//!
//! # Example
//!
//! ```no_run
//! use duroxide_postgres::PostgresProvider;
//!
//! # async fn example() -> Result<(), duroxide_postgres::ConnectError> {
//! let provider = PostgresProvider::connect("postgres://app:secret@db.internal:5432/app").await?;
//! let tenant = PostgresProvider::connect_with_schema("postgres://app:secret@db.internal/app", "tenant_7").await?;
//! # let _ = (provider, tenant);
//! # Ok(())
//! # }
//! ```

mod batch;
mod coalesce;
mod connection;
mod db;
mod driver_thread;
mod durability;
mod error;
mod fingerprint;
mod handoff;
mod held_turns;
mod listener;
mod lock_token;
mod maintenance;
mod management;
mod migrations;
mod mux;
mod orchestrator_queue;
mod presence;
mod provider;
mod reads;
mod retention;
mod rows;
mod schema;
mod turn_ack;
mod unsettled;
mod wakeups;
mod worker_queue;

pub use durability::Durability;
pub use error::ConnectError;
pub use migrations::LATEST_VERSION as SCHEMA_VERSION;
pub use provider::{PostgresOptions, PostgresProvider, ProviderStats};
pub use schema::DEFAULT_SCHEMA;
