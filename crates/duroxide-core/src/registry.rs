//! Orchestration handlers and the versioned registry that resolves a name (and version) to one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::context::OrchestrationContext;
use crate::engine::OrchestrationFuture;

/// The version every orchestration registered without one gets.
pub const DEFAULT_VERSION: &str = "1.0.0";

/// Code that runs one orchestration: called once per execution (and again on every full replay).
pub trait OrchestrationHandler: Send + Sync + 'static {
    fn invoke(&self, ctx: OrchestrationContext, input: String) -> OrchestrationFuture;
}

impl<F, Fut> OrchestrationHandler for F
where
    F: Fn(OrchestrationContext, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    fn invoke(&self, ctx: OrchestrationContext, input: String) -> OrchestrationFuture {
        Box::pin(self(ctx, input))
    }
}

/// A `major.minor.patch` version, ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// Parses `major.minor.patch` (each a decimal number).
    pub fn parse(text: &str) -> Result<Version, RegistryError> {
        let bad = || RegistryError::InvalidVersion(text.to_string());
        let mut parts = text.split('.').map(|p| {
            if p.is_empty() {
                Err(bad())
            } else {
                p.parse::<u64>().map_err(|_| bad())
            }
        });
        let (Some(a), Some(b), Some(c), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Version(a?, b?, c?))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Registration failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid version {0:?}: expected major.minor.patch, e.g. 1.0.2")]
    InvalidVersion(String),
    #[error("orchestration {name:?} version {version} is already registered")]
    Duplicate { name: String, version: String },
    #[error("orchestration name must not be empty")]
    EmptyName,
}

/// Orchestrations by name and version. New instances run the latest version unless one is named.
#[derive(Default, Clone)]
pub struct OrchestrationRegistry {
    entries: HashMap<String, BTreeMap<Version, Arc<dyn OrchestrationHandler>>>,
}

impl fmt::Debug for OrchestrationRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.entries.keys().collect();
        names.sort();
        f.debug_struct("OrchestrationRegistry")
            .field("names", &names)
            .finish()
    }
}

impl OrchestrationRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` as version 1.0.0 of `name`.
    pub fn register(&mut self, name: &str, handler: impl OrchestrationHandler) -> Result<(), RegistryError> {
        self.register_versioned(name, DEFAULT_VERSION, handler)
    }

    pub fn register_versioned(
        &mut self,
        name: &str,
        version: &str,
        handler: impl OrchestrationHandler,
    ) -> Result<(), RegistryError> {
        self.register_arc(name, version, Arc::new(handler))
    }

    pub fn register_arc(
        &mut self,
        name: &str,
        version: &str,
        handler: Arc<dyn OrchestrationHandler>,
    ) -> Result<(), RegistryError> {
        if name.is_empty() {
            return Err(RegistryError::EmptyName);
        }
        let v = Version::parse(version)?;
        let versions = self.entries.entry(name.to_string()).or_default();
        if versions.contains_key(&v) {
            return Err(RegistryError::Duplicate {
                name: name.to_string(),
                version: v.to_string(),
            });
        }
        versions.insert(v, handler);
        Ok(())
    }

    /// The handler for `name` at `version` (or the latest when `None`), with its version text.
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Option<(String, Arc<dyn OrchestrationHandler>)> {
        let versions = self.entries.get(name)?;
        let (v, handler) = match version {
            Some(text) => {
                let v = Version::parse(text).ok()?;
                versions.get_key_value(&v)?
            }
            None => versions.iter().next_back()?,
        };
        Some((v.to_string(), handler.clone()))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order_numerically() {
        assert!(Version::parse("1.10.0").unwrap() > Version::parse("1.9.3").unwrap());
        for bad in ["", "1", "1.0", "1.0.x", "1..0", "1.0.0.0", "-1.0.0"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolve_picks_latest_or_exact() {
        async fn v1(_: OrchestrationContext, _: String) -> Result<String, String> {
            Ok("1".into())
        }
        async fn v2(_: OrchestrationContext, _: String) -> Result<String, String> {
            Ok("2".into())
        }
        let mut r = OrchestrationRegistry::new();
        r.register("W", v1).unwrap();
        r.register_versioned("W", "1.0.10", v2).unwrap();
        assert_eq!(r.resolve("W", None).unwrap().0, "1.0.10");
        assert_eq!(r.resolve("W", Some("1.0.0")).unwrap().0, "1.0.0");
        assert!(r.resolve("W", Some("2.0.0")).is_none());
        assert!(r.resolve("X", None).is_none());
        assert!(matches!(
            r.register("W", v1),
            Err(RegistryError::Duplicate { .. })
        ));
        assert!(matches!(
            r.register_versioned("W", "x", v1),
            Err(RegistryError::InvalidVersion(_))
        ));
    }
}
