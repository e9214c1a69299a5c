//! The provider conformance suite against `PostgresProvider`: every check on a fresh schema of its own,
//! dropped when the check ends.
//!
//! Needs a PostgreSQL server: `DUROXIDE_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! Without one, every check fails and says how to provide it.

use std::sync::Arc;

use duroxide_conformance::{async_trait, Capabilities, ProviderFactory};
use duroxide_core::Provider;

mod common;

/// A new schema per provider (or pair), all dropped when the factory (one check) is done.
#[derive(Debug, Default)]
struct FreshSchemas {
    schemas: common::Schemas,
}

#[async_trait]
impl ProviderFactory for FreshSchemas {
    async fn create(&self) -> Arc<dyn Provider> {
        Arc::new(self.schemas.provider().await)
    }

    /// Two provider objects on one schema, as two processes sharing the database would have: separate
    /// pools and separate listener connections.
    async fn create_pair(&self) -> Option<(Arc<dyn Provider>, Arc<dyn Provider>)> {
        let schema = self.schemas.fresh();
        let first = common::connect(&schema).await;
        let second = common::connect(&schema).await;
        Some((Arc::new(first), Arc::new(second)))
    }

    /// LISTEN/NOTIFY wakes fetches waiting on another object.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_cross_object_wakeups(true)
    }
}

duroxide_conformance::conformance_tests!(FreshSchemas::default());
