"""Exceptions raised by duroxide.

Every error the native layer raises is a :class:`DuroxideError`, itself a ``RuntimeError``, so
``except RuntimeError`` keeps working. Failed activities and sub-orchestrations surface inside
orchestration code as :class:`ActivityFailed` / :class:`SubOrchestrationFailed`.
"""

from __future__ import annotations

import re
from typing import Optional

__all__ = [
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
]


class DuroxideError(RuntimeError):
    """Base class of every error raised by the duroxide native layer."""


class NotFound(DuroxideError, LookupError):
    """The instance (or execution) does not exist."""


class StillRunning(DuroxideError):
    """The operation needs a terminal instance (e.g. delete without ``force``)."""


class OrchestrationTimeout(DuroxideError):
    """A wait ended before its condition held. The message is ``Operation timed out``."""

    def __init__(self, message: str = "Operation timed out") -> None:
        super().__init__(message)


class Nondeterminism(DuroxideError):
    """The orchestration code no longer matches its recorded history."""


class InvalidInput(DuroxideError, ValueError):
    """Arguments were invalid; nothing was sent. Also a ``ValueError``."""


class OrchestrationFailed(Exception):
    """Raised by ``Client.wait_for_orchestration_typed`` for a failed instance; ``error`` holds its text."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


_TYPED = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*): (.*)$", re.DOTALL)


class TaskFailed(Exception):
    """A scheduled unit of work failed.

    ``str(e)`` is the recorded error text, e.g. ``"ValueError: email is required"``.
    ``name`` is the activity or orchestration name, ``error_type`` the exception type (or the failure
    kind such as ``Cancelled`` or ``Poison`` when the failure did not come from user code) and
    ``message`` the text without the type.
    """

    def __init__(
        self,
        text: str,
        name: Optional[str] = None,
        error_type: Optional[str] = None,
        message: Optional[str] = None,
        kind: str = "Application",
    ) -> None:
        super().__init__(text)
        self.name = name
        self.kind = kind
        if error_type is None or message is None:
            error_type, message = _split(text, kind)
        self.error_type = error_type
        self.message = message


def _split(text: str, kind: str) -> "tuple[str, str]":
    if kind == "Application":
        m = _TYPED.match(text)
        if m:
            return m.group(1), m.group(2)
        return "Error", text
    return kind, text


class ActivityFailed(TaskFailed):
    """An activity failed (after all retries, for the retry variants)."""


class SubOrchestrationFailed(TaskFailed):
    """A sub-orchestration failed."""
