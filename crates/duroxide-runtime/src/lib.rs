//! Runtime (dispatchers, sessions, instance cache) and Client: not built yet (planned in the
//! "Runtime and Client" issue).
//!
//! This crate intentionally exposes nothing until it works.
