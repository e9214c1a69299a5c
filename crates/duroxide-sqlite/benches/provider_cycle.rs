//! Provider cycle benchmark: turn and worker cycles per second against the raw single-row transaction rate
//! of the same kind of database, printed as one JSON line per database kind (memory, file with the
//! default durability, file with `Durability::Full`).
//!
//! Run with `cargo bench -p duroxide-sqlite --bench provider_cycle`. Figures:
//! * `raw_tx_per_s`: `BEGIN IMMEDIATE; INSERT one row; COMMIT` on a fresh database of the same kind
//!   with the provider's settings (file: WAL, `synchronous` NORMAL or FULL as the mode says,
//!   `wal_autocheckpoint = 10000`), from one thread, directly on a connection (no thread hop).
//! * `turn_cycles_per_s`: one task fetching an instance with one message and acking it with 2 history
//!   records and 1 worker item, over pre-created instances (`create_instance`).
//! * `worker_cycles_per_s`: one task fetching a work item and acking it with a completion message.
//! * `concurrent_turn_cycles_per_s`: the turn cycle from several tasks at once (a runtime's shape),
//!   where the writer groups concurrent operations into shared transactions.
//! * `turn_to_raw`, `concurrent_turn_to_raw`: those turn rates over `raw_tx_per_s` (target: 0.4).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use duroxide_conformance::cycles::{create_instances, timed, turn_cycles, worker_cycles};
use duroxide_sqlite::{Durability, SqliteOptions, SqliteProvider};

/// Instances (and so turn cycles) per measured run.
const INSTANCES: usize = 5_000;
/// Concurrent tasks in the concurrent turn measurement.
const TASKS: usize = 8;
/// How long the raw transaction loop runs.
const RAW_DURATION: Duration = Duration::from_secs(2);

/// The database kinds measured, one JSON line each.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Memory,
    File(Durability),
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::File(Durability::Full) => "file-synchronous-full",
            Mode::File(_) => "file",
        }
    }

    fn synchronous(self) -> &'static str {
        match self {
            Mode::File(Durability::Full) => "FULL",
            _ => "NORMAL",
        }
    }
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        for mode in [
            Mode::Memory,
            Mode::File(Durability::Normal),
            Mode::File(Durability::Full),
        ] {
            let dir = tempfile::tempdir()?;
            println!("{}", measure(mode, dir.path()).await?);
        }
        Ok(())
    })
}

/// Measures one database kind; file databases go to `dir`.
async fn measure(mode: Mode, dir: &Path) -> Result<serde_json::Value> {
    let raw = raw_tx_per_s(mode, &dir.join("raw.db"))?;

    let provider = Arc::new(open(mode, &dir.join("turns.db"))?);
    create_instances(provider.as_ref(), "seq", INSTANCES).await?;
    let (turns, turn_rate) = timed(turn_cycles(provider.clone(), 1)).await?;
    let (workers, worker_rate) = timed(worker_cycles(provider, 1)).await?;
    anyhow::ensure!(
        turns == INSTANCES && workers == INSTANCES,
        "expected {INSTANCES} cycles each"
    );

    let concurrent = Arc::new(open(mode, &dir.join("concurrent.db"))?);
    create_instances(concurrent.as_ref(), "par", INSTANCES).await?;
    let (concurrent_turns, concurrent_rate) = timed(turn_cycles(concurrent, TASKS)).await?;
    anyhow::ensure!(
        concurrent_turns == INSTANCES,
        "expected {INSTANCES} concurrent cycles"
    );

    Ok(serde_json::json!({
        "mode": mode.name(),
        "raw_tx_per_s": raw.round(),
        "turn_cycles_per_s": turn_rate.round(),
        "worker_cycles_per_s": worker_rate.round(),
        "concurrent_turn_cycles_per_s": concurrent_rate.round(),
        "concurrent_tasks": TASKS,
        "turn_to_raw": ratio(turn_rate, raw),
        "concurrent_turn_to_raw": ratio(concurrent_rate, raw),
        "cycles": INSTANCES,
    }))
}

fn ratio(rate: f64, raw: f64) -> f64 {
    (rate / raw * 1000.0).round() / 1000.0
}

fn open(mode: Mode, path: &Path) -> Result<SqliteProvider> {
    Ok(match mode {
        Mode::Memory => SqliteProvider::in_memory()?,
        Mode::File(durability) => {
            SqliteProvider::open_with(path, &SqliteOptions::default().with_durability(durability))?
        }
    })
}

/// Single-row insert transactions per second on a database of this kind: the better of SQLite's own
/// checkpointing (inline, every 1,000 pages) and the provider's arrangement (inline only every 10,000
/// pages, the rest by a background connection every 250 ms), so the ratio is never flattered by a
/// handicapped baseline.
fn raw_tx_per_s(mode: Mode, path: &Path) -> Result<f64> {
    match mode {
        Mode::Memory => raw_inserts(&rusqlite::Connection::open_in_memory()?),
        Mode::File(_) => {
            let sqlite_default = raw_on_file(mode, &path.with_extension("default.db"), 1_000, false)?;
            let provider_like = raw_on_file(mode, path, 10_000, true)?;
            Ok(sqlite_default.max(provider_like))
        }
    }
}

fn raw_on_file(mode: Mode, path: &Path, autocheckpoint: i64, background: bool) -> Result<f64> {
    let conn = rusqlite::Connection::open(path)?;
    let journal: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    anyhow::ensure!(journal.eq_ignore_ascii_case("wal"), "WAL refused: {journal}");
    conn.pragma_update(None, "synchronous", mode.synchronous())?;
    conn.pragma_update(None, "wal_autocheckpoint", autocheckpoint)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpointer = background.then(|| {
        let (path, stop) = (path.to_owned(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            let conn = rusqlite::Connection::open(path)?;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
            }
            Ok(())
        })
    });
    let rate = raw_inserts(&conn);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(thread) = checkpointer {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("checkpoint thread panicked"))??;
    }
    rate
}

fn raw_inserts(conn: &rusqlite::Connection) -> Result<f64> {
    conn.execute(
        "CREATE TABLE raw_insert (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
        [],
    )?;
    let payload = r#"{"kind":"ActivityCompleted","result":"\"ok\""}"#;
    let started = Instant::now();
    let mut count: u64 = 0;
    while started.elapsed() < RAW_DURATION {
        for _ in 0..256 {
            conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            conn.prepare_cached("INSERT INTO raw_insert (payload) VALUES (?1)")?
                .execute([payload])?;
            conn.prepare_cached("COMMIT")?.execute([])?;
            count += 1;
        }
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}
