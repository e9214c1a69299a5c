"""Runtime options and worker tag filters."""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Tuple, Union

from . import _native

__all__ = ["RuntimeOptions", "TagFilter"]


class TagFilter:
    """Which activity tags a runtime's workers accept (``RuntimeOptions(worker_tag_filter=...)``).

    ``TagFilter.DEFAULT_ONLY`` (untagged activities; the default), ``TagFilter.ANY`` (everything),
    ``TagFilter.NONE`` (no activities), ``TagFilter.tags([...])`` (only those tags) and
    ``TagFilter.default_and([...])`` (untagged plus those tags).
    """

    __slots__ = ("kind", "names")

    DEFAULT_ONLY: "TagFilter"
    ANY: "TagFilter"
    NONE: "TagFilter"

    def __init__(self, kind: str, names: Iterable[str] = ()) -> None:
        names = list(names)
        for n in names:
            if not isinstance(n, str):
                raise ValueError(f"tag names must be strings, got {type(n).__name__}")
        if kind in ("tags", "default_and"):
            if not names:
                raise ValueError(f"TagFilter.{kind} needs at least one tag")
            if len(names) > _native.MAX_WORKER_TAGS:
                raise ValueError(
                    f"a tag filter names at most MAX_WORKER_TAGS ({_native.MAX_WORKER_TAGS}) tags, "
                    f"got {len(names)}"
                )
            for n in names:
                if not n or len(n.encode()) > _native.MAX_TAG_NAME_BYTES:
                    raise ValueError(f"tag {n!r} must be 1 to {_native.MAX_TAG_NAME_BYTES} bytes")
        elif kind not in ("default_only", "any", "none"):
            raise ValueError(f"unknown tag filter kind {kind!r}")
        elif names:
            raise ValueError(f"TagFilter {kind} takes no tag names")
        self.kind = kind
        self.names: Tuple[str, ...] = tuple(names)

    @staticmethod
    def tags(names: Iterable[str]) -> "TagFilter":
        """Only activities tagged with one of ``names``."""
        return TagFilter("tags", names)

    @staticmethod
    def default_and(names: Iterable[str]) -> "TagFilter":
        """Untagged activities plus those tagged with one of ``names``."""
        return TagFilter("default_and", names)

    @staticmethod
    def parse(value: Union["TagFilter", str, Iterable[str]]) -> "TagFilter":
        """Accepts a ``TagFilter``, a list of tags, or text: ``default_only``, ``any``, ``none``,
        ``tags:a,b`` or ``default_and:a,b``. Anything else raises ``ValueError``."""
        if isinstance(value, TagFilter):
            return value
        if isinstance(value, str):
            text = value.strip()
            simple = {"default_only": "default_only", "default": "default_only", "any": "any", "none": "none"}
            if text.lower() in simple:
                return TagFilter(simple[text.lower()])
            kind, sep, rest = text.partition(":")
            if sep and kind in ("tags", "default_and"):
                return TagFilter(kind, [t.strip() for t in rest.split(",") if t.strip()])
            raise ValueError(f"cannot parse tag filter {value!r}")
        if isinstance(value, (list, tuple, set, frozenset)):
            return TagFilter("tags", list(value))
        raise ValueError(f"cannot use {type(value).__name__} as a tag filter")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TagFilter) and (self.kind, self.names) == (other.kind, other.names)

    def __hash__(self) -> int:
        return hash((self.kind, self.names))

    def __repr__(self) -> str:
        if self.kind in ("tags", "default_and"):
            return f"TagFilter.{self.kind}({list(self.names)!r})"
        return f"TagFilter.{self.kind.upper()}"


TagFilter.DEFAULT_ONLY = TagFilter("default_only")
TagFilter.ANY = TagFilter("any")
TagFilter.NONE = TagFilter("none")

_LOG_FORMATS = ("pretty", "json", "compact")


def _int(name: str, value: Any, default: int, minimum: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _text(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


class RuntimeOptions:
    """Tuning of a :class:`Runtime`. Every argument is keyword-only and optional (``None`` = default).

    The values are readable attributes. An invalid value (negative, unknown log format, unparseable
    tag filter, ...) raises ``ValueError`` here, never a silent fallback.

    ``inline_activity_wait_ms`` (20) goes beyond the published SDK: quick activities (a couple of
    milliseconds) are run by the orchestration dispatcher itself and committed with the turn that
    takes their result; this is how long it waits for one before leaving it to a worker. ``0`` sends
    every activity through the worker queue (to spread short activities over other processes).
    """

    __slots__ = (
        "orchestration_concurrency",
        "worker_concurrency",
        "dispatcher_poll_interval_ms",
        "worker_lock_timeout_ms",
        "orchestrator_lock_timeout_ms",
        "max_attempts",
        "log_level",
        "log_format",
        "service_name",
        "service_version",
        "max_sessions_per_runtime",
        "session_idle_timeout_ms",
        "worker_node_id",
        "worker_tag_filter",
        "inline_activity_wait_ms",
        "_native",
    )

    def __init__(
        self,
        *,
        orchestration_concurrency: Optional[int] = None,
        worker_concurrency: Optional[int] = None,
        dispatcher_poll_interval_ms: Optional[int] = None,
        worker_lock_timeout_ms: Optional[int] = None,
        orchestrator_lock_timeout_ms: Optional[int] = None,
        max_attempts: Optional[int] = None,
        log_level: Optional[str] = None,
        log_format: Optional[str] = None,
        service_name: Optional[str] = None,
        service_version: Optional[str] = None,
        max_sessions_per_runtime: Optional[int] = None,
        session_idle_timeout_ms: Optional[int] = None,
        worker_node_id: Optional[str] = None,
        worker_tag_filter: Union[TagFilter, str, List[str], None] = None,
        inline_activity_wait_ms: Optional[int] = None,
    ) -> None:
        self.orchestration_concurrency = _int("orchestration_concurrency", orchestration_concurrency, 4, 0)
        self.worker_concurrency = _int("worker_concurrency", worker_concurrency, 8, 0)
        self.dispatcher_poll_interval_ms = _int(
            "dispatcher_poll_interval_ms", dispatcher_poll_interval_ms, 100, 1
        )
        self.worker_lock_timeout_ms = _int("worker_lock_timeout_ms", worker_lock_timeout_ms, 30000, 1)
        self.orchestrator_lock_timeout_ms = _int(
            "orchestrator_lock_timeout_ms", orchestrator_lock_timeout_ms, 5000, 1
        )
        self.max_attempts = _int("max_attempts", max_attempts, 10, 1)
        self.log_level = _text("log_level", log_level)
        fmt = _text("log_format", log_format)
        if fmt is not None and fmt not in _LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(_LOG_FORMATS)}, got {fmt!r}")
        self.log_format = fmt or "pretty"
        self.service_name = _text("service_name", service_name)
        self.service_version = _text("service_version", service_version)
        self.max_sessions_per_runtime = _int("max_sessions_per_runtime", max_sessions_per_runtime, 10, 0)
        self.session_idle_timeout_ms = _int("session_idle_timeout_ms", session_idle_timeout_ms, 300000, 1)
        self.worker_node_id = _text("worker_node_id", worker_node_id)
        self.worker_tag_filter = (
            TagFilter.DEFAULT_ONLY if worker_tag_filter is None else TagFilter.parse(worker_tag_filter)
        )
        # Beyond the published SDK: how long the orchestration dispatcher waits for a short activity it
        # runs itself ("inline activities" in the README) before handing it to a worker; 0 = never.
        self.inline_activity_wait_ms = _int("inline_activity_wait_ms", inline_activity_wait_ms, 20, 0)
        self._native = _native.build_options(
            orchestration_concurrency=self.orchestration_concurrency,
            worker_concurrency=self.worker_concurrency,
            dispatcher_poll_interval_ms=self.dispatcher_poll_interval_ms,
            worker_lock_timeout_ms=self.worker_lock_timeout_ms,
            orchestrator_lock_timeout_ms=self.orchestrator_lock_timeout_ms,
            max_attempts=self.max_attempts,
            log_level=self.log_level,
            log_format=self.log_format,
            service_name=self.service_name,
            service_version=self.service_version,
            max_sessions_per_runtime=self.max_sessions_per_runtime,
            session_idle_timeout_ms=self.session_idle_timeout_ms,
            worker_node_id=self.worker_node_id,
            tag_filter_kind=self.worker_tag_filter.kind,
            tag_filter_tags=list(self.worker_tag_filter.names),
            inline_activity_wait_ms=self.inline_activity_wait_ms,
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if not n.startswith("_"))
        return f"RuntimeOptions({fields})"
