//! WAL checkpoints off the writer's path: a background thread with its own connection copies committed
//! WAL frames into the database file, so the writer never stalls on a checkpoint's fsync.
//!
//! Why: with `synchronous = NORMAL` a commit is only an append to the WAL; the expensive part is the
//! checkpoint (two fsyncs). Run inline (SQLite's default), every thousandth page of commits pays for
//! it inside a writer transaction and every waiting operation waits too. A `PASSIVE` checkpoint by another
//! connection runs beside the writer without blocking it. The writer keeps a large inline
//! `wal_autocheckpoint` as a safety net, so the WAL stays bounded even if this thread falls behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often the checkpointer looks whether anything was committed since its last checkpoint.
const INTERVAL: Duration = Duration::from_millis(250);

/// Inline checkpoint threshold of the writer connection, in pages (about 40 MiB): reached only when
/// the background checkpoints cannot keep up.
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// Handle to the checkpoint thread; dropping it stops the thread.
pub(crate) struct Checkpointer {
    commits: Arc<AtomicU64>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("commits", &self.commits.load(Ordering::Relaxed))
            .finish()
    }
}

impl Checkpointer {
    /// Starts checkpointing the WAL of the database at `path`.
    pub(crate) fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let commits = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("duroxide-sqlite-checkpoint".into())
            .spawn({
                let (path, commits) = (path.to_owned(), commits.clone());
                move || checkpoint_loop(&path, &commits, &stopped)
            })?;
        Ok(Checkpointer {
            commits,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The counter the writer bumps after each commit.
    pub(crate) fn commit_counter(&self) -> Arc<AtomicU64> {
        self.commits.clone()
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

fn checkpoint_loop(path: &PathBuf, commits: &AtomicU64, stopped: &mpsc::Receiver<()>) {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match Connection::open_with_flags(path, flags) {
        Ok(conn) => conn,
        Err(err) => {
            // The writer's inline autocheckpoint still bounds the WAL; only speed is lost.
            tracing::warn!(path = %path.display(), error = %err, "background checkpoints unavailable");
            return;
        }
    };
    let mut checkpointed_at = commits.load(Ordering::Relaxed);
    loop {
        match stopped.recv_timeout(INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let now = commits.load(Ordering::Relaxed);
        if now == checkpointed_at {
            continue;
        }
        checkpointed_at = now;
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(path = %path.display(), error = %err, "background checkpoint failed; retrying later");
        }
    }
}
