//! The native client: every `Client` call, blocking with the GIL released. Payloads are JSON text;
//! the Python layer encodes and decodes them.

use std::time::Duration;

use duroxide_core::provider::{InstanceFilter, InstanceInfo, PruneOptions};
use duroxide_runtime::{Client, OrchestrationState};
use pyo3::prelude::*;

use crate::errors::ClientResultExt;
use crate::provider::PyProvider;
use crate::rt;

/// `(status, output, error, custom_status, custom_status_version)`.
type StateTuple = (String, Option<String>, Option<String>, Option<String>, u64);

fn state_tuple(s: OrchestrationState) -> StateTuple {
    (
        s.status.as_str().to_string(),
        s.output,
        s.error,
        s.custom_status,
        s.custom_status_version,
    )
}

/// `(history_event_count, history_size_bytes, queue_pending_count, kv_user_key_count, kv_total_value_bytes)`.
type StatsTuple = (u64, u64, u64, u64, u64);

/// `(instance_id, name, version, current_execution_id, status, output, created_at, updated_at, parent)`.
type InfoTuple = (
    String,
    String,
    Option<String>,
    u64,
    String,
    Option<String>,
    u64,
    u64,
    Option<String>,
);

fn info_tuple(i: InstanceInfo) -> InfoTuple {
    (
        i.instance_id,
        i.name,
        i.version,
        i.current_execution_id,
        i.status.as_str().to_string(),
        i.output,
        i.created_at_ms,
        i.updated_at_ms,
        i.parent_instance_id,
    )
}

fn filter(ids: Option<Vec<String>>, completed_before: Option<u64>, limit: Option<u32>) -> InstanceFilter {
    InstanceFilter {
        instance_ids: ids,
        completed_before_ms: completed_before,
        limit,
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A client bound to one provider.
#[pyclass(frozen, module = "duroxide._native", name = "NativeClient")]
#[derive(Debug)]
pub struct PyClient {
    pub inner: Client,
}

#[pymethods]
impl PyClient {
    #[new]
    fn new(provider: &PyProvider) -> Self {
        PyClient {
            inner: Client::new(provider.inner.clone()),
        }
    }

    #[pyo3(signature = (instance_id, name, input, version=None))]
    fn start_orchestration(
        &self,
        py: Python<'_>,
        instance_id: String,
        name: String,
        input: String,
        version: Option<String>,
    ) -> PyResult<()> {
        let c = &self.inner;
        rt::block_on(py, async {
            match &version {
                Some(v) => {
                    c.start_orchestration_versioned(&instance_id, &name, &input, v)
                        .await
                }
                None => c.start_orchestration(&instance_id, &name, &input).await,
            }
        })?
        .py_err(py)
    }

    fn raise_event(&self, py: Python<'_>, instance_id: String, name: String, data: String) -> PyResult<()> {
        let c = &self.inner;
        rt::block_on(py, c.raise_event(&instance_id, &name, &data))?.py_err(py)
    }

    fn enqueue_event(
        &self,
        py: Python<'_>,
        instance_id: String,
        queue: String,
        data: String,
    ) -> PyResult<()> {
        let c = &self.inner;
        rt::block_on(py, c.enqueue_event(&instance_id, &queue, &data))?.py_err(py)
    }

    fn cancel_instance(&self, py: Python<'_>, instance_id: String, reason: String) -> PyResult<()> {
        let c = &self.inner;
        rt::block_on(py, c.cancel_instance(&instance_id, &reason))?.py_err(py)
    }

    fn get_status(&self, py: Python<'_>, instance_id: String) -> PyResult<StateTuple> {
        let c = &self.inner;
        rt::block_on(py, c.get_status(&instance_id))?
            .py_err(py)
            .map(state_tuple)
    }

    fn wait_for_orchestration(
        &self,
        py: Python<'_>,
        instance_id: String,
        timeout_ms: u64,
    ) -> PyResult<StateTuple> {
        let c = &self.inner;
        rt::block_on(py, c.wait_for_orchestration(&instance_id, ms(timeout_ms)))?
            .py_err(py)
            .map(state_tuple)
    }

    fn wait_for_status_change(
        &self,
        py: Python<'_>,
        instance_id: String,
        last_seen_version: u64,
        poll_interval_ms: u64,
        timeout_ms: u64,
    ) -> PyResult<Option<StateTuple>> {
        let c = &self.inner;
        let fut = c.wait_for_status_change(
            &instance_id,
            last_seen_version,
            ms(poll_interval_ms),
            ms(timeout_ms),
        );
        rt::block_on(py, fut)?.py_err(py).map(|s| s.map(state_tuple))
    }

    fn get_kv_value(&self, py: Python<'_>, instance_id: String, key: String) -> PyResult<Option<String>> {
        let c = &self.inner;
        rt::block_on(py, c.get_kv_value(&instance_id, &key))?.py_err(py)
    }

    /// The value once the key exists; `None` on timeout (the Python layer raises `TimeoutError`).
    fn wait_for_kv_value(
        &self,
        py: Python<'_>,
        instance_id: String,
        key: String,
        timeout_ms: u64,
    ) -> PyResult<Option<String>> {
        let c = &self.inner;
        match rt::block_on(py, c.wait_for_kv_value(&instance_id, &key, ms(timeout_ms)))? {
            Ok(v) => Ok(Some(v)),
            Err(duroxide_runtime::ClientError::Timeout) => Ok(None),
            Err(e) => Err(crate::errors::client_error(py, e)),
        }
    }

    // ---- management ---------------------------------------------------------------------------------

    fn list_all_instances(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let c = &self.inner;
        rt::block_on(py, c.list_all_instances())?.py_err(py)
    }

    fn list_instances_by_status(&self, py: Python<'_>, status: String) -> PyResult<Vec<String>> {
        let c = &self.inner;
        rt::block_on(py, c.list_instances_by_status(&status))?.py_err(py)
    }

    fn get_instance_info(&self, py: Python<'_>, instance_id: String) -> PyResult<InfoTuple> {
        let c = &self.inner;
        rt::block_on(py, c.get_instance_info(&instance_id))?
            .py_err(py)
            .map(info_tuple)
    }

    /// `(execution_id, status, output, started_at, completed_at, event_count)`.
    #[allow(clippy::type_complexity)]
    fn get_execution_info(
        &self,
        py: Python<'_>,
        instance_id: String,
        execution_id: u64,
    ) -> PyResult<(u64, String, Option<String>, u64, Option<u64>, u64)> {
        let c = &self.inner;
        let e = rt::block_on(py, c.get_execution_info(&instance_id, execution_id))?.py_err(py)?;
        Ok((
            e.execution_id,
            e.status.as_str().to_string(),
            e.output,
            e.started_at_ms,
            e.completed_at_ms,
            e.event_count,
        ))
    }

    fn list_executions(&self, py: Python<'_>, instance_id: String) -> PyResult<Vec<u64>> {
        let c = &self.inner;
        rt::block_on(py, c.list_executions(&instance_id))?.py_err(py)
    }

    /// `[(event_id, kind, source_event_id, timestamp_ms, data_json)]`.
    #[allow(clippy::type_complexity)]
    fn read_execution_history(
        &self,
        py: Python<'_>,
        instance_id: String,
        execution_id: u64,
    ) -> PyResult<Vec<(u64, String, Option<u64>, u64, String)>> {
        let c = &self.inner;
        let events = rt::block_on(py, c.read_execution_history(&instance_id, execution_id))?.py_err(py)?;
        Ok(events
            .into_iter()
            .map(|e| {
                let data = e.data_json();
                (
                    e.event_id,
                    e.kind.name().to_string(),
                    e.source_event_id,
                    e.timestamp_ms,
                    data,
                )
            })
            .collect())
    }

    fn get_instance_tree(&self, py: Python<'_>, instance_id: String) -> PyResult<Vec<String>> {
        let c = &self.inner;
        rt::block_on(py, c.get_instance_tree(&instance_id))?.py_err(py)
    }

    /// `(instances_deleted, executions_deleted, events_deleted, queue_messages_deleted)`.
    fn delete_instance(
        &self,
        py: Python<'_>,
        instance_id: String,
        force: bool,
    ) -> PyResult<(u64, u64, u64, u64)> {
        let c = &self.inner;
        let r = rt::block_on(py, c.delete_instance(&instance_id, force))?.py_err(py)?;
        Ok((
            r.instances_deleted,
            r.executions_deleted,
            r.events_deleted,
            r.queue_messages_deleted,
        ))
    }

    #[pyo3(signature = (instance_ids, completed_before, limit))]
    fn delete_instance_bulk(
        &self,
        py: Python<'_>,
        instance_ids: Option<Vec<String>>,
        completed_before: Option<u64>,
        limit: Option<u32>,
    ) -> PyResult<(u64, u64, u64, u64)> {
        let c = &self.inner;
        let f = filter(instance_ids, completed_before, limit);
        let r = rt::block_on(py, c.delete_instance_bulk(&f))?.py_err(py)?;
        Ok((
            r.instances_deleted,
            r.executions_deleted,
            r.events_deleted,
            r.queue_messages_deleted,
        ))
    }

    /// `(instances_processed, executions_deleted, events_deleted)`.
    #[pyo3(signature = (instance_id, keep_last, completed_before))]
    fn prune_executions(
        &self,
        py: Python<'_>,
        instance_id: String,
        keep_last: Option<u32>,
        completed_before: Option<u64>,
    ) -> PyResult<(u64, u64, u64)> {
        let c = &self.inner;
        let o = PruneOptions {
            keep_last,
            completed_before_ms: completed_before,
        };
        let r = rt::block_on(py, c.prune_executions(&instance_id, &o))?.py_err(py)?;
        Ok((r.instances_processed, r.executions_deleted, r.events_deleted))
    }

    #[pyo3(signature = (instance_ids, completed_before, limit, keep_last, prune_completed_before))]
    #[allow(clippy::too_many_arguments)]
    fn prune_executions_bulk(
        &self,
        py: Python<'_>,
        instance_ids: Option<Vec<String>>,
        completed_before: Option<u64>,
        limit: Option<u32>,
        keep_last: Option<u32>,
        prune_completed_before: Option<u64>,
    ) -> PyResult<(u64, u64, u64)> {
        let c = &self.inner;
        let f = filter(instance_ids, completed_before, limit);
        let o = PruneOptions {
            keep_last,
            completed_before_ms: prune_completed_before,
        };
        let r = rt::block_on(py, c.prune_executions_bulk(&f, &o))?.py_err(py)?;
        Ok((r.instances_processed, r.executions_deleted, r.events_deleted))
    }

    /// `(total_instances, total_executions, running, completed, failed, total_events)`.
    fn get_system_metrics(&self, py: Python<'_>) -> PyResult<(u64, u64, u64, u64, u64, u64)> {
        let c = &self.inner;
        let m = rt::block_on(py, c.get_system_metrics())?.py_err(py)?;
        Ok((
            m.total_instances,
            m.total_executions,
            m.running_instances,
            m.completed_instances,
            m.failed_instances,
            m.total_events,
        ))
    }

    /// `(orchestrator_queue, worker_queue, timer_queue)`.
    fn get_queue_depths(&self, py: Python<'_>) -> PyResult<(u64, u64, u64)> {
        let c = &self.inner;
        let d = rt::block_on(py, c.get_queue_depths())?.py_err(py)?;
        Ok((d.orchestrator_queue, d.worker_queue, d.timer_queue))
    }

    /// `(history_event_count, history_size_bytes, queue_pending_count, kv_user_key_count,
    /// kv_total_value_bytes)` or `None` for an unknown id.
    fn get_orchestration_stats(&self, py: Python<'_>, instance_id: String) -> PyResult<Option<StatsTuple>> {
        let c = &self.inner;
        let s = rt::block_on(py, c.get_orchestration_stats(&instance_id))?.py_err(py)?;
        Ok(s.map(|s| {
            (
                s.history_event_count,
                s.history_size_bytes,
                s.queue_pending_count,
                s.kv_user_key_count,
                s.kv_total_value_bytes,
            )
        }))
    }
}
