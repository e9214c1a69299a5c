"""Providers: the stores that hold orchestration state (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
from typing import Union

from . import _native

__all__ = ["SqliteProvider", "PostgresProvider"]


class SqliteProvider:
    """SQLite store: a file (``open``) or a private in-memory database (``in_memory``).

    A provider may be shared by any number of :class:`Client` and :class:`Runtime` objects.
    """

    __slots__ = ("_native",)

    def __init__(self, native: "_native.NativeProvider") -> None:
        self._native = native

    @staticmethod
    def open(path: Union[str, "os.PathLike[str]"]) -> "SqliteProvider":
        """Opens (creating the file and missing parent folders) a database file; ``path`` may be a
        plain path or a ``sqlite:`` URL. Raises ``DuroxideError`` naming the reason on failure."""
        return SqliteProvider(_native.NativeProvider.sqlite_open(os.fspath(path)))

    @staticmethod
    def in_memory() -> "SqliteProvider":
        """A private in-memory database (one per call), gone when its last user is."""
        return SqliteProvider(_native.NativeProvider.sqlite_in_memory())

    def __repr__(self) -> str:
        return repr(self._native)


class PostgresProvider:
    """PostgreSQL store for deployments where several processes or machines share the work."""

    __slots__ = ("_native",)

    def __init__(self, native: "_native.NativeProvider") -> None:
        self._native = native

    @staticmethod
    def connect(url: str) -> "PostgresProvider":
        """Connects using schema ``public``. Raises ``DuroxideError`` (``Failed to connect to
        PostgreSQL: ...``) on failure."""
        return PostgresProvider(_native.NativeProvider.postgres_connect(url, None))

    @staticmethod
    def connect_with_schema(url: str, schema: str) -> "PostgresProvider":
        """Connects using ``schema``, creating it if missing. The name is validated (letters, digits,
        ``_``, at most 63 bytes) and always quoted."""
        return PostgresProvider(_native.NativeProvider.postgres_connect(url, schema))

    def __repr__(self) -> str:
        return repr(self._native)
