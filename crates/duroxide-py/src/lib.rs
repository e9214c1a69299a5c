//! Python bindings (PyO3) for duroxide: the native module `duroxide._native`.
//!
//! The bindings stay thin: they convert values and errors at the boundary and drive Python code from
//! the engine's futures; the `duroxide` Python package (`python/duroxide`) adds JSON encoding, the
//! public classes and their docstrings. All engine logic lives in the Rust crates.

mod activity;
mod client;
mod context;
mod errors;
mod options;
mod orchestration;
mod provider;
mod rt;
mod runtime;
mod task;
mod thread_state;
mod tracing_init;

use duroxide_core::limits;
use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<provider::PyProvider>()?;
    m.add_class::<client::PyClient>()?;
    m.add_class::<runtime::PyRuntime>()?;
    m.add_class::<options::PyOptions>()?;
    m.add_class::<context::PyOrchestrationContext>()?;
    m.add_class::<activity::PyActivityContext>()?;
    m.add_class::<task::Task>()?;
    m.add_function(wrap_pyfunction!(options::build_options, m)?)?;
    m.add_function(wrap_pyfunction!(tracing_init::init_tracing, m)?)?;
    thread_state::register_exit_hook(m)?;
    m.add("MAX_KV_KEYS", limits::MAX_KV_KEYS)?;
    m.add("MAX_KV_VALUE_BYTES", limits::MAX_KV_VALUE_BYTES)?;
    m.add("MAX_WORKER_TAGS", limits::MAX_WORKER_TAGS)?;
    m.add("MAX_TAG_NAME_BYTES", limits::MAX_TAG_NAME_BYTES)?;
    m.add("MAX_INSTANCE_ID_BYTES", limits::MAX_INSTANCE_ID_BYTES)?;
    m.add("DEFAULT_VERSION", duroxide_core::registry::DEFAULT_VERSION)?;
    Ok(())
}
