//! Session ownership of this runtime: which sessions it holds, renewing their leases while in use and
//! releasing them once idle so another worker can take them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Held {
    last_used: Instant,
    running: usize,
}

/// Sessions this runtime owns.
#[derive(Debug)]
pub(crate) struct SessionTracker {
    held: Mutex<HashMap<String, Held>>,
    max_sessions: usize,
    idle_timeout: Duration,
}

impl SessionTracker {
    pub fn new(max_sessions: usize, idle_timeout: Duration) -> Self {
        SessionTracker {
            held: Mutex::new(HashMap::new()),
            max_sessions,
            idle_timeout,
        }
    }

    /// The lease asked of the provider: short enough that a crashed runtime's sessions move on soon,
    /// renewed while in use.
    pub fn lease(&self) -> Duration {
        self.idle_timeout.min(Duration::from_secs(30))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a fetch may claim a session nobody owns.
    pub fn may_claim_new(&self) -> bool {
        self.held().len() < self.max_sessions
    }

    /// An activity of this session starts running here.
    pub fn begin(&self, session_id: &str) {
        let mut held = self.held();
        let entry = held.entry(session_id.to_string()).or_insert(Held {
            last_used: Instant::now(),
            running: 0,
        });
        entry.running += 1;
        entry.last_used = Instant::now();
    }

    /// An activity of this session finished.
    pub fn end(&self, session_id: &str) {
        if let Some(entry) = self.held().get_mut(session_id) {
            entry.running = entry.running.saturating_sub(1);
            entry.last_used = Instant::now();
        }
    }

    /// Splits held sessions into those to renew and those idle long enough to release (removed here).
    pub fn sweep(&self) -> (Vec<String>, Vec<String>) {
        let mut held = self.held();
        let idle: Vec<String> = held
            .iter()
            .filter(|(_, h)| h.running == 0 && h.last_used.elapsed() >= self.idle_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            held.remove(id);
        }
        (held.keys().cloned().collect(), idle)
    }

    /// Forgets every session (shutdown); returns them for release.
    pub fn drain(&self) -> Vec<String> {
        self.held().drain().map(|(id, _)| id).collect()
    }
}
