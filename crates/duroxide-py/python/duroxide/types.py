"""Result and info classes returned by the client and the runtime, and the filters the client takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

__all__ = [
    "OrchestrationResult",
    "MetricsSnapshot",
    "SystemMetrics",
    "QueueDepths",
    "SystemStats",
    "InstanceInfo",
    "ExecutionInfo",
    "Event",
    "InstanceTree",
    "DeleteInstanceResult",
    "InstanceFilter",
    "PruneOptions",
    "PruneResult",
]


@dataclass(frozen=True)
class OrchestrationResult:
    """An instance's state as a client sees it.

    ``status`` is ``"Running"``, ``"Completed"``, ``"Failed"`` or ``"NotFound"``; ``output`` is the
    decoded output (only when completed), ``error`` the error text (only when failed).
    """

    status: str
    output: Any = None
    error: Optional[str] = None
    custom_status: Optional[str] = None
    custom_status_version: int = 0


class MetricsSnapshot(Mapping):
    """A point-in-time copy of a runtime's counters.

    Supports attribute access (``snap.orch_starts``) and item access (``snap["orch_starts"]``,
    ``dict(snap)``).
    """

    __slots__ = ("_values",)

    orch_starts: int
    orch_completions: int
    orch_failures: int
    orch_application_errors: int
    orch_infrastructure_errors: int
    orch_configuration_errors: int
    orch_poison: int
    activity_success: int
    activity_app_errors: int
    activity_infra_errors: int
    activity_config_errors: int
    activity_poison: int
    activity_inline_runs: int
    orch_dispatcher_items_fetched: int
    worker_dispatcher_items_fetched: int
    orch_continue_as_new: int
    suborchestration_calls: int
    provider_errors: int

    def __init__(self, values: Dict[str, int]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> int:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"MetricsSnapshot has no counter {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("MetricsSnapshot is read-only")

    def __getitem__(self, key: str) -> int:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self._values.items())
        return f"MetricsSnapshot({inner})"


@dataclass(frozen=True)
class SystemMetrics:
    """Store-wide counts."""

    total_instances: int
    total_executions: int
    running_instances: int
    completed_instances: int
    failed_instances: int
    total_events: int


@dataclass(frozen=True)
class QueueDepths:
    """Queue depths; ``timer_queue`` counts orchestrator messages not yet visible (timers, backoffs)."""

    orchestrator_queue: int
    worker_queue: int
    timer_queue: int


@dataclass(frozen=True)
class SystemStats:
    """Size figures of one instance."""

    history_event_count: int
    history_size_bytes: int
    queue_pending_count: int
    kv_user_key_count: int
    kv_total_value_bytes: int


@dataclass(frozen=True)
class InstanceInfo:
    """Metadata of an instance. Timestamps are epoch milliseconds; ``output`` is the stored text (the
    output of a completed instance, the error of a failed one)."""

    instance_id: str
    orchestration_name: str
    orchestration_version: Optional[str]
    current_execution_id: int
    status: str
    output: Optional[str]
    created_at: int
    updated_at: int
    parent_instance_id: Optional[str]


@dataclass(frozen=True)
class ExecutionInfo:
    """Metadata of one execution. Timestamps are epoch milliseconds."""

    execution_id: int
    status: str
    output: Optional[str]
    started_at: int
    completed_at: Optional[int]
    event_count: int


@dataclass(frozen=True)
class Event:
    """One history event. ``kind`` is the event type name (``ActivityScheduled``, ...); ``data`` is a
    JSON string with the payload that matters for that kind."""

    event_id: int
    kind: str
    source_event_id: Optional[int]
    timestamp_ms: int
    data: str


@dataclass(frozen=True)
class InstanceTree:
    """An instance and all its descendants, root first."""

    root_id: str
    all_ids: List[str]
    size: int


@dataclass(frozen=True)
class DeleteInstanceResult:
    """What a delete removed."""

    instances_deleted: int
    executions_deleted: int
    events_deleted: int
    queue_messages_deleted: int


@dataclass(frozen=True)
class InstanceFilter:
    """Selects terminal root instances for bulk operations (at least one criterion must be set)."""

    instance_ids: Optional[List[str]] = None
    completed_before: Optional[int] = None
    limit: Optional[int] = None


@dataclass(frozen=True)
class PruneOptions:
    """Which old executions to prune; the current execution is never removed."""

    keep_last: Optional[int] = None
    completed_before: Optional[int] = None


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed."""

    instances_processed: int
    executions_deleted: int
    events_deleted: int
