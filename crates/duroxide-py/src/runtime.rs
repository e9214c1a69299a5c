//! The native runtime: a registry per object, started and stopped on the shared tokio runtime.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide_core::Provider;
use duroxide_runtime::{ActivityRegistry, MetricsSnapshot, OrchestrationRegistry, Runtime, RuntimeOptions};
use pyo3::prelude::*;

use crate::activity::PyActivity;
use crate::errors;
use crate::options::PyOptions;
use crate::orchestration::PyOrchestration;
use crate::provider::PyProvider;
use crate::rt;

/// Where a runtime object is in its life.
enum State {
    Registering {
        activities: ActivityRegistry,
        orchestrations: OrchestrationRegistry,
    },
    Running(Runtime),
    Stopped(MetricsSnapshot),
    /// Transient while starting or stopping.
    Busy,
}

#[pyclass(frozen, module = "duroxide._native", name = "NativeRuntime")]
pub struct PyRuntime {
    provider: Arc<dyn Provider>,
    options: RuntimeOptions,
    state: Mutex<State>,
}

impl std::fmt::Debug for PyRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRuntime").finish_non_exhaustive()
    }
}

impl PyRuntime {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_registering(py: Python<'_>, what: &str) -> PyErr {
    errors::duroxide_error(
        py,
        format!("cannot register {what} after the runtime was started; register everything before start()"),
    )
}

#[pymethods]
impl PyRuntime {
    #[new]
    #[pyo3(signature = (provider, options=None))]
    fn new(provider: &PyProvider, options: Option<&PyOptions>) -> Self {
        let mut options = options.map(|o| o.inner.clone()).unwrap_or_default();
        // `RUST_LOG=... python app.py` shows the runtime's logs even when no level was configured.
        if options.log_level.is_none() {
            if let Ok(filter) = std::env::var("RUST_LOG") {
                if tracing_subscriber::EnvFilter::try_new(&filter).is_ok() {
                    options.log_level = Some(filter);
                }
            }
        }
        PyRuntime {
            provider: provider.inner.clone(),
            options,
            state: Mutex::new(State::Registering {
                activities: ActivityRegistry::new(),
                orchestrations: OrchestrationRegistry::new(),
            }),
        }
    }

    fn register_activity(&self, py: Python<'_>, name: &str, entry: Py<PyAny>) -> PyResult<()> {
        let mut state = self.state();
        let State::Registering { activities, .. } = &mut *state else {
            return Err(not_registering(py, &format!("activity {name:?}")));
        };
        activities
            .register(name, PyActivity::new(entry))
            .map_err(|e| errors::invalid_input(py, e.to_string()))
    }

    fn register_orchestration(
        &self,
        py: Python<'_>,
        name: &str,
        version: &str,
        entry: Py<PyAny>,
    ) -> PyResult<()> {
        let mut state = self.state();
        let State::Registering { orchestrations, .. } = &mut *state else {
            return Err(not_registering(py, &format!("orchestration {name:?}")));
        };
        orchestrations
            .register_arc(name, version, Arc::new(PyOrchestration::new(entry)))
            .map_err(|e| errors::invalid_input(py, e.to_string()))
    }

    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let (activities, orchestrations) = {
            let mut state = self.state();
            match std::mem::replace(&mut *state, State::Busy) {
                State::Registering {
                    activities,
                    orchestrations,
                } => (activities, orchestrations),
                other => {
                    let already = matches!(other, State::Running(_) | State::Busy);
                    *state = other;
                    return Err(errors::duroxide_error(
                        py,
                        if already {
                            "the runtime is already started"
                        } else {
                            "the runtime was shut down; create a new Runtime to start again"
                        },
                    ));
                }
            }
        };
        let start = Runtime::start(
            self.provider.clone(),
            activities,
            orchestrations,
            self.options.clone(),
        );
        match rt::block_on(py, start) {
            Ok(Ok(runtime)) => {
                *self.state() = State::Running(runtime);
                Ok(())
            }
            Ok(Err(e)) => {
                *self.state() = State::Stopped(MetricsSnapshot::default());
                Err(errors::value_error(e.to_string()))
            }
            Err(e) => {
                *self.state() = State::Stopped(MetricsSnapshot::default());
                Err(e)
            }
        }
    }

    /// Stops the dispatchers, waiting up to `timeout_ms` for in-flight work. A no-op unless running.
    fn shutdown(&self, py: Python<'_>, timeout_ms: u64) -> PyResult<()> {
        let runtime = {
            let mut state = self.state();
            match std::mem::replace(&mut *state, State::Busy) {
                State::Running(runtime) => runtime,
                other => {
                    *state = other;
                    return Ok(());
                }
            }
        };
        let last = runtime.metrics_snapshot();
        let result = rt::block_on(py, runtime.shutdown(Duration::from_millis(timeout_ms)));
        *self.state() = State::Stopped(last);
        result
    }

    /// `[(counter, value)]`, or `None` before the runtime was started.
    fn metrics_snapshot(&self) -> Option<Vec<(&'static str, u64)>> {
        match &*self.state() {
            State::Running(runtime) => Some(runtime.metrics_snapshot().entries()),
            State::Stopped(last) => Some(last.entries()),
            _ => None,
        }
    }

    #[getter]
    fn is_running(&self) -> bool {
        matches!(&*self.state(), State::Running(_))
    }

    #[getter]
    fn node_id(&self) -> Option<String> {
        match &*self.state() {
            State::Running(runtime) => Some(runtime.node_id().to_string()),
            _ => None,
        }
    }
}
