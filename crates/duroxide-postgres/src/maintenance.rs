//! Vacuuming the queue tables while this provider deletes from them.
//!
//! Why: every message and work item is inserted, claimed and deleted within moments, and a deleted
//! row's index entries stay until a vacuum removes them. A claim walks its index from the oldest end,
//! so it steps over every entry deleted since the last vacuum: after a second of chained activities
//! on the reference machine that is thousands of entries per claim, and a claim cost several times
//! what it costs on a vacuumed table (a look at the worker queue 150 µs instead of 57 µs, growing
//! with the run). Autovacuum visits a database at most once per `autovacuum_naptime` (a minute by
//! default), far too seldom for a queue. So the provider vacuums the two queue tables itself after
//! every [`VACUUM_AFTER`] rows it deleted, in the background on a pooled connection: a few
//! milliseconds each time. `SKIP_LOCKED` skips a table another vacuum is working on, and the
//! tables' `vacuum_truncate = false` (migration 2) keeps vacuum from taking the exclusive lock that
//! truncation needs, which would stall every fetch and ack for a moment.
//!
//! A role that does not own the tables cannot vacuum them; PostgreSQL then warns and does nothing, and
//! the provider stops trying. Any other failure only postpones the next attempt.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::Db;

/// Queue rows deleted by this provider object between two vacuums.
pub(crate) const VACUUM_AFTER: u64 = 2_000;

/// After a failed vacuum, the next waits at least this long.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// When to vacuum, and whether one is running.
#[derive(Debug)]
pub(crate) struct Maintenance {
    deleted: AtomicU64,
    running: AtomicBool,
    /// The role may not vacuum the tables.
    disabled: AtomicBool,
    not_before: Mutex<Option<Instant>>,
    /// How many vacuums ran (for the counters).
    vacuums: AtomicU64,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            deleted: AtomicU64::new(0),
            running: AtomicBool::new(false),
            disabled: AtomicBool::new(false),
            not_before: Mutex::new(None),
            vacuums: AtomicU64::new(0),
        }
    }
}

impl Maintenance {
    /// Counts `rows` deleted from the queue tables; returns true when the caller should start a vacuum
    /// (see [`vacuum`]), which then runs alone until it is done.
    pub(crate) fn deleted(&self, rows: u64) -> bool {
        if self.disabled.load(Ordering::Relaxed) {
            return false;
        }
        if self.deleted.fetch_add(rows, Ordering::Relaxed) + rows < VACUUM_AFTER {
            return false;
        }
        let postponed = self
            .not_before
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| Instant::now() < at);
        !postponed && !self.running.swap(true, Ordering::SeqCst)
    }

    /// Vacuums that ran.
    pub(crate) fn vacuums(&self) -> u64 {
        self.vacuums.load(Ordering::Relaxed)
    }
}

/// Vacuums the queue tables; the caller got `true` from [`Maintenance::deleted`].
pub(crate) async fn vacuum(db: &Db, maintenance: &Arc<Maintenance>) {
    const OP: &str = "vacuum";
    maintenance.deleted.store(0, Ordering::Relaxed);
    let sql = db.render(
        "VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) __schema__.orchestrator_queue, __schema__.worker_queue",
    );
    let outcome = match db.client(OP).await {
        // Simple protocol: VACUUM may not run inside the implicit transaction of an extended query.
        Ok(client) => client.batch_execute(&sql).await.map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match outcome {
        Ok(()) => {
            maintenance.vacuums.fetch_add(1, Ordering::Relaxed);
        }
        Err(reason) if reason.contains("must be owner") || reason.contains("permission") => {
            tracing::debug!(target: "duroxide::postgres", %reason, "cannot vacuum the queue tables; leaving it to autovacuum");
            maintenance.disabled.store(true, Ordering::Relaxed);
        }
        Err(reason) => {
            tracing::debug!(target: "duroxide::postgres", %reason, "vacuuming the queue tables failed; trying again later");
            *maintenance.not_before.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + RETRY_AFTER);
        }
    }
    maintenance.running.store(false, Ordering::SeqCst);
}
