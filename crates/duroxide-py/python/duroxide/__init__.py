"""duroxide: durable execution for Python.

Orchestrations are generator functions replayed from a recorded history, so they survive crashes and
restarts; activities are ordinary functions for side effects, whose results are recorded. State lives
in a provider (SQLite, PostgreSQL).

    from duroxide import SqliteProvider, Client, Runtime

    provider = SqliteProvider.in_memory()
    client = Client(provider)
    runtime = Runtime(provider)

    @runtime.register_activity("SayHello")
    def say_hello(ctx, name):
        return f"Hello, {name}!"

    @runtime.register_orchestration("HelloWorkflow")
    def hello_workflow(ctx, input):
        greeting = yield ctx.schedule_activity("SayHello", input["name"])
        return greeting

    runtime.start()
    client.start_orchestration("hello-1", "HelloWorkflow", {"name": "World"})
    print(client.wait_for_orchestration("hello-1").output)  # Hello, World!
    runtime.shutdown()
"""

from __future__ import annotations

from typing import Optional

from . import _native
from .client import Client
from .context import ActivityContext, OrchestrationContext, Task, parse_result
from .exceptions import (
    ActivityFailed,
    DuroxideError,
    InvalidInput,
    Nondeterminism,
    NotFound,
    OrchestrationFailed,
    OrchestrationTimeout,
    StillRunning,
    SubOrchestrationFailed,
    TaskFailed,
)
from .options import RuntimeOptions, TagFilter
from .providers import PostgresProvider, SqliteProvider
from .runtime import Runtime
from .types import (
    DeleteInstanceResult,
    Event,
    ExecutionInfo,
    InstanceFilter,
    InstanceInfo,
    InstanceTree,
    MetricsSnapshot,
    OrchestrationResult,
    PruneOptions,
    PruneResult,
    QueueDepths,
    SystemMetrics,
    SystemStats,
)

__version__ = "0.1.0"

MAX_KV_KEYS: int = _native.MAX_KV_KEYS
MAX_KV_VALUE_BYTES: int = _native.MAX_KV_VALUE_BYTES
MAX_WORKER_TAGS: int = _native.MAX_WORKER_TAGS
MAX_TAG_NAME_BYTES: int = _native.MAX_TAG_NAME_BYTES


def init_tracing(log_file: str, log_level: Optional[str] = None, log_format: Optional[str] = None) -> None:
    """Routes the runtime's tracing output to ``log_file`` (appending).

    The first caller wins: a second call raises ``RuntimeError`` (``Failed to init tracing ...``), as
    does a file that cannot be opened (``Failed to open log file ...``). ``RUST_LOG`` overrides
    ``log_level``; ``log_format`` is ``"pretty"`` (default), ``"json"`` or ``"compact"``.
    """
    _native.init_tracing(str(log_file), log_level, log_format)


__all__ = [
    "SqliteProvider",
    "PostgresProvider",
    "Client",
    "Runtime",
    "RuntimeOptions",
    "TagFilter",
    "OrchestrationContext",
    "ActivityContext",
    "Task",
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
    "DuroxideError",
    "NotFound",
    "StillRunning",
    "OrchestrationTimeout",
    "Nondeterminism",
    "InvalidInput",
    "TaskFailed",
    "ActivityFailed",
    "SubOrchestrationFailed",
    "OrchestrationFailed",
    "init_tracing",
    "parse_result",
    "MAX_KV_KEYS",
    "MAX_KV_VALUE_BYTES",
    "MAX_WORKER_TAGS",
    "MAX_TAG_NAME_BYTES",
]
