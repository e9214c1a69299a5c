//! Shared by the PostgreSQL provider's tests: the server URL and fresh, uniquely named schemas that are
//! dropped again when the test is done.
//!
//! The server comes from `DUROXIDE_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Without a reachable server every test fails with instructions; none is skipped silently.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use duroxide_postgres::{ConnectError, PostgresOptions, PostgresProvider};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Schemas made by tests start with this; ones older than [`STALE_AFTER_SECS`] are leftovers of
/// killed runs and are dropped by later runs.
pub const PREFIX: &str = "dxtest_";
const STALE_AFTER_SECS: u64 = 3600;

pub fn url() -> String {
    std::env::var("DUROXIDE_PG_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A plain connection to the test server, outside any provider (for inspecting the catalog, raw
/// SQL, or cutting connections); fails the test with instructions when there is no server.
pub async fn plain_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| {
            panic!("these tests need PostgreSQL: set DUROXIDE_PG_URL or start a server on 127.0.0.1:5432 ({err})")
        });
    tokio::spawn(connection);
    client
}

/// Fails the test, saying how to provide a server.
pub fn no_server(err: &ConnectError) -> ! {
    panic!(
        "these tests need a PostgreSQL server and could not use the one at DUROXIDE_PG_URL \
         (default {DEFAULT_URL}): {err}\n\
         Start PostgreSQL on 127.0.0.1:5432 (user postgres, trust or password auth), or set \
         DUROXIDE_PG_URL=postgres://user:password@host:port/database to a server where the user may \
         create schemas."
    )
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new schema name, unique across processes and runs: `dxtest_<unix secs>_<pid>_<n>_<random>`.
pub fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{PREFIX}{}_{}_{n}_{}",
        unix_secs(),
        std::process::id(),
        &random[..8]
    )
}

/// Schemas a test created, dropped when this goes out of scope (also after a failed check).
#[derive(Debug, Default)]
pub struct Schemas {
    names: Mutex<Vec<String>>,
}

impl Schemas {
    /// A new schema name, remembered for dropping.
    pub fn fresh(&self) -> String {
        let name = unique_schema();
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.clone());
        name
    }

    /// Drops `name` too when done (a schema named by the test itself).
    pub fn adopt(&self, name: String) {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).push(name);
    }

    /// A provider on a new schema; fails the test with instructions when there is no server.
    pub async fn provider(&self) -> PostgresProvider {
        let schema = self.fresh();
        connect(&schema).await
    }

    /// A provider on a new schema with one connection of each kind (pooled, shared, ack), so that
    /// a test can count round trips once its statements are prepared on each.
    pub async fn single_connection_provider(&self) -> PostgresProvider {
        let options = PostgresOptions::default()
            .with_schema(self.fresh())
            .with_max_connections(1)
            .with_shared_connections(1)
            .with_ack_connections(1);
        match PostgresProvider::connect_with(&url(), options).await {
            Ok(provider) => provider,
            Err(err) => no_server(&err),
        }
    }
}

/// The message that creates instance `instance` of the orchestration "Orchestration".
pub fn start(instance: &str) -> duroxide_core::provider::NewMessage {
    duroxide_core::provider::NewMessage {
        instance_id: instance.into(),
        payload: format!("{{\"start\":\"{instance}\"}}"),
        visible_at_ms: None,
        creates: Some(duroxide_core::provider::InstanceCreation {
            name: "Orchestration".into(),
            version: None,
            parent_instance_id: None,
        }),
    }
}

/// Pooled connections per provider in tests: enough for the suite's concurrent fetchers, few enough
/// that parallel tests stay well within the server's `max_connections` (100 by default).
pub const TEST_POOL: usize = 8;

pub async fn connect(schema: &str) -> PostgresProvider {
    let options = PostgresOptions::default()
        .with_schema(schema)
        .with_max_connections(TEST_POOL);
    match PostgresProvider::connect_with(&url(), options).await {
        Ok(provider) => provider,
        Err(err) => no_server(&err),
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|p| p.into_inner()));
        if names.is_empty() {
            return;
        }
        // Drop runs inside the test's runtime; the cleanup gets a thread and a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(drop_schemas(names));
            }
        });
        let _ = cleanup.join();
    }
}

/// Drops `names` and any stale test schema of earlier runs.
async fn drop_schemas(mut names: Vec<String>) {
    let Ok((client, connection)) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await else {
        return;
    };
    tokio::spawn(connection);
    let _ = client.batch_execute("SET lock_timeout = '10s'").await;
    if let Ok(rows) = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&PREFIX],
        )
        .await
    {
        let now = unix_secs();
        for row in rows {
            let Ok(name) = row.try_get::<_, String>(0) else {
                continue;
            };
            let created = name[PREFIX.len()..]
                .split('_')
                .next()
                .and_then(|secs| secs.parse::<u64>().ok());
            if created.is_some_and(|t| t + STALE_AFTER_SECS < now) {
                names.push(name);
            }
        }
    }
    for name in names {
        if let Err(err) = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
            .await
        {
            eprintln!("could not drop test schema {name}: {err}");
        }
    }
}
