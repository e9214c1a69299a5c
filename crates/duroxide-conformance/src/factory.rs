//! How a provider under test is handed to the suite: a factory of fresh stores plus capability flags.

use std::sync::Arc;

use async_trait::async_trait;
use duroxide_core::Provider;

/// Creates the providers the checks run against.
///
/// Every check calls [`create`](ProviderFactory::create) itself, so each one starts from an empty store
/// and no check can pass or fail because of another one's leftovers.
#[async_trait]
pub trait ProviderFactory: Send + Sync {
    /// A provider object on a new, empty store.
    ///
    /// Panicking is an acceptable way to report that the store could not be set up: the runner turns
    /// the panic into a failure of the check that asked.
    async fn create(&self) -> Arc<dyn Provider>;

    /// Two independent provider objects on one new, empty store, as two processes sharing a database
    /// would have. `None` (the default) when the provider cannot share a store between objects (an
    /// in-memory database, say); the checks that need it are then skipped.
    async fn create_pair(&self) -> Option<(Arc<dyn Provider>, Arc<dyn Provider>)> {
        None
    }

    /// What this provider is expected to support beyond the common contract.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// Real behavioural differences between providers, passed as flags instead of forking checks.
///
/// Constructed with [`Capabilities::default`] plus the `with_*` methods, so new flags can be added
/// without breaking existing factories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// A fetch waiting on one provider object is woken by work that another object on the same store
    /// enqueues (PostgreSQL LISTEN/NOTIFY). Without it, only same-object writes and the poll interval
    /// end the wait. Needs [`ProviderFactory::create_pair`].
    pub cross_object_wakeups: bool,
}

impl Capabilities {
    /// Declares that waiting fetches are woken by writes through other provider objects.
    pub fn with_cross_object_wakeups(mut self, yes: bool) -> Self {
        self.cross_object_wakeups = yes;
        self
    }
}
