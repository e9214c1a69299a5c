//! The provider conformance suite against `SqliteProvider`, on in-memory and on file databases.
//!
//! Every check gets a fresh database: a new in-memory one, or a new file in its own temporary folder.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use duroxide_conformance::{async_trait, Capabilities, ProviderFactory};
use duroxide_core::Provider;
use duroxide_sqlite::SqliteProvider;
use tempfile::TempDir;

/// A new in-memory database per check. Two objects cannot share one, so `create_pair` stays `None`.
#[derive(Debug)]
struct InMemory;

#[async_trait]
impl ProviderFactory for InMemory {
    async fn create(&self) -> Arc<dyn Provider> {
        Arc::new(SqliteProvider::in_memory().expect("open an in-memory SQLite database"))
    }
}

/// A new database file per check, each in its own temporary folder. The folders live as long as the
/// factory (one test), so the files outlast every provider opened on them.
#[derive(Debug, Default)]
struct OnFile {
    folders: Mutex<Vec<TempDir>>,
}

impl OnFile {
    fn new_path(&self) -> PathBuf {
        let folder = tempfile::tempdir().expect("create a temporary folder");
        let path = folder.path().join("conformance.db");
        self.folders.lock().expect("not poisoned").push(folder);
        path
    }
}

#[async_trait]
impl ProviderFactory for OnFile {
    async fn create(&self) -> Arc<dyn Provider> {
        Arc::new(SqliteProvider::open(self.new_path()).expect("open a SQLite database file"))
    }

    /// An idle provider notices commits made through other objects on the same file and wakes its
    /// waiting fetches, so the cross-object wake-up check applies.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_cross_object_wakeups(true)
    }

    /// Two providers on one file, as two processes sharing the database would be.
    async fn create_pair(&self) -> Option<(Arc<dyn Provider>, Arc<dyn Provider>)> {
        let path = self.new_path();
        let first = SqliteProvider::open(&path).expect("open a SQLite database file");
        let second = SqliteProvider::open(&path).expect("open the same file a second time");
        Some((Arc::new(first), Arc::new(second)))
    }
}

mod in_memory {
    use super::*;

    duroxide_conformance::conformance_tests!(InMemory);
}

mod file {
    use super::*;

    duroxide_conformance::conformance_tests!(OnFile::default());
}
