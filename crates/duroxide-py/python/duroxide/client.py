"""The client: start orchestrations, send them events, read their state, and manage stored instances."""

from __future__ import annotations

import json
from typing import Any, List, Optional, Union

from . import _native
from ._glue import dumps_typed, loads
from .exceptions import InvalidInput, Nondeterminism, OrchestrationFailed
from .types import (
    DeleteInstanceResult,
    Event,
    ExecutionInfo,
    InstanceFilter,
    InstanceInfo,
    InstanceTree,
    OrchestrationResult,
    PruneOptions,
    PruneResult,
    QueueDepths,
    SystemMetrics,
    SystemStats,
)

__all__ = ["Client"]

_dumps = json.dumps


def _check_id(instance_id: Any, what: str = "instance id") -> str:
    if not isinstance(instance_id, str):
        raise InvalidInput(f"{what} must be a string, got {type(instance_id).__name__}")
    if not instance_id:
        raise InvalidInput(f"{what} must not be empty")
    if len(instance_id) > 64 and len(instance_id.encode()) > _native.MAX_INSTANCE_ID_BYTES:
        raise InvalidInput(f"{what} is longer than {_native.MAX_INSTANCE_ID_BYTES} bytes")
    return instance_id


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{what} must be a non-empty string, got {name!r}")
    return name


def _ms(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative number of milliseconds, got {value!r}")
    return int(value)


def _result(t: "tuple") -> OrchestrationResult:
    status, output, error, custom_status, version = t
    return OrchestrationResult(
        status=status,
        output=loads(output) if output is not None else None,
        error=error,
        custom_status=custom_status,
        custom_status_version=version,
    )


def _filter_args(f: Union[InstanceFilter, dict, None]) -> "tuple":
    if f is None:
        return (None, None, None)
    if isinstance(f, dict):
        f = InstanceFilter(**f)
    if not isinstance(f, InstanceFilter):
        raise TypeError(f"expected an InstanceFilter, got {type(f).__name__}")
    ids = list(f.instance_ids) if f.instance_ids is not None else None
    return (ids, f.completed_before, f.limit)


def _prune_args(o: Union[PruneOptions, dict, None]) -> "tuple":
    if o is None:
        return (None, None)
    if isinstance(o, dict):
        o = PruneOptions(**o)
    if not isinstance(o, PruneOptions):
        raise TypeError(f"expected PruneOptions, got {type(o).__name__}")
    return (o.keep_last, o.completed_before)


class Client:
    """Talks to a provider on behalf of an application. Payloads are JSON-encoded here (a value that is
    not JSON-serialisable raises ``TypeError`` at the call) and outputs decoded. Blocking calls release
    the GIL."""

    __slots__ = ("_native",)

    def __init__(self, provider: Any) -> None:
        native = getattr(provider, "_native", None)
        if not isinstance(native, _native.NativeProvider):
            raise TypeError(f"Client needs a provider (SqliteProvider, PostgresProvider), got {provider!r}")
        self._native = _native.NativeClient(native)

    @classmethod
    def _from_native(cls, native: "_native.NativeClient") -> "Client":
        client = cls.__new__(cls)
        client._native = native
        return client

    # ---- starting and messaging -----------------------------------------------------------------

    def start_orchestration(self, instance_id: str, name: str, input: Any = None) -> None:
        """Starts ``instance_id`` running the latest version of ``name``. Starting an id that exists is
        a no-op that keeps the first input."""
        self._native.start_orchestration(
            _check_id(instance_id), _check_name(name, "orchestration name"), _dumps(input)
        )

    def start_orchestration_versioned(self, instance_id: str, name: str, input: Any, version: str) -> None:
        """Starts ``instance_id`` on a specific version (``"1.0.2"``) of ``name``."""
        self._native.start_orchestration(
            _check_id(instance_id),
            _check_name(name, "orchestration name"),
            _dumps(input),
            _check_name(version, "version"),
        )

    def start_orchestration_typed(self, instance_id: str, name: str, input: Any = None) -> None:
        """Like :meth:`start_orchestration`; a ``str`` input that is valid JSON is passed as that JSON."""
        self._native.start_orchestration(
            _check_id(instance_id), _check_name(name, "orchestration name"), dumps_typed(input)
        )

    def start_orchestration_versioned_typed(
        self, instance_id: str, name: str, input: Any, version: str
    ) -> None:
        """Typed :meth:`start_orchestration_versioned`."""
        self._native.start_orchestration(
            _check_id(instance_id),
            _check_name(name, "orchestration name"),
            dumps_typed(input),
            _check_name(version, "version"),
        )

    def raise_event(self, instance_id: str, event_name: str, data: Any = None) -> None:
        """Raises an external event; delivered to the next ``wait_for_event`` of that name (buffered if
        the orchestration is not waiting yet). Raises ``NotFound`` for an id that was never started."""
        self._native.raise_event(_check_id(instance_id), _check_name(event_name, "event name"), _dumps(data))

    def raise_event_typed(self, instance_id: str, event_name: str, data: Any = None) -> None:
        """Typed :meth:`raise_event`."""
        self._native.raise_event(
            _check_id(instance_id), _check_name(event_name, "event name"), dumps_typed(data)
        )

    def enqueue_event(self, instance_id: str, queue_name: str, data: Any = None) -> None:
        """Appends a message to a named queue of the instance (FIFO; survives continue-as-new)."""
        self._native.enqueue_event(
            _check_id(instance_id), _check_name(queue_name, "queue name"), _dumps(data)
        )

    def enqueue_event_typed(self, instance_id: str, queue_name: str, data: Any = None) -> None:
        """Typed :meth:`enqueue_event`."""
        self._native.enqueue_event(
            _check_id(instance_id), _check_name(queue_name, "queue name"), dumps_typed(data)
        )

    def cancel_instance(self, instance_id: str, reason: Optional[str] = None) -> None:
        """Cancels a running instance and its running children (no-op on terminal instances). It ends
        ``Failed`` with an error starting ``canceled: <reason>``."""
        self._native.cancel_instance(_check_id(instance_id), "" if reason is None else str(reason))

    # ---- reading state ----------------------------------------------------------------------------

    def get_status(self, instance_id: str) -> OrchestrationResult:
        """The instance's current state; status ``"NotFound"`` for an unknown id."""
        return _result(self._native.get_status(_check_id(instance_id)))

    def wait_for_orchestration(self, instance_id: str, timeout_ms: int = 30000) -> OrchestrationResult:
        """Waits until the instance is terminal. Raises ``OrchestrationTimeout`` after ``timeout_ms``."""
        return _result(
            self._native.wait_for_orchestration(_check_id(instance_id), _ms(timeout_ms, "timeout_ms"))
        )

    def wait_for_orchestration_typed(self, instance_id: str, timeout_ms: int = 30000) -> Any:
        """Waits and returns the decoded output; a failed instance raises an exception with its error
        (``Nondeterminism`` for a nondeterminism failure, ``OrchestrationFailed`` otherwise)."""
        r = self.wait_for_orchestration(instance_id, timeout_ms)
        if r.status == "Failed":
            error = r.error or ""
            if error.startswith("nondeterministic:"):
                raise Nondeterminism(error)
            raise OrchestrationFailed(error)
        return r.output

    def wait_for_status_change(
        self,
        instance_id: str,
        last_seen_version: int = 0,
        poll_interval_ms: int = 200,
        timeout_ms: int = 30000,
    ) -> Optional[OrchestrationResult]:
        """Waits until ``custom_status_version > last_seen_version`` or the instance is terminal;
        ``None`` on timeout."""
        t = self._native.wait_for_status_change(
            _check_id(instance_id),
            _ms(last_seen_version, "last_seen_version"),
            max(1, _ms(poll_interval_ms, "poll_interval_ms")),
            _ms(timeout_ms, "timeout_ms"),
        )
        return None if t is None else _result(t)

    def get_kv_value(self, instance_id: str, key: str) -> Optional[str]:
        """A KV value of the instance, or ``None``."""
        return self._native.get_kv_value(_check_id(instance_id), _check_name(key, "key"))

    def get_kv_value_typed(self, instance_id: str, key: str) -> Any:
        """A KV value decoded as JSON (``None`` if unset)."""
        v = self.get_kv_value(instance_id, key)
        return None if v is None else loads(v)

    def wait_for_kv_value(self, instance_id: str, key: str, timeout_ms: int = 30000) -> str:
        """Waits until the key exists and returns its value; raises ``TimeoutError`` after
        ``timeout_ms``."""
        v = self._native.wait_for_kv_value(
            _check_id(instance_id), _check_name(key, "key"), _ms(timeout_ms, "timeout_ms")
        )
        if v is None:
            raise TimeoutError("Operation timed out")
        return v

    def wait_for_kv_value_typed(self, instance_id: str, key: str, timeout_ms: int = 30000) -> Any:
        """:meth:`wait_for_kv_value`, decoded as JSON."""
        return loads(self.wait_for_kv_value(instance_id, key, timeout_ms))

    # ---- management -------------------------------------------------------------------------------

    def get_system_metrics(self) -> SystemMetrics:
        """Store-wide counts of instances, executions and events."""
        return SystemMetrics(*self._native.get_system_metrics())

    def get_queue_depths(self) -> QueueDepths:
        """Pending messages per queue."""
        return QueueDepths(*self._native.get_queue_depths())

    def get_orchestration_stats(self, instance_id: str) -> Optional[SystemStats]:
        """Size figures of one instance, or ``None`` for an unknown id."""
        t = self._native.get_orchestration_stats(_check_id(instance_id))
        return None if t is None else SystemStats(*t)

    def list_all_instances(self) -> List[str]:
        """Every instance id in the store."""
        return self._native.list_all_instances()

    def list_instances_by_status(self, status: str) -> List[str]:
        """Instance ids in one status (``"Running"``, ``"Completed"`` or ``"Failed"``)."""
        return self._native.list_instances_by_status(_check_name(status, "status"))

    def get_instance_info(self, instance_id: str) -> InstanceInfo:
        """Metadata of an instance; raises ``NotFound`` for an unknown id."""
        return InstanceInfo(*self._native.get_instance_info(_check_id(instance_id)))

    def get_execution_info(self, instance_id: str, execution_id: int) -> ExecutionInfo:
        """Metadata of one execution; raises ``NotFound`` if it does not exist."""
        return ExecutionInfo(*self._native.get_execution_info(_check_id(instance_id), int(execution_id)))

    def list_executions(self, instance_id: str) -> List[int]:
        """Execution ids of the instance, ascending from 1."""
        return self._native.list_executions(_check_id(instance_id))

    def read_execution_history(self, instance_id: str, execution_id: int) -> List[Event]:
        """The recorded events of one execution."""
        return [
            Event(*e) for e in self._native.read_execution_history(_check_id(instance_id), int(execution_id))
        ]

    def get_instance_tree(self, instance_id: str) -> InstanceTree:
        """The instance and all its descendants (sub-orchestrations), root first."""
        ids = self._native.get_instance_tree(_check_id(instance_id))
        return InstanceTree(root_id=instance_id, all_ids=ids, size=len(ids))

    def delete_instance(self, instance_id: str, force: bool = False) -> DeleteInstanceResult:
        """Deletes an instance and its descendants. A running one needs ``force=True`` (otherwise
        ``StillRunning``); an unknown id raises ``NotFound``."""
        return DeleteInstanceResult(*self._native.delete_instance(_check_id(instance_id), bool(force)))

    def delete_instance_bulk(self, filter: Union[InstanceFilter, dict, None] = None) -> DeleteInstanceResult:
        """Deletes terminal root instances matching ``filter``. Without any criterion it raises
        ``ValueError`` instead of deleting everything."""
        ids, before, limit = _filter_args(filter)
        if ids is None and before is None and limit is None:
            raise InvalidInput("delete_instance_bulk needs an InstanceFilter with at least one criterion")
        return DeleteInstanceResult(*self._native.delete_instance_bulk(ids, before, limit))

    def prune_executions(
        self, instance_id: str, options: Union[PruneOptions, dict, None] = None
    ) -> PruneResult:
        """Removes old executions of a continue-as-new instance (never the current one)."""
        keep_last, before = _prune_args(options)
        return PruneResult(*self._native.prune_executions(_check_id(instance_id), keep_last, before))

    def prune_executions_bulk(
        self,
        filter: Union[InstanceFilter, dict, None] = None,
        options: Union[PruneOptions, dict, None] = None,
    ) -> PruneResult:
        """:meth:`prune_executions` over every instance matching ``filter``."""
        ids, before, limit = _filter_args(filter)
        keep_last, prune_before = _prune_args(options)
        return PruneResult(*self._native.prune_executions_bulk(ids, before, limit, keep_last, prune_before))

    def __repr__(self) -> str:
        return "Client()"
