"""Fixtures: every test runs on in-memory SQLite, file SQLite and (when a server answers) PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

import duroxide
from duroxide import Client, Runtime, SqliteProvider

PG_URL = os.environ.get("DUROXIDE_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")

_pg_state: dict = {}
_pg_schemas: list = []


def pytest_sessionfinish(session, exitstatus):
    """Drops the schemas the PostgreSQL tests created (when `psql` is there to do it)."""
    if not _pg_schemas or shutil.which("psql") is None:
        return
    drops = "".join(f'DROP SCHEMA IF EXISTS "{s}" CASCADE;' for s in _pg_schemas)
    subprocess.run(["psql", PG_URL, "-q", "-c", drops], capture_output=True, timeout=120, check=False)


def _pg_available() -> "tuple[bool, str]":
    """Whether PostgreSQL tests can run here (checked once per session)."""
    if "ok" not in _pg_state:
        if not hasattr(duroxide._native.NativeProvider, "postgres_connect"):
            _pg_state.update(ok=False, why="this build has no PostgreSQL provider")
        else:
            try:
                duroxide.PostgresProvider.connect_with_schema(PG_URL, "dx_probe")
                _pg_schemas.append("dx_probe")
                _pg_state.update(ok=True, why="")
            except Exception as e:  # noqa: BLE001 - any failure means "no server here"
                _pg_state.update(ok=False, why=f"no PostgreSQL at {PG_URL}: {e}")
    return _pg_state["ok"], _pg_state["why"]


@pytest.fixture(params=["mem", "file", "pg"])
def backend(request) -> str:
    """The provider kind under test."""
    if request.param == "pg":
        ok, why = _pg_available()
        if not ok:
            # Never a silent skip: a machine without PostgreSQL must say so and how to fix it.
            pytest.fail(
                f"{why}. Set DUROXIDE_PG_URL to a reachable PostgreSQL server "
                "(default postgres://postgres@127.0.0.1:5432/postgres) or start one there."
            )
    return request.param


@pytest.fixture
def make_provider(backend, tmp_path):
    """Opens a fresh store of the backend under test (a new schema per test on PostgreSQL)."""

    schema = f"dx_{uuid.uuid4().hex[:16]}"

    def make(store: str = ""):
        """Each call opens the test's store again; a different `store` name opens a separate one."""
        if backend == "mem":
            return SqliteProvider.in_memory()
        if backend == "file":
            return SqliteProvider.open(tmp_path / f"duroxide{store}.db")
        _pg_schemas.append(schema + store)
        return duroxide.PostgresProvider.connect_with_schema(PG_URL, schema + store)

    return make


@pytest.fixture
def provider(make_provider):
    return make_provider()


@pytest.fixture
def client(provider) -> Client:
    return Client(provider)


@pytest.fixture
def runtimes():
    """Runtimes created by a test; each is shut down at teardown (a no-op if never started)."""
    created: list = []
    yield created
    for rt in created:
        rt.shutdown(5000)


@pytest.fixture
def make_runtime(provider, runtimes):
    """Creates a runtime on the test's provider (optionally with options); shut down at teardown."""

    def make(options=None, on=None) -> Runtime:
        rt = Runtime(on or provider, options)
        runtimes.append(rt)
        return rt

    return make


@pytest.fixture
def runtime(make_runtime) -> Runtime:
    """A runtime that is not started yet: tests register, then call ``runtime.start()``."""
    return make_runtime()
