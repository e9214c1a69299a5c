//! WAL checkpoints off the writer's path: a background thread with its own connection copies committed
//! WAL frames into the database file, and now and then lets the WAL start over from its beginning.
//!
//! Why: with `synchronous = NORMAL` a commit is only an append to the WAL; the expensive part is the
//! checkpoint (copying frames into the file, two fsyncs). Run inline (SQLite's default), every
//! thousandth page of commits pays for it inside a writer transaction and every waiting operation
//! waits too. A `PASSIVE` checkpoint by another connection runs beside the writer without blocking it.
//!
//! The catch: SQLite only rewinds the WAL when a write transaction begins while *every* frame has been
//! copied, and under a steady stream of commits some always arrive while a background pass runs. The
//! WAL then grows until the writer's inline backstop (`wal_autocheckpoint`) checkpoints it inside a
//! transaction, a stall of tens of milliseconds for every caller. So once the WAL is long, the
//! checkpointer follows its background pass with a second one while the provider's connections are
//! held still ([`WalUse::quiet`]): only the frames committed during the first pass are left to copy,
//! and the next write transaction rewinds the WAL. The pause is mostly the pass's two fsyncs: a few
//! milliseconds under load on the machines we measured, against 25 to 80 ms for the inline backstop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// How often the checkpointer looks whether anything was committed since its last checkpoint, at
/// most.
const MAX_INTERVAL: Duration = Duration::from_millis(100);

/// How often it looks at least. At full speed the provider writes about 100,000 pages a second (chain3
/// workload, our 2-core bench machine), so
/// the interval halves while each round finds a long WAL and doubles again while the WAL stays short.
const MIN_INTERVAL: Duration = Duration::from_millis(25);

/// WAL length, in pages (about 16 MiB), from which a checkpoint ends with a short pause of the
/// provider's connections so the WAL starts over.
const REWIND_PAGES: i64 = 4_096;

/// At most this many more background passes catch up with the writer before the pause.
const CATCH_UP_PASSES: usize = 4;

/// A background pass that had at most this many pages to copy is followed by the pause: the next
/// pass, which runs during the pause, then has even fewer.
const LAST_PASS_PAGES: i64 = 256;

/// Inline checkpoint threshold of the writer connection, in pages (about 40 MiB): reached only when
/// the background checkpoints cannot keep up (or another process keeps the WAL from rewinding).
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// What the provider's connections to a file share with the checkpointer.
#[derive(Debug, Default)]
pub(crate) struct WalUse {
    /// Committed write batches: a round with none has nothing to checkpoint.
    commits: AtomicU64,
    /// Held shared by every transaction of the provider's connections, and exclusively by the
    /// checkpointer for its last pass before a rewind.
    quiet: RwLock<()>,
}

impl WalUse {
    /// Held for the length of one transaction; the checkpointer may hold it off for a few
    /// milliseconds.
    pub(crate) fn transaction(&self) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data, so a panic while holding it leaves nothing inconsistent.
        self.quiet.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by the writer after each committed batch.
    pub(crate) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Handle to the checkpoint thread; dropping it stops the thread.
pub(crate) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Starts checkpointing the WAL of the database at `path`, whose connections report to `wal`.
    pub(crate) fn start(path: &Path, wal: Arc<WalUse>) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("duroxide-sqlite-checkpoint".into())
            .spawn({
                let path = path.to_owned();
                move || checkpoint_loop(&path, &wal, &stopped)
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn checkpoint_loop(path: &PathBuf, wal: &WalUse, stopped: &mpsc::Receiver<()>) {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match Connection::open_with_flags(path, flags) {
        Ok(conn) => conn,
        Err(err) => {
            // The writer's inline autocheckpoint still bounds the WAL; only speed is lost.
            tracing::warn!(path = %path.display(), error = %err, "background checkpoints unavailable");
            return;
        }
    };
    let mut checkpointed_at = wal.commits.load(Ordering::Relaxed);
    let mut interval = MAX_INTERVAL;
    loop {
        match stopped.recv_timeout(interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = wal.commits.load(Ordering::Relaxed);
        if now == checkpointed_at {
            continue;
        }
        checkpointed_at = now;
        match checkpoint(&conn, wal) {
            Ok(wal_pages) if wal_pages >= REWIND_PAGES => interval = (interval / 2).max(MIN_INTERVAL),
            Ok(wal_pages) if wal_pages < REWIND_PAGES / 4 => interval = (interval * 2).min(MAX_INTERVAL),
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(path = %path.display(), error = %err, "background checkpoint failed; retrying later");
            }
        }
    }
}

/// One round: a background pass and, if the WAL has grown long, a rewind. Returns the WAL's length
/// (in pages) at the start, or -1 if another connection was checkpointing it.
fn checkpoint(conn: &Connection, wal: &WalUse) -> rusqlite::Result<i64> {
    let mut pass = passive_checkpoint(conn)?;
    let wal_pages = pass.wal_pages;
    if wal_pages < REWIND_PAGES {
        return Ok(wal_pages);
    }
    // Each pass copies what was committed during the one before; they get shorter as long as copying
    // outpaces the writer, so a few catch up with it.
    for _ in 0..CATCH_UP_PASSES {
        let next = passive_checkpoint(conn)?;
        if next.wal_pages < 0 {
            // Another connection (the writer's backstop, another process) is checkpointing.
            return Ok(wal_pages);
        }
        let copied_now = next.wal_pages - pass.copied;
        pass = next;
        if copied_now <= LAST_PASS_PAGES {
            break;
        }
    }
    // Nothing of this provider's reads or writes while the rest is copied; the next write transaction
    // then finds the whole WAL copied and starts it over.
    let quiet = wal.quiet.write().unwrap_or_else(PoisonError::into_inner);
    let paused = Instant::now();
    let last = passive_checkpoint(conn);
    drop(quiet);
    tracing::trace!(
        wal_pages = pass.wal_pages,
        paused_us = paused.elapsed().as_micros() as u64,
        "WAL rewound"
    );
    last.map(|_| wal_pages)
}

/// What a checkpoint pass reports.
#[derive(Debug, Clone, Copy)]
struct Pass {
    /// Pages in the WAL when the pass began, or -1 if another checkpoint kept it from running.
    wal_pages: i64,
    /// Pages of the WAL copied into the database file, up to now.
    copied: i64,
}

/// Copies what it can of the WAL into the database file without waiting for anyone.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<Pass> {
    // The pragma answers (busy, pages in the WAL, pages copied).
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Pass {
            wal_pages: row.get(1)?,
            copied: row.get(2)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A WAL database with one table, and no inline checkpoints (only the ones under test).
    fn database(path: &Path) -> Connection {
        let conn = Connection::open(path).expect("open");
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .expect("WAL");
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "synchronous", "NORMAL")
            .expect("synchronous");
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no inline checkpoints");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
            .expect("table");
        conn
    }

    #[test]
    fn a_long_wal_starts_over_although_commits_never_stop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.db");
        let writer = database(&path);
        let wal = Arc::new(WalUse::default());
        let stop = Arc::new(AtomicBool::new(false));
        // Commits back to back, as a busy provider does, each under the shared hold.
        let writing = std::thread::spawn({
            let (wal, stop) = (wal.clone(), stop.clone());
            move || {
                let body = vec![7u8; 3_000];
                let mut id = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let _transaction = wal.transaction();
                    id += 1;
                    writer
                        .execute(
                            "INSERT OR REPLACE INTO t (id, body) VALUES (?1, ?2)",
                            rusqlite::params![id % 5_000, body],
                        )
                        .expect("insert");
                    wal.committed();
                }
            }
        });
        let checkpointer = Connection::open(&path).expect("open");
        let wal_pages = loop {
            let pages = checkpoint(&checkpointer, &wal).expect("checkpoint");
            if pages >= REWIND_PAGES {
                break pages;
            }
        };
        // The round that found the WAL long ended with the whole WAL copied, so the next commit
        // rewound it: the WAL is now shorter than the round found it, though commits never stopped.
        let committed = wal.commits.load(Ordering::Relaxed);
        while wal.commits.load(Ordering::Relaxed) == committed {
            std::thread::yield_now();
        }
        let after = passive_checkpoint(&checkpointer).expect("checkpoint");
        stop.store(true, Ordering::Relaxed);
        writing.join().expect("writer");
        assert!(
            (0..wal_pages).contains(&after.wal_pages),
            "the WAL did not start over: {wal_pages} pages before the rewind, {} after",
            after.wal_pages
        );
    }
}
