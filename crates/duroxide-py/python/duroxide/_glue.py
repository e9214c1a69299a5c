"""Helpers the native module calls: JSON encoding, error text, and failure exceptions."""

from __future__ import annotations

import json
from typing import Any

from .exceptions import ActivityFailed, SubOrchestrationFailed, TaskFailed

_loads = json.loads
dumps = json.dumps


def loads(text: str) -> Any:
    """Decodes JSON; text that is not JSON (sent by non-Python code) arrives as the string itself."""
    try:
        return _loads(text)
    except ValueError:
        return text


def format_error(exc: BaseException) -> str:
    """The recorded text of an exception: ``"<ExceptionType>: <message>"``.

    A task failure that propagates keeps its original text, so the type and message of an activity's
    exception reach the orchestration's error unchanged.
    """
    if isinstance(exc, TaskFailed):
        return str(exc)
    message = str(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def make_failure(source: str, name: str, text: str, kind: str) -> TaskFailed:
    """The exception thrown into orchestration code for a failed activity or sub-orchestration."""
    cls = SubOrchestrationFailed if source == "sub_orchestration" else ActivityFailed
    return cls(text, name=name, kind=kind)


def dumps_typed(value: Any) -> str:
    """Typed variants: a ``str`` that is valid JSON text is passed through as that JSON."""
    if isinstance(value, str):
        try:
            _loads(value)
            return value
        except ValueError:
            pass
    return dumps(value)
