//! The thread that drives the provider's own connections: their socket reads and writes run there,
//! not on the caller's runtime.
//!
//! Why: a statement's reply reaches its caller only once the connection's driver task has read it.
//! On the caller's runtime that task waits behind whatever else the runtime's workers are running
//! (dispatcher turns, and in the Python bindings orchestration code that takes the GIL), and under
//! load an I/O event may wait for a worker to poll the driver. A thread whose only tasks are
//! connection drivers reads each reply as it arrives. Measured on the reference machine (2 cores):
//! Python `py_workloads.py pg 500`, 3 interleaved pairs, chain3 708–768 → 811–897 orchestrations/s
//! and fan-out 3–4% lower; in 3 interleaved pairs of timer runs (4 × 500 instances each), a client's
//! durable start p50 0.71–0.82 → 0.65–0.77 ms.
//!
//! One thread serves every provider object of the process. It runs a current-thread tokio runtime
//! whose tasks never block, and it lives as long as the process: a connection's task ends when its
//! client is dropped, and nothing else runs there.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};

/// Runs `open` (which opens a connection and spawns its driver) on the driver thread and returns
/// its output. Anything `open` spawns runs there too.
pub(crate) async fn run<F, T>(open: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match handle().spawn(open).await {
        Ok(output) => output,
        // `open` panicked: the caller sees the same panic. (A task there is never cancelled: the
        // runtime lives in a static, which is never dropped.)
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

fn handle() -> &'static Handle {
    static DRIVER: OnceLock<Handle> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the PostgreSQL connection driver runtime could not start");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("duroxide-pg-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("the PostgreSQL connection driver thread could not start");
        handle
    })
}
