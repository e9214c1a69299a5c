//! PostgreSQL provider for duroxide: not built yet (planned in the "PostgreSQL provider" issue).
//!
//! This crate intentionally exposes nothing until it works.
