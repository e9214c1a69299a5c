//! Entering Python from the runtime's threads, with each thread's Python thread state kept between
//! calls instead of made and destroyed every time.
//!
//! Why: PyO3's `Python::attach` on a thread Python does not know creates a thread state and deletes
//! it when the call ends. CPython (3.11) gives every new thread state a frame stack that it maps and
//! unmaps, so each activity call and each orchestration step paid an `mmap`, an `munmap`, fresh page
//! faults and a TLB shootdown on the other cores: about a seventh of the CPU of a chain of activities
//! on in-memory SQLite. Here the first call on such a thread takes a thread state of its own
//! (`PyGILState_Ensure` once, then releases the GIL keeping the state), so later calls only take and
//! give back the GIL. The runtime's `on_thread_stop` hook ([`release`]) deletes the state when a
//! thread ends, unless the interpreter is shutting down, when touching it would be unsafe.

#![allow(unsafe_code)] // CPython's thread-state calls have no safe PyO3 wrapper.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;

/// Set by an `atexit` hook: the interpreter is finalizing, thread states must not be touched.
static PYTHON_EXITING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The thread state this thread keeps, with the `PyGILState_Ensure` result that made it.
    static KEPT: Cell<Option<(ffi::PyGILState_STATE, *mut ffi::PyThreadState)>> = const { Cell::new(None) };
}

/// Runs `f` holding the GIL, keeping this thread's Python thread state for the next call.
pub fn attach<F, R>(f: F) -> R
where
    F: for<'py> FnOnce(Python<'py>) -> R,
{
    keep_thread_state();
    Python::attach(f)
}

fn keep_thread_state() {
    if KEPT.with(Cell::get).is_some() || PYTHON_EXITING.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: the interpreter is running (checked; after shutdown PyO3 refuses to attach anyway),
    // and a thread without a thread state cannot hold the GIL, so `PyGILState_Ensure` takes it here
    // and `PyEval_SaveThread` gives it back, leaving the state registered for this thread.
    unsafe {
        if ffi::Py_IsInitialized() != 0 && ffi::PyGILState_GetThisThreadState().is_null() {
            let gil = ffi::PyGILState_Ensure();
            let state = ffi::PyEval_SaveThread();
            KEPT.with(|kept| kept.set(Some((gil, state))));
        }
    }
}

/// Deletes the thread state this thread kept, if any. Called as the thread ends.
///
/// Attaching after the interpreter shut down is refused by PyO3 itself (`Py_IsInitialized` turns
/// false before finalization deletes the thread states), so a kept state is never used after that.
pub fn release() {
    let Some((gil, state)) = KEPT.with(Cell::take) else {
        return;
    };
    // During finalization the interpreter deletes thread states itself, and a thread that asks for
    // the GIL then may be stopped on the spot; leaving the state alone is the safe choice.
    if PYTHON_EXITING.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: the state was made on this thread by `keep_thread_state`, and the thread does not hold
    // the GIL; restoring it and releasing the matching ensure deletes it.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            ffi::PyEval_RestoreThread(state);
            ffi::PyGILState_Release(gil);
        }
    }
}

/// Registered with `atexit` when the module loads.
#[pyfunction]
pub fn _mark_python_exiting() {
    PYTHON_EXITING.store(true, Ordering::Release);
}

/// Registers the `atexit` hook that stops [`release`] from touching thread states at shutdown.
pub fn register_exit_hook(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(_mark_python_exiting, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}
