//! Shared helpers for the core's integration tests (included with `mod common;`).
#![allow(dead_code)]

use duroxide_core::testing::SimHost;
use duroxide_core::OrchestrationRegistry;

/// A host with the activities most tests use: `Echo` returns its input, `Upper` upper-cases it,
/// `Fail` fails with its input as the message, `Add1` parses a number and adds one.
pub fn host(registry: OrchestrationRegistry) -> SimHost {
    SimHost::new(registry)
        .activity("Echo", |w| Ok(w.input.clone()))
        .activity("Upper", |w| Ok(w.input.to_uppercase()))
        .activity("Fail", |w| Err(w.input.clone()))
        .activity("Add1", |w| {
            w.input
                .parse::<i64>()
                .map(|n| (n + 1).to_string())
                .map_err(|e| e.to_string())
        })
}
