//! The root waker: a flag the engine checks to decide whether the orchestration needs polling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Wake;

/// Set by any wake-up that reaches the orchestration's top-level future.
#[derive(Debug, Default)]
pub(crate) struct RootWake {
    woken: AtomicBool,
}

impl RootWake {
    pub fn wake_flag(&self) {
        self.woken.store(true, Ordering::Release);
    }

    /// Returns whether the root was woken since the last call, clearing the flag.
    pub fn take_flag(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }
}

impl Wake for RootWake {
    fn wake(self: Arc<Self>) {
        self.wake_flag();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_flag();
    }
}
