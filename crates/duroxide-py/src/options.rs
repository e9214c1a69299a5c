//! Runtime options: built from the values the Python `RuntimeOptions` checked, then validated by the
//! runtime's own rules so a bad value is a `ValueError` at construction, never a silent fallback.

use std::time::Duration;

use duroxide_runtime::{LogFormat, RuntimeOptions, TagFilter};
use pyo3::prelude::*;

use crate::errors;

/// Validated runtime options, held by a Python `RuntimeOptions`.
#[pyclass(frozen, module = "duroxide._native", name = "NativeOptions")]
#[derive(Debug)]
pub struct PyOptions {
    pub inner: RuntimeOptions,
}

/// Builds a tag filter from its kind (`default_only`, `any`, `none`, `tags`, `default_and`) and tags.
pub fn tag_filter(kind: &str, tags: Vec<String>) -> PyResult<TagFilter> {
    let filter = match kind {
        "default_only" => TagFilter::DefaultOnly,
        "any" => TagFilter::Any,
        "none" => TagFilter::None,
        "tags" => TagFilter::Tags(tags),
        "default_and" => TagFilter::DefaultAnd(tags),
        other => return Err(errors::value_error(format!("unknown tag filter kind {other:?}"))),
    };
    duroxide_runtime::validate_tag_filter(&filter).map_err(|e| errors::value_error(e.to_string()))?;
    Ok(filter)
}

#[pyfunction]
#[pyo3(signature = (*, orchestration_concurrency, worker_concurrency, dispatcher_poll_interval_ms,
    worker_lock_timeout_ms, orchestrator_lock_timeout_ms, max_attempts, log_level, log_format,
    service_name, service_version, max_sessions_per_runtime, session_idle_timeout_ms, worker_node_id,
    tag_filter_kind, tag_filter_tags, inline_activity_wait_ms))]
#[allow(clippy::too_many_arguments)]
pub fn build_options(
    orchestration_concurrency: usize,
    worker_concurrency: usize,
    dispatcher_poll_interval_ms: u64,
    worker_lock_timeout_ms: u64,
    orchestrator_lock_timeout_ms: u64,
    max_attempts: u32,
    log_level: Option<String>,
    log_format: String,
    service_name: Option<String>,
    service_version: Option<String>,
    max_sessions_per_runtime: usize,
    session_idle_timeout_ms: u64,
    worker_node_id: Option<String>,
    tag_filter_kind: String,
    tag_filter_tags: Vec<String>,
    inline_activity_wait_ms: u64,
) -> PyResult<PyOptions> {
    let log_format = LogFormat::parse(&log_format).map_err(|e| errors::value_error(e.to_string()))?;
    let options = RuntimeOptions {
        orchestration_concurrency,
        worker_concurrency,
        dispatcher_poll_interval: Duration::from_millis(dispatcher_poll_interval_ms),
        worker_lock_timeout: Duration::from_millis(worker_lock_timeout_ms),
        orchestrator_lock_timeout: Duration::from_millis(orchestrator_lock_timeout_ms),
        max_attempts,
        log_level,
        log_format,
        service_name,
        service_version,
        max_sessions_per_runtime,
        session_idle_timeout: Duration::from_millis(session_idle_timeout_ms),
        worker_node_id,
        worker_tag_filter: tag_filter(&tag_filter_kind, tag_filter_tags)?,
        inline_activity_wait: Duration::from_millis(inline_activity_wait_ms),
        ..RuntimeOptions::default()
    };
    options
        .validate()
        .map_err(|e| errors::value_error(e.to_string()))?;
    Ok(PyOptions { inner: options })
}
