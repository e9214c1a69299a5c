//! Error mapping: Rust errors become the exception classes defined in `duroxide.exceptions`.

use duroxide_runtime::ClientError;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyType;

/// An instance of `duroxide.exceptions.<class_name>` with `message`. Falls back to `RuntimeError` if
/// the Python package is not importable (only when the native module is used on its own).
pub fn exception(py: Python<'_>, class_name: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    let class = py
        .import("duroxide.exceptions")
        .and_then(|m| m.getattr(class_name))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
    match class {
        Ok(class) => PyErr::from_type(class, (message,)),
        Err(_) => PyRuntimeError::new_err(message),
    }
}

pub fn duroxide_error(py: Python<'_>, message: impl Into<String>) -> PyErr {
    exception(py, "DuroxideError", message)
}

pub fn invalid_input(py: Python<'_>, message: impl Into<String>) -> PyErr {
    exception(py, "InvalidInput", message)
}

pub fn value_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// Maps a client failure to its exception class.
pub fn client_error(py: Python<'_>, error: ClientError) -> PyErr {
    match error {
        ClientError::InvalidInput(m) => exception(py, "InvalidInput", m),
        ClientError::NotFound(m) => exception(py, "NotFound", m),
        ClientError::StillRunning(m) => exception(py, "StillRunning", m),
        ClientError::Timeout => exception(py, "OrchestrationTimeout", "Operation timed out"),
        ClientError::Provider(e) => exception(py, "DuroxideError", e.to_string()),
    }
}

/// Extension for results of client calls.
pub trait ClientResultExt<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> ClientResultExt<T> for Result<T, ClientError> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| client_error(py, e))
    }
}
