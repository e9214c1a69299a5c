//! duroxide-sqlite: in progress.
