//! Providers: opening a store and handing it to clients and runtimes.

use std::sync::Arc;

use duroxide_core::Provider;
use duroxide_postgres::{ConnectError, PostgresProvider};
use duroxide_sqlite::SqliteProvider;
use pyo3::prelude::*;

use crate::errors;
use crate::rt;

/// An opened store, shareable by any number of clients and runtimes.
#[pyclass(frozen, module = "duroxide._native", name = "NativeProvider")]
pub struct PyProvider {
    pub inner: Arc<dyn Provider>,
    description: String,
}

impl std::fmt::Debug for PyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

#[pymethods]
impl PyProvider {
    /// Opens (creating if needed) a SQLite database file; `path` may also be a `sqlite:` URL.
    #[staticmethod]
    fn sqlite_open(py: Python<'_>, path: String) -> PyResult<Self> {
        let opened = py.detach(|| {
            let _entered = rt::runtime().enter();
            SqliteProvider::open(&path)
        });
        match opened {
            Ok(p) => Ok(PyProvider {
                inner: Arc::new(p),
                description: format!("SqliteProvider.open({path:?})"),
            }),
            Err(e) => Err(errors::duroxide_error(
                py,
                format!("Failed to open SQLite database: {e}"),
            )),
        }
    }

    /// A private in-memory SQLite database.
    #[staticmethod]
    fn sqlite_in_memory(py: Python<'_>) -> PyResult<Self> {
        let opened = py.detach(|| {
            let _entered = rt::runtime().enter();
            SqliteProvider::in_memory()
        });
        match opened {
            Ok(p) => Ok(PyProvider {
                inner: Arc::new(p),
                description: "SqliteProvider.in_memory()".into(),
            }),
            Err(e) => Err(errors::duroxide_error(
                py,
                format!("Failed to open in-memory SQLite database: {e}"),
            )),
        }
    }

    /// Connects to PostgreSQL using `schema` (created if missing; `public` when `None`).
    #[staticmethod]
    #[pyo3(signature = (url, schema=None))]
    fn postgres_connect(py: Python<'_>, url: String, schema: Option<String>) -> PyResult<Self> {
        let schema = schema.unwrap_or_else(|| "public".to_string());
        let connected = rt::block_on(py, PostgresProvider::connect_with_schema(&url, &schema))?;
        match connected {
            Ok(p) => Ok(PyProvider {
                inner: Arc::new(p),
                description: format!("PostgresProvider(schema={schema:?})"),
            }),
            Err(e @ (ConnectError::InvalidUrl { .. } | ConnectError::InvalidSchema { .. })) => {
                Err(errors::invalid_input(py, e.to_string()))
            }
            Err(e) => Err(errors::duroxide_error(py, e.to_string())),
        }
    }

    fn __repr__(&self) -> String {
        self.description.clone()
    }
}
