"""The python-api.md surface beyond the guide: module helpers, options, runtime, client (typed and
management), contexts, composition, tags and the instance cache."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import duroxide
from duroxide import (
    ActivityFailed,
    Client,
    DuroxideError,
    InstanceFilter,
    InvalidInput,
    MetricsSnapshot,
    NotFound,
    OrchestrationFailed,
    OrchestrationTimeout,
    PruneOptions,
    Runtime,
    RuntimeOptions,
    StillRunning,
    SubOrchestrationFailed,
    TagFilter,
    parse_result,
)


def echo(ctx, x):
    return x


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.01)


# ---- module constants, helpers, exceptions ----------------------------------------------------------


def test_constants():
    assert duroxide.MAX_KV_KEYS == 150
    assert duroxide.MAX_KV_VALUE_BYTES == 65536
    assert duroxide.MAX_WORKER_TAGS == 5
    assert duroxide.MAX_TAG_NAME_BYTES == 256


def test_parse_result():
    assert parse_result([{"ok": 1}, {"ok": "a"}]) == [1, "a"]
    assert parse_result({"ok": {"x": 1}}) == {"x": 1}
    with pytest.raises(Exception, match="boom"):
        parse_result({"err": "boom"})
    with pytest.raises(Exception, match="bad"):
        parse_result([{"ok": 1}, {"err": "bad"}])
    for other in (5, "x", None, [1, 2], {"a": 1}, {"ok": 1, "x": 2}):
        assert parse_result(other) == other


def test_exception_hierarchy():
    for cls in (duroxide.NotFound, duroxide.StillRunning, OrchestrationTimeout, duroxide.Nondeterminism, InvalidInput):
        assert issubclass(cls, DuroxideError)
    assert issubclass(DuroxideError, RuntimeError)
    assert issubclass(InvalidInput, ValueError)
    assert str(OrchestrationTimeout()) == "Operation timed out"
    assert issubclass(ActivityFailed, Exception) and issubclass(SubOrchestrationFailed, Exception)
    e = ActivityFailed("ValueError: x: y", name="A")
    assert (e.name, e.error_type, e.message) == ("A", "ValueError", "x: y")


def test_py_typed_and_stubs_ship():
    import pathlib

    pkg = pathlib.Path(duroxide.__file__).parent
    assert (pkg / "py.typed").exists()
    assert (pkg / "_native.pyi").exists()


def test_init_tracing_writes_to_a_file_and_refuses_a_second_call(tmp_path):
    log = tmp_path / "logs" / "dx.log"
    log.parent.mkdir()
    script = textwrap.dedent(f"""
        import duroxide
        from duroxide import SqliteProvider, Client, Runtime
        try:
            duroxide.init_tracing({str(tmp_path / "missing-dir" / "x.log")!r})
        except RuntimeError as e:
            print("first:", str(e).split(" ")[0:4])
        duroxide.init_tracing({str(log)!r}, "info", "json")
        try:
            duroxide.init_tracing({str(log)!r})
        except RuntimeError as e:
            print("second:", str(e).startswith("Failed to init tracing"))
        p = SqliteProvider.in_memory(); c = Client(p); rt = Runtime(p)
        @rt.register_orchestration("T")
        def t(ctx, x):
            ctx.trace_info("hello from the orchestration")
            return x
        rt.start(); c.start_orchestration("t", "T", 1); c.wait_for_orchestration("t"); rt.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in __import__("os").environ.items() if k != "RUST_LOG"})
    assert out.returncode == 0, out.stderr
    assert "first: ['Failed', 'to', 'open', 'log']" in out.stdout
    assert "second: True" in out.stdout
    assert "hello from the orchestration" in log.read_text()


# ---- RuntimeOptions and TagFilter -------------------------------------------------------------------


def test_runtime_options_defaults_and_attributes():
    o = RuntimeOptions()
    assert (o.orchestration_concurrency, o.worker_concurrency, o.dispatcher_poll_interval_ms) == (4, 8, 100)
    assert (o.worker_lock_timeout_ms, o.orchestrator_lock_timeout_ms, o.max_attempts) == (30000, 5000, 10)
    assert (o.max_sessions_per_runtime, o.session_idle_timeout_ms) == (10, 300000)
    assert o.inline_activity_wait_ms == 20
    assert RuntimeOptions(inline_activity_wait_ms=0).inline_activity_wait_ms == 0
    assert o.worker_node_id is None and o.log_level is None and o.worker_tag_filter == TagFilter.DEFAULT_ONLY
    o = RuntimeOptions(worker_concurrency=0, log_format="compact", worker_tag_filter="default_and:gpu,fpga")
    assert o.worker_concurrency == 0 and o.log_format == "compact"
    assert o.worker_tag_filter == TagFilter.default_and(["gpu", "fpga"])
    assert "worker_concurrency=0" in repr(o)
    with pytest.raises(TypeError):
        RuntimeOptions(4)  # keyword-only


def test_tag_filters():
    assert TagFilter.parse("any") == TagFilter.ANY
    assert TagFilter.parse("none") == TagFilter.NONE
    assert TagFilter.parse(["a"]) == TagFilter.tags(["a"])
    assert TagFilter.parse("tags:a, b") == TagFilter.tags(["a", "b"])
    assert repr(TagFilter.DEFAULT_ONLY) == "TagFilter.DEFAULT_ONLY"
    assert repr(TagFilter.tags(["x"])) == "TagFilter.tags(['x'])"


def test_activity_tags_route_to_matching_workers(provider, make_runtime, client):
    orch = make_runtime(RuntimeOptions(worker_concurrency=0))
    plain = make_runtime(RuntimeOptions(orchestration_concurrency=0, worker_node_id="plain"))
    gpu = make_runtime(RuntimeOptions(orchestration_concurrency=0, worker_node_id="gpu-node",
                                      worker_tag_filter=TagFilter.tags(["gpu"])))

    def where(ctx, x):
        return [ctx.worker_id, ctx.tag()]

    for rt in (plain, gpu):
        rt.register_activity("Where", where)

    @orch.register_orchestration("Route")
    def route(ctx, _):
        a = yield ctx.schedule_activity("Where", None)
        b = yield ctx.schedule_activity("Where", None).with_tag("gpu")
        c = yield ctx.schedule_activity("Where", None, tag="gpu")
        return [a, b, c]

    for rt in (orch, plain, gpu):
        rt.start()
    client.start_orchestration("route", "Route", None)
    assert client.wait_for_orchestration("route").output == [["plain", None], ["gpu-node", "gpu"], ["gpu-node", "gpu"]]


def test_tag_filter_none_runs_no_activities(make_runtime, client):
    idle = make_runtime(RuntimeOptions(worker_tag_filter=TagFilter.NONE))
    idle.register_activity("A", echo)

    @idle.register_orchestration("W")
    def w(ctx, _):
        r = yield ctx.schedule_activity("A", 1)
        return r

    idle.start()
    client.start_orchestration("w", "W", None)
    wait_until(lambda: client.get_queue_depths().worker_queue == 1)
    worker = make_runtime(RuntimeOptions(orchestration_concurrency=0, worker_tag_filter=TagFilter.ANY))
    worker.register_activity("A", echo)
    worker.start()
    assert client.wait_for_orchestration("w").output == 1


# ---- Runtime ------------------------------------------------------------------------------------------


def test_registration_forms_return_the_function(runtime):
    def f(ctx, x):
        return x

    assert runtime.register_activity("A", f) is f
    assert runtime.register_activity("B")(f) is f
    assert runtime.register_orchestration("O", f) is f
    assert runtime.register_orchestration("P")(f) is f
    assert runtime.register_orchestration_versioned("O", "2.0.0", f) is f
    assert runtime.register_orchestration_versioned("O", "2.1.0")(f) is f
    assert runtime.register_activity_typed("C", f) is f
    assert runtime.register_orchestration_typed("Q", f) is f
    assert runtime.register_orchestration_versioned_typed("Q", "1.1.0", f) is f


def test_context_manager_metrics_and_shutdown(provider, client):
    with Runtime(provider) as rt:
        assert rt.is_running
        rt_snapshot_before = rt.metrics_snapshot()
        assert isinstance(rt_snapshot_before, MetricsSnapshot)
        client.start_orchestration("x", "Unregistered", None)
    assert not rt.is_running
    rt.shutdown()  # idempotent

    rt2 = Runtime(provider)
    assert rt2.metrics_snapshot() is None
    rt2.register_activity("A", echo)

    @rt2.register_orchestration("W")
    def w(ctx, x):
        r = yield ctx.schedule_activity("A", x)
        return r

    with rt2:
        client.start_orchestration("w", "W", 1)
        client.wait_for_orchestration("w")
        # Counters are updated just after the turn commits, which is when waiters may already see it.
        wait_until(lambda: rt2.metrics_snapshot().orch_completions == 1)
        snap = rt2.metrics_snapshot()
    assert snap.orch_starts == snap["orch_starts"] == 1
    assert dict(snap)["activity_success"] == 1
    assert set(dict(snap)) >= {
        "orch_starts", "orch_completions", "orch_failures", "orch_application_errors",
        "orch_infrastructure_errors", "orch_configuration_errors", "orch_poison", "activity_success",
        "activity_app_errors", "activity_infra_errors", "activity_config_errors", "activity_poison",
        "orch_dispatcher_items_fetched", "worker_dispatcher_items_fetched", "orch_continue_as_new",
        "suborchestration_calls", "provider_errors",
    }
    assert rt2.metrics_snapshot()["orch_completions"] == 1  # kept after shutdown
    with pytest.raises(AttributeError):
        getattr(snap, "no_such_counter")  # noqa: B009 - attribute access is what is tested


def test_each_runtime_owns_its_registry(make_provider, runtimes):
    results = []
    for label in ("one", "two"):
        p = make_provider(label)  # separate stores: only the registries are compared
        rt = Runtime(p)
        runtimes.append(rt)
        rt.register_activity("Who", lambda ctx, x, label=label: label)

        @rt.register_orchestration("W")
        def w(ctx, x):
            r = yield ctx.schedule_activity("Who", None)
            return r

        rt.start()
        results.append((p, label))
    for p, label in results:
        c = Client(p)
        c.start_orchestration(f"w-{label}", "W", None)
        assert c.wait_for_orchestration(f"w-{label}").output == label


def test_async_activities_are_awaited(runtime, client):
    @runtime.register_activity("Sleepy")
    async def sleepy(ctx, x):
        await asyncio.sleep(0.01)
        return {"slept": x, "session": ctx.session_id}

    @runtime.register_orchestration("W")
    def w(ctx, _):
        rs = yield ctx.all([ctx.schedule_activity("Sleepy", i) for i in range(5)])
        return parse_result(rs)

    runtime.start()
    client.start_orchestration("w", "W", None)
    assert client.wait_for_orchestration("w").output == [{"slept": i, "session": None} for i in range(5)]


def test_plain_function_orchestration_completes_at_once(runtime, client):
    runtime.register_orchestration("Plain", lambda ctx, x: {"doubled": x * 2})
    runtime.start()
    client.start_orchestration("p", "Plain", 21)
    assert client.wait_for_orchestration("p").output == {"doubled": 42}


def test_two_runtimes_share_one_provider(provider, make_runtime, client):
    seen = set()
    lock = threading.Lock()

    def work(ctx, x):
        with lock:
            seen.add(ctx.worker_id)
        time.sleep(0.005)
        return x

    rts = [make_runtime(RuntimeOptions(worker_node_id=f"node-{i}")) for i in range(2)]
    for rt in rts:
        rt.register_activity("Work", work)

        @rt.register_orchestration("Fan")
        def fan(ctx, n):
            rs = yield ctx.all_typed([ctx.schedule_activity("Work", i) for i in range(n)])
            return sum(rs)

        rt.start()
    client.start_orchestration("fan", "Fan", 60)
    assert client.wait_for_orchestration("fan").output == sum(range(60))
    assert seen <= {"node-0", "node-1"}


# ---- Client -------------------------------------------------------------------------------------------


def test_status_of_unknown_instance_and_timeouts(runtime, client):
    @runtime.register_orchestration("Wait")
    def w(ctx, _):
        v = yield ctx.wait_for_event("go")
        return v

    runtime.start()
    r = client.get_status("never")
    assert (r.status, r.output, r.error, r.custom_status, r.custom_status_version) == ("NotFound", None, None, None, 0)
    client.start_orchestration("w", "Wait", None)
    with pytest.raises(OrchestrationTimeout, match="Operation timed out"):
        client.wait_for_orchestration("w", 50)
    with pytest.raises(RuntimeError):
        client.wait_for_orchestration("w", 10)
    assert client.wait_for_status_change("w", 0, 10, 50) is None
    with pytest.raises(TimeoutError):
        client.wait_for_kv_value("w", "nope", 30)
    client.raise_event("w", "go", "done")
    assert client.wait_for_orchestration("w").output == "done"


def test_idempotent_start_keeps_first_input_and_early_events_are_buffered(runtime, client):
    @runtime.register_orchestration("W")
    def w(ctx, x):
        yield ctx.schedule_timer(20)
        a = yield ctx.wait_for_event("e")
        b = yield ctx.wait_for_event("e")
        return [x, a, b]

    client.start_orchestration("w", "W", "first")
    client.start_orchestration("w", "W", "second")
    client.raise_event("w", "e", 1)  # before the runtime even started
    client.raise_event("w", "e", 2)
    runtime.start()
    assert client.wait_for_orchestration("w").output == ["first", 1, 2]


def test_typed_client_variants(runtime, client):
    @runtime.register_orchestration("Echo")
    def echo_orch(ctx, x):
        ev = yield ctx.wait_for_event("e")
        q = yield ctx.dequeue_event("q")
        ctx.set_kv_value("k", '{"n": 1}')
        return {"input": x, "event": ev, "queue": q}

    @runtime.register_orchestration_versioned("Echo", "2.0.0")
    def echo_v2(ctx, x):
        return {"v2": x}

    runtime.register_orchestration("Fail", lambda ctx, x: (_ for _ in ()).throw(ValueError("nope")))
    runtime.start()
    client.start_orchestration_versioned_typed("a", "Echo", "21", "1.0.0")
    client.raise_event_typed("a", "e", '{"x": 1}')
    client.enqueue_event_typed("a", "q", [1, 2])
    # The latest version (2.0.0) runs "b"; text that is not JSON is sent as a JSON string.
    client.start_orchestration_typed("b", "Echo", "not json")
    assert client.wait_for_orchestration_typed("b") == {"v2": "not json"}
    out = client.wait_for_orchestration_typed("a")
    assert out == {"input": 21, "event": {"x": 1}, "queue": [1, 2]}
    assert client.get_kv_value("a", "k") == '{"n": 1}'
    assert client.get_kv_value_typed("a", "k") == {"n": 1}
    assert client.wait_for_kv_value_typed("a", "k", 1000) == {"n": 1}
    assert client.get_kv_value_typed("a", "missing") is None
    client.start_orchestration("f", "Fail", None)
    with pytest.raises(OrchestrationFailed, match="ValueError: nope"):
        client.wait_for_orchestration_typed("f")


def test_management_api(runtime, client):
    runtime.register_activity("A", echo)

    @runtime.register_orchestration("Child")
    def child(ctx, x):
        r = yield ctx.schedule_activity("A", x)
        return r

    @runtime.register_orchestration("Parent")
    def parent(ctx, x):
        a = yield ctx.schedule_sub_orchestration_with_id("Child", "kid-1", 1)
        b = yield ctx.schedule_sub_orchestration("Child", 2)
        return [a, b]

    @runtime.register_orchestration("Loop")
    def loop(ctx, n):
        if n < 3:
            yield ctx.continue_as_new(n + 1)
        return n

    @runtime.register_orchestration("Waiter")
    def waiter(ctx, _):
        yield ctx.wait_for_event("never")

    runtime.start()
    before = int(time.time() * 1000)
    client.start_orchestration("parent", "Parent", None)
    client.start_orchestration("loop", "Loop", 0)
    client.start_orchestration("waiter", "Waiter", None)
    assert client.wait_for_orchestration("parent").output == [1, 2]
    assert client.wait_for_orchestration("loop").output == 3

    info = client.get_instance_info("parent")
    assert (info.instance_id, info.orchestration_name, info.orchestration_version) == ("parent", "Parent", "1.0.0")
    assert info.status == "Completed" and info.current_execution_id == 1 and info.parent_instance_id is None
    assert info.output == "[1, 2]"
    assert before - 1000 <= info.created_at <= info.updated_at <= int(time.time() * 1000) + 1000
    assert client.get_instance_info("kid-1").parent_instance_id == "parent"
    with pytest.raises(NotFound):
        client.get_instance_info("nobody")

    tree = client.get_instance_tree("parent")
    assert tree.root_id == "parent" and tree.all_ids[0] == "parent" and tree.size == 3
    assert "kid-1" in tree.all_ids

    assert client.list_executions("loop") == [1, 2, 3, 4]
    ex = client.get_execution_info("loop", 1)
    assert ex.execution_id == 1 and ex.status == "ContinuedAsNew" and ex.event_count >= 2
    assert ex.completed_at is not None and ex.started_at <= ex.completed_at
    last = client.get_execution_info("loop", 4)
    assert last.status == "Completed" and last.output == "3"
    with pytest.raises(NotFound):
        client.get_execution_info("loop", 99)

    history = client.read_execution_history("kid-1", 1)
    kinds = [e.kind for e in history]
    assert kinds == ["OrchestrationStarted", "ActivityScheduled", "ActivityCompleted", "OrchestrationCompleted"]
    import json

    started = json.loads(history[0].data)
    assert started["name"] == "Child" and started["version"] == "1.0.0" and started["input"] == "1"
    assert json.loads(history[1].data) == {"name": "A", "input": "1"}
    assert history[2].source_event_id == history[1].event_id and json.loads(history[2].data) == "1"
    assert all(e.timestamp_ms >= before - 1000 for e in history)

    stats = client.get_orchestration_stats("parent")
    assert stats.history_event_count >= 4 and stats.history_size_bytes > 0
    assert client.get_orchestration_stats("nobody") is None

    assert set(client.list_all_instances()) >= {"parent", "kid-1", "loop", "waiter"}
    assert client.list_instances_by_status("Running") == ["waiter"]
    assert "loop" in client.list_instances_by_status("Completed")
    m = client.get_system_metrics()
    assert m.total_instances == 5 and m.running_instances == 1 and m.completed_instances == 4
    assert m.total_executions >= 8 and m.total_events > 0 and m.failed_instances == 0

    pruned = client.prune_executions("loop", PruneOptions(keep_last=1))
    assert pruned.executions_deleted == 3 and pruned.instances_processed == 1 and pruned.events_deleted > 0
    assert client.list_executions("loop") == [4]
    assert client.prune_executions_bulk(InstanceFilter(instance_ids=["loop"]), PruneOptions(keep_last=1)).executions_deleted == 0

    with pytest.raises(StillRunning):
        client.delete_instance("waiter")
    forced = client.delete_instance("waiter", force=True)
    assert forced.instances_deleted == 1
    with pytest.raises(NotFound):
        client.delete_instance("waiter")

    deleted = client.delete_instance("parent")
    assert deleted.instances_deleted == 3 and deleted.events_deleted > 0
    assert client.get_status("kid-1").status == "NotFound"
    bulk = client.delete_instance_bulk(InstanceFilter(instance_ids=["loop"]))
    assert bulk.instances_deleted == 1 and bulk.executions_deleted == 1
    assert client.list_all_instances() == []


def test_cancel_cascades_to_children(runtime, client):
    @runtime.register_orchestration("Kid")
    def kid(ctx, _):
        yield ctx.wait_for_event("never")

    @runtime.register_orchestration("Dad")
    def dad(ctx, _):
        yield ctx.schedule_sub_orchestration_with_id("Kid", "kid", None)

    runtime.start()
    client.start_orchestration("dad", "Dad", None)
    wait_until(lambda: client.get_status("kid").status == "Running")
    client.cancel_instance("dad", "stop it")
    assert client.wait_for_orchestration("dad").error.startswith("canceled: stop it")
    assert client.wait_for_orchestration("kid").status == "Failed"
    client.cancel_instance("dad", "again")  # terminal: a no-op


# ---- OrchestrationContext -----------------------------------------------------------------------------


def test_context_attributes_and_custom_status(runtime, client):
    @runtime.register_orchestration_versioned("Who", "1.2.3")
    def who(ctx, _):
        first = [ctx.instance_id, ctx.execution_id, ctx.orchestration_name, ctx.orchestration_version]
        ctx.set_custom_status({"phase": 1})
        status = ctx.get_custom_status()
        yield ctx.schedule_timer(1)
        if ctx.execution_id == 1:
            yield ctx.continue_as_new_versioned(None, "1.2.3")
        return [first, status, ctx.is_replaying, repr(ctx)]

    runtime.start()
    client.start_orchestration("who", "Who", None)
    out = client.wait_for_orchestration("who").output
    assert out[0] == ["who", 2, "Who", "1.2.3"]
    assert out[1] == "{'phase': 1}"
    assert out[2] is False and "who" in out[3]


def test_all_with_failures_and_race_n_way(runtime, client):
    @runtime.register_activity("Maybe")
    def maybe(ctx, x):
        if x % 2:
            raise RuntimeError(f"odd {x}")
        return x

    @runtime.register_activity("Slow")
    def slow(ctx, x):
        while not ctx.is_cancelled():
            time.sleep(0.01)
        return "never seen"

    @runtime.register_orchestration("W")
    def w(ctx, _):
        results = yield ctx.all([ctx.schedule_activity("Maybe", i) for i in range(4)])
        empty = yield ctx.all([])
        winner = yield ctx.race(
            ctx.schedule_activity("Slow", None),
            ctx.wait_for_event("never"),
            ctx.schedule_timer(10),
            ctx.schedule_activity("Slow", None),
        )
        nested = yield ctx.race(ctx.all([ctx.schedule_timer(1), ctx.utc_now()]), ctx.wait_for_event("never"))
        try:
            yield ctx.race(ctx.schedule_activity("Maybe", 3), ctx.wait_for_event("never"))
            lost = None
        except ActivityFailed as e:
            lost = str(e)
        typed = yield ctx.all_typed([ctx.schedule_activity("Maybe", 0), ctx.schedule_activity("Maybe", 2)])
        rt = yield ctx.race_typed(ctx.schedule_timer(1), ctx.wait_for_event("never"))
        return [results, empty, winner, nested["index"], lost, typed, rt]

    runtime.start()
    client.start_orchestration("w", "W", None)
    out = client.wait_for_orchestration("w").output
    assert out[0] == [{"ok": 0}, {"err": "RuntimeError: odd 1"}, {"ok": 2}, {"err": "RuntimeError: odd 3"}]
    assert out[1] == [] and out[2] == {"index": 2, "value": None} and out[3] == 0
    assert out[4] == "RuntimeError: odd 3" and out[5] == [0, 2] and out[6] == {"index": 0, "value": None}


def test_large_fan_out(runtime, client):
    runtime.register_activity("Sq", lambda ctx, x: x * x)

    @runtime.register_orchestration("Big")
    def big(ctx, n):
        rs = yield ctx.all([ctx.schedule_activity("Sq", i) for i in range(n)])
        return sum(r["ok"] for r in rs)

    runtime.start()
    client.start_orchestration("big", "Big", 500)
    assert client.wait_for_orchestration("big", 60000).output == sum(i * i for i in range(500))


def _register_square_fan_out(rt):
    """`Fan(n)`: `n` parallel `Sq` activities, their results in order."""
    rt.register_activity("Sq", lambda ctx, x: x * x)

    @rt.register_orchestration("Fan")
    def fan(ctx, n):
        rs = yield ctx.all([ctx.schedule_activity("Sq", i) for i in range(n)])
        return [r["ok"] for r in rs]


def _run_fan_out(client, instance_id, n=40):
    client.start_orchestration(instance_id, "Fan", n)
    assert client.wait_for_orchestration(instance_id, 60000).output == [i * i for i in range(n)]


def test_a_fan_out_of_quick_activities_runs_inline(runtime, client):
    _register_square_fan_out(runtime)
    runtime.start()
    # Wider than the worker slots. An activity's first runs go through the queue, and a run slowed
    # down by a busy machine can make it look long for a while; then the whole fan-out runs inline.
    for attempt in range(20):
        before = runtime.metrics_snapshot().activity_inline_runs
        _run_fan_out(client, f"fan-{attempt}")
        if runtime.metrics_snapshot().activity_inline_runs - before == 40:
            return
    raise AssertionError("no fan-out of quick activities ran inline in 20 tries")


def test_inline_activities_can_be_turned_off(make_runtime, client):
    rt = make_runtime(RuntimeOptions(inline_activity_wait_ms=0))
    _register_square_fan_out(rt)
    rt.start()
    for attempt in range(5):
        _run_fan_out(client, f"fan-{attempt}")
    snap = rt.metrics_snapshot()
    assert snap.activity_inline_runs == 0 and snap.worker_dispatcher_items_fetched == 200


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_typed_context_variants(runtime, client):
    runtime.register_activity("Inc", lambda ctx, p: {"x": p["x"] + 1, "y": p["y"]})
    runtime.register_activity("Num", lambda ctx, x: x)
    runtime.register_orchestration("Kid", lambda ctx, x: {"x": x, "y": 0})

    @runtime.register_orchestration("T")
    def t(ctx, x):
        if ctx.execution_id == 1:
            yield ctx.continue_as_new_typed('"again"')
        p = yield ctx.schedule_activity_typed("Inc", '{"x": 1, "y": 2}', result_type=Point)
        n = yield ctx.schedule_activity_typed("Num", "21")
        s = yield ctx.schedule_activity_on_session_typed("Num", "5", "sess", result_type=str)
        r = yield ctx.schedule_activity_with_retry_typed("Num", 3, {"max_attempts": 2}, result_type=float)
        rs = yield ctx.schedule_activity_with_retry_on_session_typed("Num", 4, {"maxAttempts": 1}, "sess")
        kid = yield ctx.schedule_sub_orchestration_typed("Kid", 7, result_type=Point)
        kid2 = yield ctx.schedule_sub_orchestration_with_id_typed("Kid", "kid-t", "8")
        ev = yield ctx.wait_for_event_typed("e")
        q = yield ctx.dequeue_event_typed("q", result_type=Point)
        yield ctx.start_orchestration_typed("Kid", "kid-fire", "9")
        yield ctx.start_orchestration_versioned_typed("Kid", "1.0.0", "kid-fire-2", 10)
        return [isinstance(p, Point) and p == Point(2, 2), n, s, r, rs, kid == Point(7, 0), kid2, ev, q == Point(1, 1), x]

    runtime.start()
    client.start_orchestration("t", "T", None)
    client.raise_event("t", "e", '{"a": 1}')  # carried across the continue-as-new
    client.enqueue_event("t", "q", '{"x": 1, "y": 1}')
    out = client.wait_for_orchestration("t").output
    assert out == [True, 21, "5", 3.0, 4, True, {"x": 8, "y": 0}, {"a": 1}, True, "again"]
    assert client.wait_for_orchestration("kid-fire").output == {"x": 9, "y": 0}
    assert client.wait_for_orchestration("kid-fire-2").output == {"x": 10, "y": 0}


def test_versioned_sub_orchestrations_and_starts(runtime, client):
    runtime.register_orchestration("V", lambda ctx, x: "v1")
    runtime.register_orchestration_versioned("V", "2.0.0", lambda ctx, x: "v2")

    @runtime.register_orchestration("Caller")
    def caller(ctx, _):
        a = yield ctx.schedule_sub_orchestration_versioned("V", "1.0.0")
        b = yield ctx.schedule_sub_orchestration_versioned("V", None, None)
        c = yield ctx.schedule_sub_orchestration_versioned_with_id("V", "1.0.0", "v-kid", None)
        yield ctx.start_orchestration_versioned("V", "1.0.0", "v-fire", None)
        return [a, b, c]

    runtime.start()
    client.start_orchestration("c", "Caller", None)
    assert client.wait_for_orchestration("c").output == ["v1", "v2", "v1"]
    assert client.wait_for_orchestration("v-fire").output == "v1"


def test_sub_orchestration_failure_is_raised(runtime, client):
    @runtime.register_orchestration("Bad")
    def bad(ctx, _):
        raise ValueError("child broke")

    @runtime.register_orchestration("P")
    def p(ctx, _):
        try:
            yield ctx.schedule_sub_orchestration("Bad")
        except SubOrchestrationFailed as e:
            return [e.name, e.error_type, e.message]

    runtime.start()
    client.start_orchestration("p", "P", None)
    assert client.wait_for_orchestration("p").output == ["Bad", "ValueError", "child broke"]


def test_retry_exhaustion_and_per_attempt_timeout(runtime, client):
    calls = []

    @runtime.register_activity("Always")
    def always(ctx, x):
        calls.append(ctx.attempt)
        raise OSError("still down")

    @runtime.register_activity("Hang")
    def hang(ctx, x):
        while not ctx.is_cancelled():
            time.sleep(0.01)

    @runtime.register_orchestration("R")
    def r(ctx, _):
        out = []
        for name, retry in (("Always", {"max_attempts": 2, "backoff": "fixed"}),
                            ("Hang", {"maxAttempts": 2, "timeoutMs": 50, "backoff": "linear"}),
                            ("Hang", {"max_attempts": 5, "timeout_ms": 50, "total_timeout_ms": 120, "backoff": "none"})):
            try:
                yield ctx.schedule_activity_with_retry(name, None, retry)
            except ActivityFailed as e:
                out.append(str(e))
        return out

    runtime.start()
    client.start_orchestration("r", "R", None)
    out = client.wait_for_orchestration("r").output
    assert out[0] == "OSError: still down"
    assert "timed out after 50 ms" in out[1]
    assert "total retry timeout" in out[2] or "timed out" in out[2]
    assert len(calls) == 2


# ---- ActivityContext ----------------------------------------------------------------------------------


def test_activity_context_attributes(runtime, client):
    @runtime.register_activity("Me")
    def me(ctx, x):
        return {
            "instance_id": ctx.instance_id, "execution_id": ctx.execution_id,
            "orchestration_name": ctx.orchestration_name, "orchestration_version": ctx.orchestration_version,
            "activity_name": ctx.activity_name, "activity_id": ctx.activity_id,
            "worker_id": bool(ctx.worker_id), "session_id": ctx.session_id, "attempt": ctx.attempt,
            "tag": ctx.tag(), "cancelled": ctx.is_cancelled(),
            "client": type(ctx.get_client()).__name__, "repr": "Me" in repr(ctx),
        }

    @runtime.register_orchestration("O")
    def o(ctx, _):
        r = yield ctx.schedule_activity("Me", None)
        return r

    runtime.start()
    client.start_orchestration("o", "O", None)
    assert client.wait_for_orchestration("o").output == {
        "instance_id": "o", "execution_id": 1, "orchestration_name": "O", "orchestration_version": "1.0.0",
        "activity_name": "Me", "activity_id": 2, "worker_id": True, "session_id": None, "attempt": 1,
        "tag": None, "cancelled": False, "client": "Client", "repr": True,
    }


# ---- instance cache -----------------------------------------------------------------------------------


def test_cached_generator_is_resumed_not_replayed(provider, runtimes):
    client = Client(provider)
    entries = []

    def build():
        rt = Runtime(provider)
        runtimes.append(rt)
        rt.register_activity("Step", echo)

        @rt.register_orchestration("Steps")
        def steps(ctx, _):
            entries.append(ctx.is_replaying)
            for i in range(5):
                yield ctx.schedule_activity("Step", i)
            v = yield ctx.wait_for_event("go")
            return v

        return rt

    rt = build()
    rt.start()
    client.start_orchestration("s", "Steps", None)
    wait_until(lambda: "ExternalSubscribed" in [e.kind for e in client.read_execution_history("s", 1)])
    # Six turns ran, but the generator was created once: each turn resumed the cached generator.
    assert entries == [False]
    rt.shutdown()
    rt2 = build()
    rt2.start()
    client.raise_event("s", "go", 2)
    assert client.wait_for_orchestration("s").output == 2
    # A new runtime has no cached state: it replayed the generator from history once.
    assert entries == [False, True]


def test_interpreter_exit_without_shutdown_is_clean():
    script = textwrap.dedent("""
        from duroxide import SqliteProvider, Client, Runtime
        p = SqliteProvider.in_memory(); c = Client(p); rt = Runtime(p)
        rt.register_activity("A", lambda ctx, x: x)
        @rt.register_orchestration("W")
        def w(ctx, x):
            r = yield ctx.schedule_activity("A", x)
            return r
        rt.start()
        for i in range(20):
            c.start_orchestration(f"w{i}", "W", i)
        print(c.wait_for_orchestration("w0").output)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "0\n"


def test_a_new_runtime_replays_the_generator_from_history(provider, runtimes):
    client = Client(provider)
    replaying = []
    side_effects = []

    def build():
        rt = Runtime(provider)
        runtimes.append(rt)
        rt.register_activity("Step", lambda ctx, x: side_effects.append(x) or x)

        @rt.register_orchestration("Steps")
        def steps(ctx, _):
            replaying.append(ctx.is_replaying)
            total = 0
            for i in range(3):
                total += yield ctx.schedule_activity("Step", i)
            v = yield ctx.wait_for_event("go")
            return [total, v, ctx.is_replaying]

        return rt

    first = build()
    first.start()
    client.start_orchestration("s", "Steps", None)
    wait_until(lambda: "ExternalSubscribed" in [e.kind for e in client.read_execution_history("s", 1)])
    first.shutdown()
    replaying.clear()
    second = build()
    second.start()
    client.raise_event("s", "go", "late")
    assert client.wait_for_orchestration("s").output == [3, "late", False]
    # The generator restarted over recorded history: replaying first, activities not run again.
    assert replaying[0] is True
    assert side_effects == [0, 1, 2]


# ---- worker threads -----------------------------------------------------------------------------------


def test_activity_threads_keep_their_thread_locals(runtime, client):
    # A thread that runs activities keeps its Python thread state between calls, so what an activity
    # keeps in a `threading.local` (a connection, a cache) is there for the next one on that thread.
    local = threading.local()

    @runtime.register_activity("Count")
    def count(ctx, _):
        local.n = getattr(local, "n", 0) + 1
        return [threading.get_ident(), local.n]

    @runtime.register_orchestration("Counts")
    def counts(ctx, _):
        seen = []
        for _ in range(30):
            seen.append((yield ctx.schedule_activity("Count", None)))
        return seen

    runtime.start()
    client.start_orchestration("c", "Counts", None)
    seen = client.wait_for_orchestration("c").output
    by_thread: dict = {}
    for ident, n in seen:
        by_thread.setdefault(ident, []).append(n)
    # Each thread counted 1, 2, 3, ... across its calls; 30 calls on a few threads reuse some.
    assert all(ns == list(range(1, len(ns) + 1)) for ns in by_thread.values()), by_thread
    assert max(len(ns) for ns in by_thread.values()) > 1, by_thread


@pytest.mark.skipif(sys.platform != "linux", reason="watches the worker thread end through /proc")
def test_a_worker_thread_that_ends_gives_back_its_python_state():
    # Idle worker threads end after ten seconds; the one that ran an activity deletes the Python thread
    # state it kept. The process must go on running activities and exit cleanly afterwards.
    script = textwrap.dedent("""
        import os, threading, time
        from duroxide import SqliteProvider, Client, Runtime
        p = SqliteProvider.in_memory(); c = Client(p); rt = Runtime(p)
        rt.register_activity("Tid", lambda ctx, x: threading.get_native_id())
        @rt.register_orchestration("W")
        def w(ctx, x):
            r = yield ctx.schedule_activity("Tid", x)
            return r
        rt.start()
        c.start_orchestration("a", "W", 0)
        tid = c.wait_for_orchestration("a").output
        deadline = time.monotonic() + 60
        while os.path.exists(f"/proc/self/task/{tid}"):
            assert time.monotonic() < deadline, "the idle worker thread never ended"
            time.sleep(0.1)
        c.start_orchestration("b", "W", 1)
        print(c.wait_for_orchestration("b").status)
        rt.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Completed\n"
