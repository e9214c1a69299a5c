//! Python bindings (PyO3) for duroxide: not built yet (planned in the "Python SDK" issue).
//!
//! This crate intentionally exposes nothing until it works.
