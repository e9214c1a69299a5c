//! `SqliteProvider`: opens a database and implements the `Provider` contract through the writer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duroxide_core::provider::{
    CachedFetch, CustomStatus, DeleteResult, ExecutionInfo, HistoryCache, HistoryRecord, InstanceFilter,
    InstanceInfo, InstanceStats, InstanceStatus, KvEntry, NewMessage, OrchestrationItem, Provider,
    ProviderError, PruneOptions, PruneResult, QueueDepths, SystemMetrics, TurnAck, WorkItemLease,
    WorkerFetch,
};
use rusqlite::Connection;

use crate::checkpointer::{Checkpointer, WalUse};
use crate::clock::duration_ms;
use crate::connection;
use crate::error::OpenError;
use crate::location::Location;
use crate::options::{Durability, SqliteOptions};
use crate::reader::Reader;
use crate::wakeups::{Queue, Wakeups};
use crate::writer::{Cost, IdleHook, Writer, WriterConfig};
use crate::{management, orchestrator_queue, reads, retention, turn_ack, worker_queue};

/// Rows above which an ack counts as a long operation (run off the async threads); a few hundred
/// inserts take well under a millisecond.
const LARGE_ACK_ROWS: usize = 512;

/// A duroxide [`Provider`] on SQLite. Cheap to clone: clones share one database connection, one
/// writer and one set of wake-ups.
#[derive(Clone)]
pub struct SqliteProvider {
    shared: Arc<Shared>,
}

struct Shared {
    location: Location,
    wakeups: Arc<Wakeups>,
    // Dropped in this order: the writer finishes its queue and closes the main connection, then the
    // reading connection closes, and the checkpointer's connection last (the last one to close folds
    // the WAL into the file).
    writer: Writer,
    /// Short reads of a file database (see `reader`); `None` for an in-memory database.
    reader: Option<Reader>,
    _checkpointer: Option<Checkpointer>,
}

impl std::fmt::Debug for SqliteProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteProvider")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

impl SqliteProvider {
    /// Opens the database file at `path` (a plain path or a `sqlite:` URL such as `sqlite://app.db`),
    /// creating it and its missing parent folders, and applying any migrations it lacks.
    ///
    /// Fails, naming the path and the reason and writing nothing, when the file is not a SQLite
    /// database, was written by a newer schema version, or cannot be created or written.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteProvider, OpenError> {
        SqliteProvider::open_with(path, &SqliteOptions::default())
    }

    /// [`open`](SqliteProvider::open) with options (durability of commits).
    pub fn open_with(path: impl AsRef<Path>, options: &SqliteOptions) -> Result<SqliteProvider, OpenError> {
        let path = path.as_ref();
        let location = match path.to_str() {
            Some(text) => Location::parse(text)?,
            // Not UTF-8, so not a URL: a plain path.
            None => Location::File(path.to_owned()),
        };
        SqliteProvider::open_location(location, options)
    }

    /// A private in-memory database, one per call, as correct as a file database (same schema, same
    /// transactions); it disappears with the last clone of the provider.
    pub fn in_memory() -> Result<SqliteProvider, OpenError> {
        SqliteProvider::open_location(Location::Memory, &SqliteOptions::default())
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.shared.location.path()
    }

    fn open_location(location: Location, options: &SqliteOptions) -> Result<SqliteProvider, OpenError> {
        let wakeups = Arc::new(Wakeups::default());
        let thread_error = |source| OpenError::Thread {
            path: location.path().unwrap_or(Path::new(":memory:")).to_owned(),
            source,
        };
        let (writer, reader, checkpointer) = match &location {
            Location::File(path) => {
                let conn = connection::open_file(path, options.durability)?;
                let wal = Arc::new(WalUse::default());
                let config = WriterConfig {
                    // Each commit waits for an fsync (milliseconds): too long for an async thread.
                    all_long: options.durability == Durability::Full,
                    idle: Some(external_change_watch(wakeups.clone())),
                    wal: Some(wal.clone()),
                };
                let writer = Writer::start(conn, config).map_err(thread_error)?;
                let reader = Reader::open(path, wal.clone()).map_err(|source| OpenError::Setup {
                    path: path.clone(),
                    step: "opening the reading connection".into(),
                    source,
                })?;
                let checkpointer = Checkpointer::start(path, wal).map_err(thread_error)?;
                (writer, Some(reader), Some(checkpointer))
            }
            Location::Memory => {
                let conn = connection::open_memory()?;
                let config = WriterConfig {
                    all_long: false,
                    idle: None,
                    wal: None,
                };
                (Writer::start(conn, config).map_err(thread_error)?, None, None)
            }
        };
        let shared = Shared {
            location,
            wakeups,
            writer,
            reader,
            _checkpointer: checkpointer,
        };
        Ok(SqliteProvider {
            shared: Arc::new(shared),
        })
    }

    /// Runs a short operation (microseconds), on the calling thread when the writer is free.
    async fn short<T, F>(&self, operation: &'static str, work: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ProviderError> + Send + 'static,
    {
        self.shared.writer.run(operation, Cost::Short, work).await
    }

    /// Runs a short read: at once on the reading connection of a file database, else as `short`.
    async fn read<T, F>(&self, operation: &'static str, work: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ProviderError> + Send + 'static,
    {
        match &self.shared.reader {
            Some(reader) => reader.read(operation, work),
            None => self.short(operation, work).await,
        }
    }

    /// Both orchestration fetches: a long poll for the next instance, leaving out a history that
    /// `cache` holds whole.
    async fn fetch_orchestration(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        cache: Option<Arc<dyn HistoryCache>>,
    ) -> Result<Option<CachedFetch>, ProviderError> {
        let lock_ms = duration_ms(lock_timeout);
        self.shared
            .wakeups
            .long_poll(Queue::Orchestrator, poll_timeout, |others_waiting| {
                let cache = cache.clone();
                self.short("fetch_orchestration_item", move |c| {
                    orchestrator_queue::fetch(c, lock_ms, others_waiting, cache.as_deref())
                })
            })
            .await
    }

    /// Runs an operation whose duration grows with the stored data, off the async threads.
    async fn long<T, F>(&self, operation: &'static str, work: F) -> Result<T, ProviderError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ProviderError> + Send + 'static,
    {
        self.shared.writer.run(operation, Cost::Long, work).await
    }
}

/// Another process committing to the same file cannot notify this one; the writer's thread notices
/// (about every 100 ms) through `PRAGMA data_version` (which changes only for other connections' commits) and wakes waiting
/// fetches, so they do not sleep through work until their poll timeout.
fn external_change_watch(wakeups: Arc<Wakeups>) -> IdleHook {
    let mut last_seen: Option<i64> = None;
    Box::new(move |conn: &Connection| {
        let Ok(version) = conn.query_row("PRAGMA data_version", [], |row| row.get::<_, i64>(0)) else {
            return;
        };
        if last_seen.is_some_and(|seen| seen != version) {
            wakeups.anything_changed();
        }
        last_seen = Some(version);
    })
}

#[async_trait]
impl Provider for SqliteProvider {
    async fn create_instance(&self, message: NewMessage) -> Result<bool, ProviderError> {
        let created = self
            .short("create_instance", move |c| {
                orchestrator_queue::create_instance_from_client(c, &message)
            })
            .await?;
        if created {
            self.shared.wakeups.orchestrator_work();
        }
        Ok(created)
    }

    async fn enqueue_message(&self, message: NewMessage) -> Result<(), ProviderError> {
        self.short("enqueue_message", move |c| {
            orchestrator_queue::enqueue_from_client(c, &message)
        })
        .await?;
        self.shared.wakeups.orchestrator_work();
        Ok(())
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
    ) -> Result<Option<OrchestrationItem>, ProviderError> {
        let fetched = self.fetch_orchestration(lock_timeout, poll_timeout, None).await?;
        Ok(fetched.map(|f| f.item))
    }

    async fn fetch_orchestration_item_cached(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        cache: Arc<dyn HistoryCache>,
    ) -> Result<Option<CachedFetch>, ProviderError> {
        self.fetch_orchestration(lock_timeout, poll_timeout, Some(cache))
            .await
    }

    async fn ack_orchestration_item(&self, lock_token: &str, ack: TurnAck) -> Result<(), ProviderError> {
        let token = lock_token.to_owned();
        // A turn that writes thousands of rows (a large fan-out) holds the connection for milliseconds.
        let cost = if turn_ack::rows_written(&ack) > LARGE_ACK_ROWS {
            Cost::Long
        } else {
            Cost::Short
        };
        let effects = self
            .shared
            .writer
            .run("ack_orchestration_item", cost, move |c| {
                turn_ack::ack(c, &token, &ack)
            })
            .await?;
        if effects.orchestrator_work {
            self.shared.wakeups.orchestrator_work();
        }
        if effects.worker_work {
            self.shared.wakeups.worker_work();
        }
        Ok(())
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        let token = lock_token.to_owned();
        let delay_ms = delay.map(duration_ms);
        self.short("abandon_orchestration_item", move |c| {
            orchestrator_queue::abandon(c, &token, delay_ms)
        })
        .await?;
        // Waiting fetches must look again: at once (no delay) or to learn the new due time.
        self.shared.wakeups.orchestrator_work();
        Ok(())
    }

    async fn renew_orchestration_item_lock(
        &self,
        lock_token: &str,
        extend_by: Duration,
    ) -> Result<(), ProviderError> {
        let token = lock_token.to_owned();
        let extend_ms = duration_ms(extend_by);
        self.short("renew_orchestration_item_lock", move |c| {
            orchestrator_queue::renew(c, &token, extend_ms)
        })
        .await
    }

    async fn fetch_work_item(
        &self,
        request: &WorkerFetch,
        poll_timeout: Duration,
    ) -> Result<Option<WorkItemLease>, ProviderError> {
        let shared_request = Arc::new(request.clone());
        self.shared
            .wakeups
            .long_poll(Queue::Worker(request), poll_timeout, |_| {
                let request = shared_request.clone();
                self.short("fetch_work_item", move |c| worker_queue::fetch(c, &request))
            })
            .await
    }

    async fn ack_work_item(
        &self,
        lock_token: &str,
        completion: Option<NewMessage>,
    ) -> Result<(), ProviderError> {
        let token = lock_token.to_owned();
        let enqueued = self
            .short("ack_work_item", move |c| {
                worker_queue::ack(c, &token, completion.as_ref())
            })
            .await?;
        if enqueued {
            self.shared.wakeups.orchestrator_work();
        }
        Ok(())
    }

    async fn abandon_work_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        let token = lock_token.to_owned();
        let delay_ms = delay.map(duration_ms);
        self.short("abandon_work_item", move |c| {
            worker_queue::abandon(c, &token, delay_ms)
        })
        .await?;
        self.shared.wakeups.worker_work();
        Ok(())
    }

    async fn renew_work_item_lock(&self, lock_token: &str, extend_by: Duration) -> Result<(), ProviderError> {
        let token = lock_token.to_owned();
        let extend_ms = duration_ms(extend_by);
        self.short("renew_work_item_lock", move |c| {
            worker_queue::renew(c, &token, extend_ms)
        })
        .await
    }

    async fn renew_session_leases(
        &self,
        owner_id: &str,
        session_ids: &[String],
        extend_by: Duration,
    ) -> Result<usize, ProviderError> {
        if session_ids.is_empty() {
            return Ok(0);
        }
        let owner = owner_id.to_owned();
        let sessions = session_ids.to_vec();
        let extend_ms = duration_ms(extend_by);
        self.short("renew_session_leases", move |c| {
            worker_queue::renew_sessions(c, &owner, &sessions, extend_ms)
        })
        .await
    }

    async fn release_session(&self, owner_id: &str, session_id: &str) -> Result<(), ProviderError> {
        let owner = owner_id.to_owned();
        let session = session_id.to_owned();
        let released = self
            .short("release_session", move |c| {
                worker_queue::release_session(c, &owner, &session)
            })
            .await?;
        if released {
            // Items of this session waiting for their owner may now go to any worker.
            self.shared.wakeups.worker_work();
        }
        Ok(())
    }

    async fn get_instance_info(&self, instance_id: &str) -> Result<Option<InstanceInfo>, ProviderError> {
        let id = instance_id.to_owned();
        self.read("get_instance_info", move |c| reads::instance_info(c, &id))
            .await
    }

    async fn get_custom_status(&self, instance_id: &str) -> Result<Option<CustomStatus>, ProviderError> {
        let id = instance_id.to_owned();
        self.read("get_custom_status", move |c| reads::custom_status(c, &id))
            .await
    }

    async fn get_instance_state(
        &self,
        instance_id: &str,
    ) -> Result<Option<(InstanceInfo, CustomStatus)>, ProviderError> {
        let id = instance_id.to_owned();
        self.read("get_instance_state", move |c| reads::instance_state(c, &id))
            .await
    }

    async fn read_history(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Vec<HistoryRecord>, ProviderError> {
        let id = instance_id.to_owned();
        self.long("read_history", move |c| {
            reads::history(c, "read_history", &id, execution_id)
        })
        .await
    }

    async fn get_kv_value(&self, instance_id: &str, key: &str) -> Result<Option<String>, ProviderError> {
        let id = instance_id.to_owned();
        let key = key.to_owned();
        self.read("get_kv_value", move |c| reads::kv_value(c, &id, &key))
            .await
    }

    async fn get_kv_entries(&self, instance_id: &str) -> Result<Vec<KvEntry>, ProviderError> {
        let id = instance_id.to_owned();
        self.read("get_kv_entries", move |c| reads::kv_entries(c, &id))
            .await
    }

    async fn list_instances(&self, status: Option<InstanceStatus>) -> Result<Vec<String>, ProviderError> {
        self.long("list_instances", move |c| management::list_instances(c, status))
            .await
    }

    async fn list_executions(&self, instance_id: &str) -> Result<Vec<u64>, ProviderError> {
        let id = instance_id.to_owned();
        self.read("list_executions", move |c| management::list_executions(c, &id))
            .await
    }

    async fn get_execution_info(
        &self,
        instance_id: &str,
        execution_id: u64,
    ) -> Result<Option<ExecutionInfo>, ProviderError> {
        let id = instance_id.to_owned();
        self.read("get_execution_info", move |c| {
            management::execution_info(c, &id, execution_id)
        })
        .await
    }

    async fn get_instance_tree(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        let id = instance_id.to_owned();
        self.long("get_instance_tree", move |c| {
            management::instance_tree(c, "get_instance_tree", &id)
        })
        .await
    }

    async fn delete_instance(&self, instance_id: &str, force: bool) -> Result<DeleteResult, ProviderError> {
        let id = instance_id.to_owned();
        self.long("delete_instance", move |c| {
            retention::delete_instance(c, &id, force)
        })
        .await
    }

    async fn delete_instances_bulk(&self, filter: &InstanceFilter) -> Result<DeleteResult, ProviderError> {
        let filter = filter.clone();
        self.long("delete_instances_bulk", move |c| {
            retention::delete_instances_bulk(c, &filter)
        })
        .await
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        let id = instance_id.to_owned();
        let options = options.clone();
        self.long("prune_executions", move |c| {
            retention::prune_executions(c, &id, &options)
        })
        .await
    }

    async fn prune_executions_bulk(
        &self,
        filter: &InstanceFilter,
        options: &PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        let filter = filter.clone();
        let options = options.clone();
        self.long("prune_executions_bulk", move |c| {
            retention::prune_executions_bulk(c, &filter, &options)
        })
        .await
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        self.long("get_system_metrics", management::system_metrics).await
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        self.long("get_queue_depths", management::queue_depths).await
    }

    async fn get_instance_stats(&self, instance_id: &str) -> Result<Option<InstanceStats>, ProviderError> {
        let id = instance_id.to_owned();
        self.long("get_instance_stats", move |c| management::instance_stats(c, &id))
            .await
    }

    fn wake_all(&self) {
        self.shared.wakeups.wake_all();
    }
}
