"""Bad input: each case of the issue's list fails at the right place with a clear error."""

from __future__ import annotations

import pytest

import duroxide
from duroxide import (
    ActivityFailed,
    DuroxideError,
    InvalidInput,
    Nondeterminism,
    NotFound,
    Runtime,
    RuntimeOptions,
    TagFilter,
)


def test_non_serialisable_client_inputs_raise_type_error_at_the_call(runtime, client):
    runtime.register_orchestration("W", lambda ctx, x: x)
    runtime.start()
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        client.start_orchestration("bad-1", "W", {1, 2})
    assert client.get_status("bad-1").status == "NotFound"  # nothing was sent
    client.start_orchestration("ok-1", "W", 1)
    with pytest.raises(TypeError):
        client.raise_event("ok-1", "e", object())
    with pytest.raises(TypeError):
        client.enqueue_event("ok-1", "q", {"x": b"bytes"})
    with pytest.raises(TypeError):
        client.start_orchestration_typed("bad-2", "W", {1})


def test_non_serialisable_ctx_inputs_raise_type_error_inside_the_orchestration(runtime, client):
    runtime.register_activity("A", lambda ctx, x: x)

    @runtime.register_orchestration("W")
    def w(ctx, _):
        caught = []
        for make in (
            lambda: ctx.schedule_activity("A", {1}),
            lambda: ctx.schedule_sub_orchestration("W", object()),
            lambda: ctx.start_orchestration("W", "other", {1}),
            lambda: ctx.continue_as_new({1}),
        ):
            try:
                make()
            except TypeError as e:
                caught.append(str(e))
        r = yield ctx.schedule_activity("A", "still fine")
        return [len(caught), r]

    runtime.start()
    client.start_orchestration("w", "W", None)
    assert client.wait_for_orchestration("w").output == [4, "still fine"]


def test_activity_returning_a_non_serialisable_value_fails_naming_the_type(runtime, client):
    runtime.register_activity("Bad", lambda ctx, x: {1, 2, 3})

    @runtime.register_orchestration("W")
    def w(ctx, _):
        try:
            yield ctx.schedule_activity("Bad", None)
        except ActivityFailed as e:
            return [e.error_type, e.message, str(e)]

    @runtime.register_orchestration("Uncaught")
    def uncaught(ctx, _):
        r = yield ctx.schedule_activity("Bad", None)
        return r

    runtime.start()
    client.start_orchestration("w", "W", None)
    client.start_orchestration("u", "Uncaught", None)
    assert client.wait_for_orchestration("w").output == [
        "TypeError",
        "Object of type set is not JSON serializable",
        "TypeError: Object of type set is not JSON serializable",
    ]
    failed = client.wait_for_orchestration("u")
    assert failed.status == "Failed"
    assert failed.error == "TypeError: Object of type set is not JSON serializable"


def test_orchestration_returning_a_non_serialisable_value_fails_naming_the_type(runtime, client):
    runtime.register_orchestration("W", lambda ctx, x: {1})
    runtime.start()
    client.start_orchestration("w", "W", None)
    r = client.wait_for_orchestration("w")
    assert r.status == "Failed"
    assert r.error == "TypeError: Object of type set is not JSON serializable"


@pytest.mark.parametrize(
    "bad, shown",
    [(42, "42 of type int"), ("text", "'text' of type str"), (None, "None of type NoneType"), ([1], "[1] of type list")],
)
def test_yielding_a_non_task_fails_naming_what_was_yielded(runtime, client, bad, shown):
    @runtime.register_orchestration("W")
    def w(ctx, _):
        yield bad

    runtime.start()
    client.start_orchestration("w", "W", None)
    r = client.wait_for_orchestration("w")
    assert r.status == "Failed"
    assert f"orchestration yielded {shown}" in r.error


def test_yielding_a_list_of_tasks_hints_at_all(runtime, client):
    runtime.register_activity("A", lambda ctx, x: x)

    @runtime.register_orchestration("W")
    def w(ctx, _):
        yield [ctx.schedule_activity("A", 1)]

    runtime.start()
    client.start_orchestration("w", "W", None)
    assert "ctx.all" in client.wait_for_orchestration("w").error


def test_registering_after_start_raises(runtime):
    runtime.register_orchestration("W", lambda ctx, x: x)
    runtime.start()
    with pytest.raises(DuroxideError, match="after the runtime was started"):
        runtime.register_activity("A", lambda ctx, x: x)
    with pytest.raises(DuroxideError):
        runtime.register_orchestration("V", lambda ctx, x: x)
    with pytest.raises(DuroxideError, match="already started"):
        runtime.start()
    runtime.shutdown()
    with pytest.raises(DuroxideError):
        runtime.register_activity("B", lambda ctx, x: x)
    with pytest.raises(DuroxideError, match="shut down"):
        runtime.start()


def test_duplicate_and_invalid_registrations(runtime):
    runtime.register_activity("A", lambda ctx, x: x)
    with pytest.raises(InvalidInput, match="already registered"):
        runtime.register_activity("A", lambda ctx, x: x)
    with pytest.raises(ValueError):
        runtime.register_activity("", lambda ctx, x: x)
    with pytest.raises(ValueError, match="reserved"):
        runtime.register_activity("__duroxide_x", lambda ctx, x: x)
    with pytest.raises(TypeError):
        runtime.register_activity("B", "not callable")
    runtime.register_orchestration("W", lambda ctx, x: x)
    with pytest.raises(ValueError, match="already registered"):
        runtime.register_orchestration("W", lambda ctx, x: x)
    with pytest.raises(ValueError, match="invalid version"):
        runtime.register_orchestration_versioned("W", "1.x", lambda ctx, x: x)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"orchestration_concurrency": -1},
        {"worker_concurrency": -5},
        {"dispatcher_poll_interval_ms": 0},
        {"worker_lock_timeout_ms": -1},
        {"orchestrator_lock_timeout_ms": 0},
        {"max_attempts": 0},
        {"session_idle_timeout_ms": 0},
        {"inline_activity_wait_ms": -1},
        {"max_sessions_per_runtime": -1},
        {"log_format": "xml"},
        {"log_level": "[[nonsense"},
        {"worker_node_id": ""},
        {"worker_tag_filter": "sometimes"},
        {"worker_tag_filter": "tags:"},
        {"worker_tag_filter": ["a", "b", "c", "d", "e", "f"]},
        {"worker_tag_filter": 42},
        {"worker_concurrency": "8"},
        {"worker_concurrency": True},
    ],
)
def test_invalid_runtime_options_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        RuntimeOptions(**kwargs)


def test_invalid_tag_filters_raise_value_error():
    with pytest.raises(ValueError, match="MAX_WORKER_TAGS"):
        TagFilter.tags(["a", "b", "c", "d", "e", "f"])
    with pytest.raises(ValueError):
        TagFilter.default_and([])
    with pytest.raises(ValueError):
        TagFilter.tags(["x" * 300])
    with pytest.raises(TypeError):
        RuntimeOptions(unknown_option=1)  # keyword-only, known names


@pytest.mark.parametrize("call", ["raise_event", "enqueue_event", "cancel_instance"])
def test_messages_to_a_never_started_instance_raise_not_found(client, call):
    args = {"raise_event": ("ghost", "e", 1), "enqueue_event": ("ghost", "q", 1), "cancel_instance": ("ghost", "r")}
    with pytest.raises(NotFound):
        getattr(client, call)(*args[call])
    assert isinstance(NotFound("x"), DuroxideError) and isinstance(NotFound("x"), RuntimeError)


@pytest.mark.parametrize("bad_id", ["", "x" * 257, 42, None])
def test_bad_instance_ids_and_names_raise_value_error_before_io(client, bad_id):
    with pytest.raises(ValueError):
        client.start_orchestration(bad_id, "W", None)
    with pytest.raises(ValueError):
        client.get_status(bad_id)


def test_bad_orchestration_names_raise_value_error(client):
    for name in ("", None, 5):
        with pytest.raises(ValueError):
            client.start_orchestration("id", name, None)
    with pytest.raises(ValueError):
        client.raise_event("id", "", None)


def test_nondeterministic_orchestration_fails_naming_the_mismatch(provider):
    # The store outlives the first runtime; the second one has no cached state, so it replays.
    client = duroxide.Client(provider)

    first = Runtime(provider)
    first.register_activity("Charge", lambda ctx, x: "charged")
    first.register_activity("Refund", lambda ctx, x: "refunded")

    @first.register_orchestration("Order")
    def v1(ctx, _):
        yield ctx.schedule_activity("Charge", None)
        yield ctx.wait_for_event("ship")
        return "shipped"

    first.start()
    client.start_orchestration("order-1", "Order", None)
    # Wait until the first runtime recorded the wait, then stop it: its cached generator goes away.
    _wait_until(lambda: "ExternalSubscribed" in [e.kind for e in client.read_execution_history("order-1", 1)])
    first.shutdown()

    second = Runtime(provider)
    second.register_activity("Charge", lambda ctx, x: "charged")
    second.register_activity("Refund", lambda ctx, x: "refunded")

    @second.register_orchestration("Order")
    def v2(ctx, _):  # changed code: a different first activity
        yield ctx.schedule_activity("Refund", None)
        yield ctx.wait_for_event("ship")
        return "shipped"

    second.start()
    try:
        client.raise_event("order-1", "ship", None)
        r = client.wait_for_orchestration("order-1")
        assert r.status == "Failed"
        assert r.error.startswith("nondeterministic:")
        assert "[DX-ND]" in r.error and "Charge" in r.error and "Refund" in r.error
        with pytest.raises(Nondeterminism):
            client.wait_for_orchestration_typed("order-1")
    finally:
        second.shutdown()


def _wait_until(cond, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.01)


def test_exception_in_activity_keeps_type_and_message(runtime, client):
    @runtime.register_activity("Explode")
    def explode(ctx, x):
        raise ValueError(f"bad value {x}")

    @runtime.register_orchestration("Catcher")
    def catcher(ctx, _):
        try:
            yield ctx.schedule_activity("Explode", 7)
        except ActivityFailed as e:
            return {"name": e.name, "type": e.error_type, "message": e.message, "text": str(e),
                    "is_exception": isinstance(e, Exception)}

    @runtime.register_orchestration("Thrower")
    def thrower(ctx, _):
        yield ctx.schedule_activity("Explode", 8)

    runtime.start()
    client.start_orchestration("c", "Catcher", None)
    client.start_orchestration("t", "Thrower", None)
    assert client.wait_for_orchestration("c").output == {
        "name": "Explode", "type": "ValueError", "message": "bad value 7",
        "text": "ValueError: bad value 7", "is_exception": True,
    }
    assert client.wait_for_orchestration("t").error == "ValueError: bad value 8"


def test_exception_in_orchestration_code_fails_it_with_type_and_message(runtime, client):
    @runtime.register_orchestration("W")
    def w(ctx, _):
        yield ctx.schedule_timer(1)
        raise KeyError("missing")

    runtime.start()
    client.start_orchestration("w", "W", None)
    assert client.wait_for_orchestration("w").error == "KeyError: 'missing'"


def test_invalid_retry_policies_raise_value_error(runtime, client):
    @runtime.register_orchestration("W")
    def w(ctx, _):
        errors = []
        for retry in ({"max_attempts": 0}, {"backof": "none"}, {"backoff": "sometimes"}, {"timeout_ms": -1}, "x"):
            try:
                ctx.schedule_activity_with_retry("A", None, retry)
            except ValueError as e:
                errors.append(str(e))
        return len(errors)
        yield  # a generator

    runtime.start()
    client.start_orchestration("w", "W", None)
    assert client.wait_for_orchestration("w").output == 5


def test_kv_limits_fail_the_orchestration_naming_the_limit(runtime, client):
    @runtime.register_orchestration("TooMany")
    def too_many(ctx, _):
        for i in range(duroxide.MAX_KV_KEYS + 1):
            ctx.set_kv_value(f"k{i}", "v")
        yield ctx.schedule_timer(1)

    @runtime.register_orchestration("TooBig")
    def too_big(ctx, _):
        ctx.set_kv_value("big", "x" * (duroxide.MAX_KV_VALUE_BYTES + 1))
        yield ctx.schedule_timer(1)

    runtime.start()
    client.start_orchestration("many", "TooMany", None)
    client.start_orchestration("big", "TooBig", None)
    assert "MAX_KV_KEYS" in client.wait_for_orchestration("many").error
    assert "MAX_KV_VALUE_BYTES" in client.wait_for_orchestration("big").error


def test_blocking_client_calls_inside_an_orchestration_are_refused(runtime, client):
    @runtime.register_orchestration("W")
    def w(ctx, _):
        try:
            client.get_status("anything")
        except DuroxideError as e:
            return str(e)

    runtime.start()
    client.start_orchestration("w", "W", None)
    assert "not allowed inside orchestration code" in client.wait_for_orchestration("w").output


def test_bulk_delete_without_a_filter_raises_value_error(client):
    with pytest.raises(ValueError):
        client.delete_instance_bulk()
    with pytest.raises(ValueError):
        client.delete_instance_bulk(duroxide.InstanceFilter())


def test_with_tag_only_applies_to_activities(runtime, client):
    @runtime.register_orchestration("W")
    def w(ctx, _):
        try:
            ctx.schedule_timer(5).with_tag("gpu")
        except ValueError as e:
            return str(e)

    runtime.start()
    client.start_orchestration("w", "W", None)
    assert "activity tasks" in client.wait_for_orchestration("w").output


def test_all_and_race_reject_non_tasks(runtime, client):
    @runtime.register_orchestration("W")
    def w(ctx, _):
        out = []
        for make in (lambda: ctx.all([1, 2]), lambda: ctx.race(), lambda: ctx.race(ctx.utc_now(), "x")):
            try:
                make()
            except (TypeError, ValueError) as e:
                out.append(type(e).__name__)
        return out

    runtime.start()
    client.start_orchestration("w", "W", None)
    assert client.wait_for_orchestration("w").output == ["TypeError", "ValueError", "TypeError"]


def test_opening_an_unusable_sqlite_path_raises(tmp_path):
    not_a_db = tmp_path / "text.db"
    not_a_db.write_text("this is not a database" * 100)
    with pytest.raises(DuroxideError, match="SQLite"):
        duroxide.SqliteProvider.open(not_a_db)


def test_async_def_orchestrations_are_refused_at_registration(runtime):
    async def orch(ctx, x):
        return x

    with pytest.raises(TypeError, match="generator functions"):
        runtime.register_orchestration("Async", orch)
