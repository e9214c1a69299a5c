"""The runtime: registers orchestrations and activities and runs them from a provider."""

from __future__ import annotations

import asyncio
import atexit
import inspect
import json
import threading
import weakref
from typing import Any, Callable, Optional, TypeVar

from . import _native
from ._glue import format_error, loads
from .context import ActivityContext, OrchestrationContext

from .options import RuntimeOptions
from .types import MetricsSnapshot

__all__ = ["Runtime"]

F = TypeVar("F", bound=Callable[..., Any])
_dumps = json.dumps


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} name must be a non-empty string, got {name!r}")
    return name


def _check_fn(fn: Any, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} must be callable as fn(ctx, input), got {fn!r}")


# Runtimes started and not yet shut down: stopped at interpreter exit, before Python goes away under
# their dispatcher threads.
_running: "weakref.WeakSet[Runtime]" = weakref.WeakSet()


@atexit.register
def _shutdown_running() -> None:
    for rt in list(_running):
        try:
            rt.shutdown(2000)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class _EventLoop:
    """The asyncio loop on which ``async def`` activities are awaited, on a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="duroxide-asyncio", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, awaitable: Any) -> Any:
        async def wrap() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class Runtime:
    """Runs the dispatchers that execute orchestrations and activities.

    Register functions first (decorators or direct calls), then :meth:`start`. Each ``Runtime`` owns
    its registry. Usable as a context manager: ``with Runtime(provider) as rt:`` starts on enter and
    shuts down on exit.
    """

    def __init__(self, provider: Any, options: Optional[RuntimeOptions] = None) -> None:
        native = getattr(provider, "_native", None)
        if not isinstance(native, _native.NativeProvider):
            raise TypeError(f"Runtime needs a provider (SqliteProvider, PostgresProvider), got {provider!r}")
        if options is not None and not isinstance(options, RuntimeOptions):
            raise TypeError(f"options must be RuntimeOptions, got {type(options).__name__}")
        self.options = options or RuntimeOptions()
        self._native = _native.NativeRuntime(native, self.options._native)
        self._loop: Optional[_EventLoop] = None
        self._loop_lock = threading.Lock()

    # ---- registration -------------------------------------------------------------------------

    def register_activity(self, name: str, fn: Optional[F] = None) -> Any:
        """Registers activity ``fn(ctx, input)`` under ``name``. Use as ``@runtime.register_activity(name)``
        or call directly; returns ``fn``. ``async def`` activities are awaited on a loop the runtime
        owns. Raises ``DuroxideError`` after :meth:`start`."""
        _check_name(name, "activity")
        if fn is None:
            return lambda f: self.register_activity(name, f)
        _check_fn(fn, "an activity")
        self._native.register_activity(name, self._activity_entry(fn))
        return fn

    def register_orchestration(self, name: str, fn: Optional[F] = None) -> Any:
        """Registers orchestration ``fn(ctx, input)`` (a generator function; a plain function completes
        at once) as version ``1.0.0`` of ``name``; returns ``fn``."""
        return self.register_orchestration_versioned(name, _native.DEFAULT_VERSION, fn)

    def register_orchestration_versioned(self, name: str, version: str, fn: Optional[F] = None) -> Any:
        """Registers ``fn`` as ``version`` (semver text, e.g. ``"1.0.1"``) of ``name``. New instances run
        the latest version; running ones keep theirs until they continue as new."""
        _check_name(name, "orchestration")
        _check_name(version, "version")
        if fn is None:
            return lambda f: self.register_orchestration_versioned(name, version, f)
        _check_fn(fn, "an orchestration")
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"orchestration {name!r} is an async def; orchestrations are generator functions "
                "(use `yield ctx.schedule_activity(...)`); async def is for activities"
            )
        self._native.register_orchestration(name, version, _orchestration_entry(fn))
        return fn

    def register_activity_typed(self, name: str, fn: Optional[F] = None) -> Any:
        """Same as :meth:`register_activity`."""
        return self.register_activity(name, fn)

    def register_orchestration_typed(self, name: str, fn: Optional[F] = None) -> Any:
        """Same as :meth:`register_orchestration`."""
        return self.register_orchestration(name, fn)

    def register_orchestration_versioned_typed(self, name: str, version: str, fn: Optional[F] = None) -> Any:
        """Same as :meth:`register_orchestration_versioned`."""
        return self.register_orchestration_versioned(name, version, fn)

    # ---- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the dispatchers and returns. Starting twice raises ``DuroxideError``."""
        self._native.start()
        _running.add(self)

    def shutdown(self, timeout_ms: Optional[int] = None) -> None:
        """Stops fetching work, lets in-flight turns and activities finish for up to ``timeout_ms``
        (default 30 s), hands back what is still running, and returns as soon as idle."""
        timeout = 30000 if timeout_ms is None else int(timeout_ms)
        if timeout < 0:
            raise ValueError(f"timeout_ms must not be negative, got {timeout_ms}")
        try:
            self._native.shutdown(timeout)
        finally:
            _running.discard(self)
            with self._loop_lock:
                loop, self._loop = self._loop, None
            if loop is not None:
                loop.close()

    def metrics_snapshot(self) -> Optional[MetricsSnapshot]:
        """The runtime's counters, or ``None`` before it was started."""
        entries = self._native.metrics_snapshot()
        return None if entries is None else MetricsSnapshot(dict(entries))

    @property
    def is_running(self) -> bool:
        """Whether the runtime was started and not shut down."""
        return self._native.is_running

    def __enter__(self) -> "Runtime":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ---- adapters -----------------------------------------------------------------------------

    def _await(self, awaitable: Any) -> Any:
        with self._loop_lock:
            if self._loop is None:
                self._loop = _EventLoop()
            loop = self._loop
        return loop.run(awaitable)

    def _activity_entry(self, fn: Callable[..., Any]) -> Callable[[Any, str], "tuple[bool, str]"]:
        def entry(native_ctx: Any, input_json: str) -> "tuple[bool, str]":
            try:
                result = fn(ActivityContext(native_ctx), loads(input_json))
                if inspect.isawaitable(result):
                    result = self._await(result)
                return True, _dumps(result)
            except BaseException as e:  # noqa: B902 - every failure is the activity's result
                return False, format_error(e)

        return entry


def _orchestration_entry(fn: Callable[..., Any]) -> Callable[[Any, str], Any]:
    def entry(native_ctx: Any, input_json: str) -> Any:
        return fn(OrchestrationContext(native_ctx), loads(input_json))

    return entry
