//! duroxide-conformance: in progress.
