//! Activities: a Rust `ActivityHandler` that runs a Python function on a blocking thread (holding the
//! GIL only while Python runs), and the native activity context handed to it.

use std::sync::Arc;

use duroxide_runtime::{ActivityContext, ActivityFuture, ActivityHandler};
use pyo3::prelude::*;

use crate::client::PyClient;
use crate::thread_state;

/// A registered Python activity. `entry(native_ctx, input_json)` is the Python layer's wrapper: it
/// decodes the input, calls the user's function (awaiting it if async) and returns `(True, output_json)`
/// or `(False, "<ExceptionType>: <message>")`.
pub struct PyActivity {
    entry: Arc<Py<PyAny>>,
}

impl PyActivity {
    pub fn new(entry: Py<PyAny>) -> Self {
        PyActivity {
            entry: Arc::new(entry),
        }
    }
}

fn call(entry: &Py<PyAny>, ctx: ActivityContext, input: String) -> Result<String, String> {
    thread_state::attach(|py| {
        let outcome = Py::new(py, PyActivityContext { ctx })
            .and_then(|native| entry.call1(py, (native, input)))
            .and_then(|r| r.extract::<(bool, String)>(py));
        match outcome {
            Ok((true, output)) => Ok(output),
            Ok((false, error)) => Err(error),
            // The wrapper catches everything; reaching here means the wrapper itself broke.
            Err(e) => Err(format!("activity wrapper failed: {e}")),
        }
    })
}

impl ActivityHandler for PyActivity {
    fn invoke(&self, ctx: ActivityContext, input: String) -> ActivityFuture {
        let entry = self.entry.clone();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || call(&entry, ctx, input)).await {
                Ok(result) => result,
                Err(e) => Err(format!("activity thread failed: {e}")),
            }
        })
    }
}

/// What a running activity knows about itself (wrapped by `duroxide.ActivityContext`).
#[pyclass(frozen, module = "duroxide._native", name = "NativeActivityContext")]
#[derive(Debug)]
pub struct PyActivityContext {
    ctx: ActivityContext,
}

#[pymethods]
impl PyActivityContext {
    #[getter]
    fn instance_id(&self) -> &str {
        self.ctx.instance_id()
    }
    #[getter]
    fn execution_id(&self) -> u64 {
        self.ctx.execution_id()
    }
    #[getter]
    fn orchestration_name(&self) -> &str {
        self.ctx.orchestration_name()
    }
    #[getter]
    fn orchestration_version(&self) -> &str {
        self.ctx.orchestration_version()
    }
    #[getter]
    fn activity_name(&self) -> &str {
        self.ctx.activity_name()
    }
    #[getter]
    fn activity_id(&self) -> u64 {
        self.ctx.activity_id()
    }
    #[getter]
    fn worker_id(&self) -> &str {
        self.ctx.worker_id()
    }
    #[getter]
    fn session_id(&self) -> Option<&str> {
        self.ctx.session_id()
    }
    #[getter]
    fn attempt(&self) -> u32 {
        self.ctx.attempt()
    }
    fn tag(&self) -> Option<&str> {
        self.ctx.tag()
    }
    fn is_cancelled(&self) -> bool {
        self.ctx.is_cancelled()
    }
    fn get_client(&self) -> PyClient {
        PyClient {
            inner: self.ctx.get_client(),
        }
    }
    fn trace(&self, level: &str, message: &str) {
        match level {
            "error" => self.ctx.trace_error(message),
            "warn" => self.ctx.trace_warn(message),
            "debug" => self.ctx.trace_debug(message),
            _ => self.ctx.trace_info(message),
        }
    }
}
