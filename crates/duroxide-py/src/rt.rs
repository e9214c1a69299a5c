//! The process-wide tokio runtime the bindings run on, and blocking on it from Python threads.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;

use crate::{errors, thread_state};

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

thread_local! {
    /// Set while this thread runs orchestration code: blocking there would stall a dispatcher (and
    /// nothing an orchestration does may depend on I/O outside its history).
    static IN_ORCHESTRATION: Cell<bool> = const { Cell::new(false) };
}

/// The shared runtime: dispatchers, provider I/O and client waits of every object in the process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("duroxide")
            .on_thread_stop(thread_state::release)
            .build()
            .expect("the tokio runtime of the duroxide extension could not start")
    })
}

/// How long a blocking call waits with the GIL released before it checks for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(250);

/// Runs `future` to completion with the GIL released, so activities and other Python threads go on.
/// A long wait still answers Ctrl-C: the signal handlers run every quarter second and an exception
/// they raise (`KeyboardInterrupt`) ends the wait.
pub fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    if IN_ORCHESTRATION.with(Cell::get) {
        return Err(errors::duroxide_error(
            py,
            "blocking calls (Client, Runtime) are not allowed inside orchestration code: they are not \
             deterministic; call them from an activity",
        ));
    }
    let mut future = std::pin::pin!(future);
    loop {
        // The timeout's timer must be created inside the runtime, hence the async block.
        let step =
            py.detach(|| runtime().block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut future).await }));
        match step {
            Ok(output) => return Ok(output),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// Marks the current thread as running orchestration code until the guard drops.
pub struct OrchestrationScope {
    previous: bool,
}

impl OrchestrationScope {
    pub fn enter() -> Self {
        OrchestrationScope {
            previous: IN_ORCHESTRATION.with(|c| c.replace(true)),
        }
    }
}

impl Drop for OrchestrationScope {
    fn drop(&mut self) {
        let previous = self.previous;
        IN_ORCHESTRATION.with(|c| c.set(previous));
    }
}
