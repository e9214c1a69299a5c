//! The store a chaos or crash run uses: a SQLite file in a temporary directory, or a fresh schema on
//! the PostgreSQL server of `DUROXIDE_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! dropped again when the run is over. Worker processes find the same store through environment
//! variables.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use duroxide_core::Provider;
use duroxide_postgres::{PostgresOptions, PostgresProvider};
use duroxide_sqlite::SqliteProvider;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Schemas made by tests start with this and the creation time, like the provider's own test
/// schemas, so whichever test run comes next drops leftovers of killed runs.
const SCHEMA_PREFIX: &str = "dxtest_";

const SQLITE_ENV: &str = "DUROXIDE_STORE_SQLITE";
const SCHEMA_ENV: &str = "DUROXIDE_STORE_PG_SCHEMA";

pub fn pg_url() -> String {
    std::env::var("DUROXIDE_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// Where a run keeps its state.
#[derive(Debug)]
pub enum Store {
    SqliteFile {
        path: PathBuf,
        /// Holds the directory for the run's lifetime (`None` in a worker process).
        _dir: Option<tempfile::TempDir>,
    },
    Postgres {
        schema: String,
        /// Whether this object drops the schema when it goes away (the parent, not its workers).
        owned: bool,
    },
}

impl Store {
    pub fn sqlite_file() -> Store {
        let dir = tempfile::tempdir().expect("temporary directory");
        Store::SqliteFile {
            path: dir.path().join("store.db"),
            _dir: Some(dir),
        }
    }

    /// A new, uniquely named schema (created by the first provider that connects).
    pub fn postgres() -> Store {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let schema = format!(
            "{SCHEMA_PREFIX}{secs}_{}_{}_chaos",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Store::Postgres { schema, owned: true }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Store::SqliteFile { .. } => "SQLite file",
            Store::Postgres { .. } => "PostgreSQL",
        }
    }

    /// A new provider object on this store (as another process would have).
    pub async fn open(&self) -> Arc<dyn Provider> {
        match self {
            Store::SqliteFile { path, .. } => {
                Arc::new(SqliteProvider::open(path).expect("the SQLite file opens"))
            }
            Store::Postgres { schema, .. } => match PostgresProvider::connect_with_schema(&pg_url(), schema).await
            {
                Ok(provider) => Arc::new(provider),
                Err(e) => panic!(
                    "the PostgreSQL runs need a server at DUROXIDE_PG_URL (default {DEFAULT_PG_URL}) where the \
                     user may create schemas: {e}"
                ),
            },
        }
    }

    /// A new provider object on this PostgreSQL store whose connections (the pool's and the
    /// listener's) carry `application_name`, so a test can find exactly them in `pg_stat_activity`
    /// (and cut them) without touching other tests' connections. At most `max_connections` pooled.
    pub async fn open_named(&self, application_name: &str, max_connections: usize) -> Arc<dyn Provider> {
        let Store::Postgres { schema, .. } = self else {
            panic!("only a PostgreSQL store has named connections");
        };
        let url = with_application_name(&pg_url(), application_name);
        let options = PostgresOptions::default()
            .with_schema(schema.as_str())
            .with_max_connections(max_connections);
        match PostgresProvider::connect_with(&url, options).await {
            Ok(provider) => Arc::new(provider),
            Err(e) => panic!(
                "the PostgreSQL runs need a server at DUROXIDE_PG_URL (default {DEFAULT_PG_URL}) where the \
                 user may create schemas: {e}"
            ),
        }
    }

    /// Environment that lets a worker process open the same store.
    pub fn worker_env(&self) -> (&'static str, String) {
        match self {
            Store::SqliteFile { path, .. } => (SQLITE_ENV, path.display().to_string()),
            Store::Postgres { schema, .. } => (SCHEMA_ENV, schema.clone()),
        }
    }

    /// The store a worker process was pointed at.
    pub fn from_worker_env() -> Store {
        if let Ok(path) = std::env::var(SQLITE_ENV) {
            return Store::SqliteFile {
                path: path.into(),
                _dir: None,
            };
        }
        let schema = std::env::var(SCHEMA_ENV).expect("a worker process is given its store");
        Store::Postgres { schema, owned: false }
    }
}

/// `url` (a `postgres://` URL or a key=value string) with `application_name` set, overriding any
/// name it carries (the last setting wins).
pub fn with_application_name(url: &str, application_name: &str) -> String {
    let url = url.trim();
    if !url.contains("://") {
        return format!("{url} application_name={application_name}");
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={application_name}")
}

impl Drop for Store {
    fn drop(&mut self) {
        let Store::Postgres { schema, owned: true } = self else {
            return;
        };
        let schema = schema.clone();
        // Drop may run inside a test's runtime: the cleanup gets a thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                let _ = client.batch_execute("SET lock_timeout = '10s'").await;
                if let Err(e) = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
                {
                    eprintln!("could not drop test schema {schema}: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}
