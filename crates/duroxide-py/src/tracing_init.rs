//! `init_tracing`: route the runtime's tracing output to a file.

use std::fs::OpenOptions;
use std::sync::Mutex;

use pyo3::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::errors;

/// Installs the process-wide subscriber writing to `log_file` (appending). `RUST_LOG` overrides the
/// level. First caller wins: a later call fails, as does a file that cannot be opened.
#[pyfunction]
#[pyo3(signature = (log_file, log_level=None, log_format=None))]
pub fn init_tracing(
    py: Python<'_>,
    log_file: &str,
    log_level: Option<&str>,
    log_format: Option<&str>,
) -> PyResult<()> {
    let format = log_format.unwrap_or("pretty");
    if !matches!(format, "pretty" | "json" | "compact") {
        return Err(errors::value_error(format!(
            "log_format {format:?} is not one of pretty, json, compact"
        )));
    }
    let level = log_level.unwrap_or("info");
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| errors::value_error(format!("invalid log level {level:?}: {e}")))?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .map_err(|e| errors::duroxide_error(py, format!("Failed to open log file {log_file:?}: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file));
    let installed = match format {
        "json" => builder.json().try_init(),
        "compact" => builder.compact().try_init(),
        _ => builder.try_init(),
    };
    installed.map_err(|e| errors::duroxide_error(py, format!("Failed to init tracing: {e}")))
}
