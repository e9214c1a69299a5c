//! The native orchestration context (wrapped by `duroxide.OrchestrationContext`): task factories and
//! the non-yielding calls (custom status, KV, tracing), all passed straight to the engine's context.

use std::collections::BTreeMap;
use std::time::Duration;

use duroxide_core::engine::LogLevel;
use duroxide_core::retry::Backoff;
use duroxide_core::{ActivityOptions, OrchestrationContext, RetryPolicy};
use pyo3::prelude::*;

use crate::errors;
use crate::task::{Task, TaskKind};

#[pyclass(frozen, module = "duroxide._native", name = "NativeOrchestrationContext")]
#[derive(Debug)]
pub struct PyOrchestrationContext {
    ctx: OrchestrationContext,
}

impl PyOrchestrationContext {
    pub fn new(ctx: OrchestrationContext) -> Self {
        PyOrchestrationContext { ctx }
    }
}

/// `(max_attempts, backoff, timeout_ms, total_timeout_ms)` as normalised by the Python layer.
type RetryTuple = (u32, String, Option<u64>, Option<u64>);

fn retry_policy(retry: RetryTuple) -> PyResult<RetryPolicy> {
    let (max_attempts, backoff, timeout_ms, total_timeout_ms) = retry;
    let backoff = match backoff.as_str() {
        "exponential" => Backoff::exponential(),
        "linear" => Backoff::linear(),
        "fixed" => Backoff::fixed(),
        "none" => Backoff::None,
        other => {
            return Err(errors::value_error(format!(
                "unknown backoff {other:?}; expected exponential, linear, fixed or none"
            )))
        }
    };
    let policy = RetryPolicy {
        max_attempts,
        backoff,
        timeout: timeout_ms.map(Duration::from_millis),
        total_timeout: total_timeout_ms.map(Duration::from_millis),
    };
    policy
        .validate()
        .map_err(|e| errors::value_error(format!("invalid retry policy: {e}")))?;
    Ok(policy)
}

#[pymethods]
impl PyOrchestrationContext {
    #[getter]
    fn instance_id(&self) -> String {
        self.ctx.instance_id()
    }
    #[getter]
    fn execution_id(&self) -> u64 {
        self.ctx.execution_id()
    }
    #[getter]
    fn orchestration_name(&self) -> String {
        self.ctx.orchestration_name()
    }
    #[getter]
    fn orchestration_version(&self) -> String {
        self.ctx.orchestration_version()
    }
    #[getter]
    fn is_replaying(&self) -> bool {
        self.ctx.is_replaying()
    }

    // ---- task factories -----------------------------------------------------------------------------

    #[pyo3(signature = (name, input, session_id=None, tag=None, retry=None))]
    fn activity(
        &self,
        name: String,
        input: String,
        session_id: Option<String>,
        tag: Option<String>,
        retry: Option<RetryTuple>,
    ) -> PyResult<Task> {
        if let Some(t) = &tag {
            duroxide_core::limits::validate_tag(t).map_err(errors::value_error)?;
        }
        let retry = retry.map(retry_policy).transpose()?;
        Ok(Task::new(TaskKind::Activity {
            name,
            input,
            options: ActivityOptions { session_id, tag },
            retry,
        }))
    }

    fn timer(&self, delay_ms: u64) -> Task {
        Task::new(TaskKind::Timer { delay_ms })
    }

    fn wait_for_event(&self, name: String) -> Task {
        Task::new(TaskKind::Event { name })
    }

    fn dequeue_event(&self, queue: String) -> Task {
        Task::new(TaskKind::Dequeue { queue })
    }

    #[pyo3(signature = (name, version, instance_id, input))]
    fn sub_orchestration(
        &self,
        name: String,
        version: Option<String>,
        instance_id: Option<String>,
        input: String,
    ) -> Task {
        Task::new(TaskKind::SubOrchestration {
            name,
            version,
            instance_id,
            input,
        })
    }

    #[pyo3(signature = (name, version, instance_id, input))]
    fn start_orchestration(
        &self,
        name: String,
        version: Option<String>,
        instance_id: String,
        input: String,
    ) -> Task {
        Task::new(TaskKind::StartOrchestration {
            name,
            version,
            instance_id,
            input,
        })
    }

    /// Records the continue-as-new at once (so it takes effect even if the task is not yielded) and
    /// returns a task that never resolves.
    #[pyo3(signature = (input, version=None))]
    fn continue_as_new(&self, input: String, version: Option<String>) -> Task {
        // The returned future never resolves; the engine ends the execution instead.
        drop(self.ctx.continue_as_new_versioned(input, version.as_deref()));
        Task::new(TaskKind::ContinueAsNew)
    }

    fn utc_now(&self) -> Task {
        Task::new(TaskKind::UtcNow)
    }

    fn new_guid(&self) -> Task {
        Task::new(TaskKind::NewGuid)
    }

    fn get_kv_value_from_instance(&self, instance_id: String, key: String) -> Task {
        Task::new(TaskKind::KvFromInstance { instance_id, key })
    }

    fn all(&self, tasks: Vec<Py<Task>>) -> Task {
        Task::new(TaskKind::All(tasks))
    }

    fn race(&self, tasks: Vec<Py<Task>>) -> PyResult<Task> {
        if tasks.is_empty() {
            return Err(errors::value_error("race needs at least one task"));
        }
        Ok(Task::new(TaskKind::Race(tasks)))
    }

    // ---- non-yielding calls -------------------------------------------------------------------------

    fn set_custom_status(&self, status: String) {
        self.ctx.set_custom_status(status)
    }
    fn reset_custom_status(&self) {
        self.ctx.reset_custom_status()
    }
    fn get_custom_status(&self) -> Option<String> {
        self.ctx.get_custom_status()
    }
    fn set_kv_value(&self, key: &str, value: String) {
        self.ctx.set_kv_value(key, value)
    }
    fn get_kv_value(&self, key: &str) -> Option<String> {
        self.ctx.get_kv_value(key)
    }
    fn get_kv_all_values(&self) -> BTreeMap<String, String> {
        self.ctx.get_kv_all_values()
    }
    fn get_kv_all_keys(&self) -> Vec<String> {
        self.ctx.get_kv_all_keys()
    }
    fn get_kv_length(&self) -> usize {
        self.ctx.get_kv_length()
    }
    fn clear_kv_value(&self, key: &str) {
        self.ctx.clear_kv_value(key)
    }
    fn clear_all_kv_values(&self) {
        self.ctx.clear_all_kv_values()
    }
    fn prune_kv_values_updated_before(&self, cutoff_ms: u64) -> usize {
        self.ctx.prune_kv_values_updated_before(cutoff_ms)
    }
    fn trace(&self, level: &str, message: String) {
        let level = match level {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "debug" => LogLevel::Debug,
            _ => LogLevel::Info,
        };
        self.ctx.trace(level, message)
    }
}
