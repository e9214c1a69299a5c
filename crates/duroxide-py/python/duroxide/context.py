"""The contexts user code receives: :class:`OrchestrationContext` (orchestrations) and
:class:`ActivityContext` (activities)."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import _native
from ._glue import dumps_typed
from .client import Client

__all__ = ["OrchestrationContext", "ActivityContext", "Task", "parse_result"]

Task = _native.Task
_dumps = json.dumps

_RETRY_KEYS = {
    "max_attempts": "max_attempts",
    "maxAttempts": "max_attempts",
    "timeout_ms": "timeout_ms",
    "timeoutMs": "timeout_ms",
    "total_timeout_ms": "total_timeout_ms",
    "totalTimeoutMs": "total_timeout_ms",
    "backoff": "backoff",
    "backoff_strategy": "backoff",
    "backoffStrategy": "backoff",
}
_BACKOFFS = ("exponential", "linear", "fixed", "none")


def _retry(retry: Any) -> "tuple":
    """Normalises a retry dict to ``(max_attempts, backoff, timeout_ms, total_timeout_ms)``."""
    if retry is None:
        retry = {}
    if not isinstance(retry, dict):
        raise ValueError(f"a retry policy is a dict, got {type(retry).__name__}")
    out: Dict[str, Any] = {}
    for key, value in retry.items():
        canonical = _RETRY_KEYS.get(key)
        if canonical is None:
            raise ValueError(
                f"unknown retry option {key!r}; expected one of {', '.join(sorted(_RETRY_KEYS))}"
            )
        if canonical in out:
            raise ValueError(f"retry option {canonical!r} is given twice")
        out[canonical] = value
    max_attempts = out.get("max_attempts", 3)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an integer of at least 1, got {max_attempts!r}")
    backoff = out.get("backoff", "exponential")
    if backoff is None:
        backoff = "none"
    if not isinstance(backoff, str) or backoff.lower() not in _BACKOFFS:
        raise ValueError(f"unknown backoff strategy {backoff!r}; expected one of {', '.join(_BACKOFFS)}")
    timeouts = []
    for key in ("timeout_ms", "total_timeout_ms"):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ValueError(f"{key} must be a positive integer of milliseconds, got {v!r}")
        timeouts.append(v)
    return (max_attempts, backoff.lower(), timeouts[0], timeouts[1])


def _name(value: Any, what: str = "name") -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"instance id must be a non-empty string, got {value!r}")
    if len(value.encode()) > _native.MAX_INSTANCE_ID_BYTES:
        raise ValueError(f"instance id is longer than {_native.MAX_INSTANCE_ID_BYTES} bytes")
    return value


def _tasks(tasks: Sequence[Any], what: str) -> List[Any]:
    out = list(tasks)
    for i, t in enumerate(out):
        if not isinstance(t, Task):
            raise TypeError(
                f"{what}() takes tasks returned by ctx methods; "
                f"element {i} is {t!r} of type {type(t).__name__}"
            )
    return out


def parse_result(x: Any) -> Any:
    """Unwraps results of ``ctx.all``: ``[{"ok": v}, ...]`` → ``[v, ...]``; ``{"ok": v}`` → ``v``;
    ``{"err": e}`` raises ``Exception(e)``; anything else is returned unchanged."""
    if isinstance(x, list):
        if all(isinstance(i, dict) and len(i) == 1 and ("ok" in i or "err" in i) for i in x):
            return [parse_result(i) for i in x]
        return x
    if isinstance(x, dict) and len(x) == 1:
        if "ok" in x:
            return x["ok"]
        if "err" in x:
            raise Exception(x["err"])
    return x


def _converter(result_type: Any) -> Optional[Callable[[Any], Any]]:
    """Converts a decoded value to ``result_type`` (a class or a callable); ``None`` leaves it."""
    if result_type is None:
        return None

    def convert(value: Any) -> Any:
        if value is None or (isinstance(result_type, type) and isinstance(value, result_type)):
            return value
        if isinstance(value, dict) and hasattr(result_type, "__dataclass_fields__"):
            return result_type(**value)
        return result_type(value)

    return convert


def _decode_text(value: Any) -> Any:
    """Typed waits and dequeues: a message that is JSON text (e.g. ``json.dumps(...)``) is decoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _typed(task: Any, result_type: Any, decode_text: bool = False) -> Any:
    convert = _converter(result_type)
    if decode_text:
        if convert is None:
            return task._then(_decode_text)
        return task._then(lambda v: convert(_decode_text(v)))
    if convert is not None:
        return task._then(convert)
    return task


class OrchestrationContext:
    """What orchestration code gets as ``ctx``.

    Scheduling calls return tasks that the code must ``yield``; the yield evaluates to the result or
    raises (``ActivityFailed`` / ``SubOrchestrationFailed`` for failed work). Code must be
    deterministic: use ``yield ctx.utc_now()`` and ``yield ctx.new_guid()`` instead of clocks and
    random numbers; tracing calls are silent during replay.
    """

    __slots__ = ("_n",)

    def __init__(self, native: "_native.NativeOrchestrationContext") -> None:
        self._n = native

    # ---- identity -------------------------------------------------------------------------------

    @property
    def instance_id(self) -> str:
        """This instance's id."""
        return self._n.instance_id

    @property
    def execution_id(self) -> int:
        """The current execution (1, then +1 per continue-as-new)."""
        return self._n.execution_id

    @property
    def orchestration_name(self) -> str:
        """The registered name being run."""
        return self._n.orchestration_name

    @property
    def orchestration_version(self) -> str:
        """The version being run (``"1.0.0"`` unless registered otherwise)."""
        return self._n.orchestration_version

    @property
    def is_replaying(self) -> bool:
        """True while the code re-runs over recorded history."""
        return self._n.is_replaying

    # ---- activities ---------------------------------------------------------------------------

    def schedule_activity(
        self, name: str, input: Any = None, session_id: Optional[str] = None, *, tag: Optional[str] = None
    ) -> Task:
        """Runs activity ``name`` with ``input``; yields its return value. ``session_id`` pins it to the
        session's worker slot; ``tag`` (or ``.with_tag(tag)``) routes it to workers accepting the tag."""
        return self._n.activity(_name(name, "activity name"), _dumps(input), session_id, tag)

    def schedule_activity_on_session(self, name: str, input: Any, session_id: str) -> Task:
        """Runs the activity on the worker slot that owns ``session_id``."""
        return self._n.activity(_name(name, "activity name"), _dumps(input), _name(session_id, "session id"))

    def schedule_activity_with_retry(self, name: str, input: Any, retry: Optional[dict]) -> Task:
        """Runs the activity, retrying under ``retry`` (``max_attempts``, ``backoff``, ``timeout_ms``,
        ``total_timeout_ms``); raises the last error once attempts are exhausted."""
        return self._n.activity(_name(name, "activity name"), _dumps(input), None, None, _retry(retry))

    def schedule_activity_with_retry_on_session(
        self, name: str, input: Any, retry: Optional[dict], session_id: str
    ) -> Task:
        """:meth:`schedule_activity_with_retry` with every attempt on one session."""
        return self._n.activity(
            _name(name, "activity name"), _dumps(input), _name(session_id, "session id"), None, _retry(retry)
        )

    # ---- timers, events, queues --------------------------------------------------------------

    def schedule_timer(self, delay_ms: int) -> Task:
        """A durable timer (survives restarts); yields ``None`` after ``delay_ms`` milliseconds."""
        if isinstance(delay_ms, bool) or not isinstance(delay_ms, (int, float)):
            raise TypeError(f"delay_ms must be a number of milliseconds, got {delay_ms!r}")
        if delay_ms < 0:
            raise ValueError(f"delay_ms must not be negative, got {delay_ms}")
        return self._n.timer(int(delay_ms))

    def wait_for_event(self, name: str) -> Task:
        """Yields the data of the next external event ``name`` (events raised earlier are buffered)."""
        return self._n.wait_for_event(_name(name, "event name"))

    def dequeue_event(self, queue_name: str) -> Task:
        """Yields the next message of the queue (FIFO; messages survive continue-as-new)."""
        return self._n.dequeue_event(_name(queue_name, "queue name"))

    # ---- sub-orchestrations and detached starts ----------------------------------------------

    def schedule_sub_orchestration(self, name: str, input: Any = None) -> Task:
        """Runs a child orchestration; yields its output."""
        return self._n.sub_orchestration(_name(name, "orchestration name"), None, None, _dumps(input))

    def schedule_sub_orchestration_with_id(self, name: str, instance_id: str, input: Any = None) -> Task:
        """Runs a child orchestration under an explicit instance id; yields its output."""
        return self._n.sub_orchestration(
            _name(name, "orchestration name"), None, _id(instance_id), _dumps(input)
        )

    def schedule_sub_orchestration_versioned(
        self, name: str, version: Optional[str] = None, input: Any = None
    ) -> Task:
        """Runs a specific version of a child orchestration (``None`` = latest)."""
        return self._n.sub_orchestration(_name(name, "orchestration name"), version, None, _dumps(input))

    def schedule_sub_orchestration_versioned_with_id(
        self, name: str, version: Optional[str], instance_id: str, input: Any = None
    ) -> Task:
        """A specific version of a child orchestration under an explicit id."""
        return self._n.sub_orchestration(
            _name(name, "orchestration name"), version, _id(instance_id), _dumps(input)
        )

    def start_orchestration(self, name: str, instance_id: str, input: Any = None) -> Task:
        """Starts an independent orchestration (fire-and-forget); yields ``None``."""
        return self._n.start_orchestration(
            _name(name, "orchestration name"), None, _id(instance_id), _dumps(input)
        )

    def start_orchestration_versioned(
        self, name: str, version: Optional[str], instance_id: str, input: Any = None
    ) -> Task:
        """Fire-and-forget start of a specific version."""
        return self._n.start_orchestration(
            _name(name, "orchestration name"), version, _id(instance_id), _dumps(input)
        )

    def continue_as_new(self, input: Any = None) -> Task:
        """Ends this execution and starts the next one with ``input`` (fresh history; queued messages,
        buffered events and custom status carry over). ``yield`` it; it never resumes."""
        return self._n.continue_as_new(_dumps(input))

    def continue_as_new_versioned(self, input: Any = None, version: Optional[str] = None) -> Task:
        """:meth:`continue_as_new` onto a specific version (``None`` = latest)."""
        return self._n.continue_as_new(_dumps(input), version)

    # ---- recorded values ----------------------------------------------------------------------

    def utc_now(self) -> Task:
        """Yields the current time in epoch ms, recorded in history (replay returns the same value)."""
        return self._n.utc_now()

    def new_guid(self) -> Task:
        """Yields a fresh UUID string, recorded in history."""
        return self._n.new_guid()

    def get_kv_value_from_instance(self, instance_id: str, key: str) -> Task:
        """Yields another instance's KV value (or ``None``)."""
        return self._n.get_kv_value_from_instance(_id(instance_id), _name(key, "key"))

    # ---- composition --------------------------------------------------------------------------

    def all(self, tasks: Sequence[Task]) -> Task:
        """Waits for every task; yields ``[{"ok": value} | {"err": error}, ...]`` in input order."""
        return self._n.all(_tasks(tasks, "all"))

    def race(self, *tasks: Task) -> Task:
        """Waits for the first task; yields ``{"index": i, "value": v}`` (raises if the winner failed).
        The others are cancelled."""
        if len(tasks) == 1 and isinstance(tasks[0], (list, tuple)):
            tasks = tuple(tasks[0])
        if not tasks:
            raise ValueError("race() needs at least one task")
        return self._n.race(_tasks(tasks, "race"))

    def all_typed(self, tasks: Sequence[Task]) -> Task:
        """Like :meth:`all` but yields the values themselves; a failed member raises its error."""
        return self._n.all(_tasks(tasks, "all_typed"))._then(parse_result)

    def race_typed(self, *tasks: Task) -> Task:
        """Like :meth:`race`."""
        return self.race(*tasks)

    # ---- typed variants -------------------------------------------------------------------------

    def schedule_activity_typed(self, name: str, input: Any = None, result_type: Any = None) -> Task:
        """Typed :meth:`schedule_activity`: a ``str`` input that is JSON text is passed as that JSON; the
        result is converted to ``result_type`` if given."""
        return _typed(self._n.activity(_name(name, "activity name"), dumps_typed(input)), result_type)

    def schedule_activity_on_session_typed(
        self, name: str, input: Any, session_id: str, result_type: Any = None
    ) -> Task:
        """Typed :meth:`schedule_activity_on_session`."""
        task = self._n.activity(
            _name(name, "activity name"), dumps_typed(input), _name(session_id, "session id")
        )
        return _typed(task, result_type)

    def schedule_activity_with_retry_typed(
        self, name: str, input: Any, retry: Optional[dict], result_type: Any = None
    ) -> Task:
        """Typed :meth:`schedule_activity_with_retry`."""
        task = self._n.activity(_name(name, "activity name"), dumps_typed(input), None, None, _retry(retry))
        return _typed(task, result_type)

    def schedule_activity_with_retry_on_session_typed(
        self, name: str, input: Any, retry: Optional[dict], session_id: str, result_type: Any = None
    ) -> Task:
        """Typed :meth:`schedule_activity_with_retry_on_session`."""
        task = self._n.activity(
            _name(name, "activity name"),
            dumps_typed(input),
            _name(session_id, "session id"),
            None,
            _retry(retry),
        )
        return _typed(task, result_type)

    def schedule_sub_orchestration_typed(self, name: str, input: Any = None, result_type: Any = None) -> Task:
        """Typed :meth:`schedule_sub_orchestration`."""
        task = self._n.sub_orchestration(_name(name, "orchestration name"), None, None, dumps_typed(input))
        return _typed(task, result_type)

    def schedule_sub_orchestration_with_id_typed(
        self, name: str, instance_id: str, input: Any = None, result_type: Any = None
    ) -> Task:
        """Typed :meth:`schedule_sub_orchestration_with_id`."""
        task = self._n.sub_orchestration(
            _name(name, "orchestration name"), None, _id(instance_id), dumps_typed(input)
        )
        return _typed(task, result_type)

    def wait_for_event_typed(self, name: str, result_type: Any = None) -> Task:
        """Typed :meth:`wait_for_event`: event data that is itself JSON text is decoded too."""
        return _typed(self._n.wait_for_event(_name(name, "event name")), result_type, decode_text=True)

    def dequeue_event_typed(self, queue_name: str, result_type: Any = None) -> Task:
        """Typed :meth:`dequeue_event`: a message that is JSON text (``json.dumps(...)``) is decoded."""
        return _typed(self._n.dequeue_event(_name(queue_name, "queue name")), result_type, decode_text=True)

    def start_orchestration_typed(self, name: str, instance_id: str, input: Any = None) -> Task:
        """Typed :meth:`start_orchestration`."""
        return self._n.start_orchestration(
            _name(name, "orchestration name"), None, _id(instance_id), dumps_typed(input)
        )

    def start_orchestration_versioned_typed(
        self, name: str, version: Optional[str], instance_id: str, input: Any = None
    ) -> Task:
        """Typed :meth:`start_orchestration_versioned`."""
        return self._n.start_orchestration(
            _name(name, "orchestration name"), version, _id(instance_id), dumps_typed(input)
        )

    def continue_as_new_typed(self, input: Any = None) -> Task:
        """Typed :meth:`continue_as_new`."""
        return self._n.continue_as_new(dumps_typed(input))

    # ---- custom status, KV, tracing (no yield) ------------------------------------------------

    def set_custom_status(self, status: Any) -> None:
        """Sets the custom status clients see (``str()`` of the value)."""
        self._n.set_custom_status(status if isinstance(status, str) else str(status))

    def reset_custom_status(self) -> None:
        """Clears the custom status."""
        self._n.reset_custom_status()

    def get_custom_status(self) -> Optional[str]:
        """The current custom status, or ``None``."""
        return self._n.get_custom_status()

    def set_kv_value(self, key: str, value: Any) -> None:
        """Sets a KV value of this instance (``str()`` of the value). Exceeding ``MAX_KV_KEYS`` or
        ``MAX_KV_VALUE_BYTES`` fails the orchestration."""
        self._n.set_kv_value(_name(key, "key"), value if isinstance(value, str) else str(value))

    def get_kv_value(self, key: str) -> Optional[str]:
        """A KV value of this instance, or ``None``."""
        return self._n.get_kv_value(key)

    def get_kv_all_values(self) -> Dict[str, str]:
        """A snapshot of all KV entries."""
        return self._n.get_kv_all_values()

    def get_kv_all_keys(self) -> List[str]:
        """The keys that are set."""
        return self._n.get_kv_all_keys()

    def get_kv_length(self) -> int:
        """How many keys are set."""
        return self._n.get_kv_length()

    def clear_kv_value(self, key: str) -> None:
        """Removes one key."""
        self._n.clear_kv_value(key)

    def clear_all_kv_values(self) -> None:
        """Removes every key."""
        self._n.clear_all_kv_values()

    def prune_kv_values_updated_before(self, cutoff_ms: int) -> int:
        """Removes keys last updated before ``cutoff_ms`` (epoch ms); returns how many went."""
        return self._n.prune_kv_values_updated_before(int(cutoff_ms))

    def trace_info(self, message: Any) -> None:
        """Logs at INFO (``duroxide::orchestration``); silent during replay."""
        self._n.trace("info", str(message))

    def trace_warn(self, message: Any) -> None:
        """Logs at WARN; silent during replay."""
        self._n.trace("warn", str(message))

    def trace_error(self, message: Any) -> None:
        """Logs at ERROR; silent during replay."""
        self._n.trace("error", str(message))

    def trace_debug(self, message: Any) -> None:
        """Logs at DEBUG; silent during replay."""
        self._n.trace("debug", str(message))

    def __repr__(self) -> str:
        return f"OrchestrationContext(instance_id={self.instance_id!r}, execution_id={self.execution_id})"


class ActivityContext:
    """What an activity gets as ``ctx``: its identity, cancellation, a client, and tracing."""

    __slots__ = ("_n",)

    def __init__(self, native: "_native.NativeActivityContext") -> None:
        self._n = native

    @property
    def instance_id(self) -> str:
        """The orchestration instance that scheduled this activity."""
        return self._n.instance_id

    @property
    def execution_id(self) -> int:
        """That instance's execution."""
        return self._n.execution_id

    @property
    def orchestration_name(self) -> str:
        """The scheduling orchestration's name."""
        return self._n.orchestration_name

    @property
    def orchestration_version(self) -> str:
        """The scheduling orchestration's version."""
        return self._n.orchestration_version

    @property
    def activity_name(self) -> str:
        """This activity's registered name."""
        return self._n.activity_name

    @property
    def activity_id(self) -> int:
        """The scheduling event id (unique within the execution)."""
        return self._n.activity_id

    @property
    def worker_id(self) -> str:
        """The runtime (node) running this activity."""
        return self._n.worker_id

    @property
    def session_id(self) -> Optional[str]:
        """The session this activity is pinned to, or ``None``."""
        return self._n.session_id

    @property
    def attempt(self) -> int:
        """1 on the first run; higher when the work item was handed out again."""
        return self._n.attempt

    def tag(self) -> Optional[str]:
        """The activity's routing tag, or ``None``."""
        return self._n.tag()

    def is_cancelled(self) -> bool:
        """True once the orchestration no longer wants the result (lost a race, ended, cancelled)."""
        return self._n.is_cancelled()

    def get_client(self) -> Client:
        """A :class:`Client` on the same provider."""
        return Client._from_native(self._n.get_client())

    def trace_info(self, message: Any) -> None:
        """Logs at INFO (``duroxide::activity``) with the activity's identity."""
        self._n.trace("info", str(message))

    def trace_warn(self, message: Any) -> None:
        """Logs at WARN."""
        self._n.trace("warn", str(message))

    def trace_error(self, message: Any) -> None:
        """Logs at ERROR."""
        self._n.trace("error", str(message))

    def trace_debug(self, message: Any) -> None:
        """Logs at DEBUG."""
        self._n.trace("debug", str(message))

    def __repr__(self) -> str:
        return f"ActivityContext(activity_name={self.activity_name!r}, instance_id={self.instance_id!r})"
