"""The seed user guide, section by section: every code example runs here as written.

Examples are pasted verbatim inside the test functions (the guide's `runtime` and `client` are the
fixtures); what a snippet leaves implicit (registering the activities it calls, starting an instance)
is added around it, and every test waits on conditions, never on fixed sleeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest

from duroxide import Client, PostgresProvider, Runtime, RuntimeOptions, SqliteProvider


def echo(ctx, x):
    return x


# ---- Minimal Example ----------------------------------------------------------------------------


def test_minimal_example(provider, runtimes, capsys):
    client = Client(provider)
    runtime = Runtime(provider)
    runtimes.append(runtime)

    @runtime.register_activity("SayHello")
    def say_hello(ctx, name):
        return f"Hello, {name}!"

    @runtime.register_orchestration("HelloWorkflow")
    def hello_workflow(ctx, input):
        greeting = yield ctx.schedule_activity("SayHello", input["name"])
        return greeting

    runtime.start()

    client.start_orchestration("hello-1", "HelloWorkflow", {"name": "World"})
    result = client.wait_for_orchestration("hello-1")
    print(result.output)  # "Hello, World!"

    runtime.shutdown()
    assert result.status == "Completed"
    assert capsys.readouterr().out == "Hello, World!\n"


def test_minimal_example_script_on_in_memory_sqlite():
    """`examples/python/hello.py` is the same program; it prints the greeting."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "python" / "hello.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Hello, World!\n"


# ---- Orchestration Patterns ---------------------------------------------------------------------


def test_sequential_steps(runtime, client):
    runtime.register_activity("Extract", lambda ctx, x: x + ["extract"])
    runtime.register_activity("Transform", lambda ctx, x: x + ["transform"])
    runtime.register_activity("Load", lambda ctx, x: x + ["load"])

    @runtime.register_orchestration("Pipeline")
    def pipeline(ctx, input):
        step1 = yield ctx.schedule_activity("Extract", input)
        step2 = yield ctx.schedule_activity("Transform", step1)
        step3 = yield ctx.schedule_activity("Load", step2)
        return step3

    runtime.start()
    client.start_orchestration("p-1", "Pipeline", [])
    assert client.wait_for_orchestration("p-1").output == ["extract", "transform", "load"]


def test_fan_out_fan_in(runtime, client):
    runtime.register_activity("ProcessItem", lambda ctx, x: x * 10)

    @runtime.register_orchestration("FanOut")
    def fan_out(ctx, input):
        tasks = [ctx.schedule_activity("ProcessItem", item) for item in input["items"]]
        results = yield ctx.all(tasks)
        return results

    runtime.start()
    client.start_orchestration("f-1", "FanOut", {"items": list(range(40))})
    result = client.wait_for_orchestration("f-1")
    assert result.output == [{"ok": i * 10} for i in range(40)]


def test_mixed_task_types_in_all(runtime, client):
    runtime.register_activity("Work", lambda ctx, x: f"worked on {x}")

    @runtime.register_orchestration("MixedAll")
    def mixed_all(ctx, input):
        act_result, _, event_data = yield ctx.all([
            ctx.schedule_activity("Work", input),
            ctx.schedule_timer(1000),           # timers return {"ok": None}
            ctx.wait_for_event("approval"),     # waits return {"ok": event_data}
        ])
        return act_result

    runtime.start()
    client.start_orchestration("m-1", "MixedAll", "job")
    client.raise_event("m-1", "approval", {"by": "alice"})
    assert client.wait_for_orchestration("m-1").output == {"ok": "worked on job"}


def test_race_select(runtime, client):
    runtime.register_activity("FastService", lambda ctx, x: f"fast {x}")

    @runtime.register_orchestration("RaceExample")
    def race_example(ctx, input):
        winner = yield ctx.race(
            ctx.schedule_activity("FastService", input),
            ctx.schedule_timer(5000),  # 5 second timeout
        )

        if winner["index"] == 0:
            return winner["value"]  # FastService completed first
        else:
            return "timed out"

    runtime.start()
    client.start_orchestration("r-1", "RaceExample", "req")
    assert client.wait_for_orchestration("r-1").output == "fast req"


def test_race_times_out_when_the_service_is_slow(runtime, client):
    release = threading.Event()

    @runtime.register_activity("FastService")
    def slow(ctx, x):
        release.wait(10)
        return "late"

    @runtime.register_orchestration("RaceExample")
    def race_example(ctx, input):
        winner = yield ctx.race(
            ctx.schedule_activity("FastService", input),
            ctx.schedule_timer(50),
        )
        if winner["index"] == 0:
            return winner["value"]
        else:
            return "timed out"

    runtime.start()
    client.start_orchestration("r-2", "RaceExample", "req")
    try:
        assert client.wait_for_orchestration("r-2").output == "timed out"
    finally:
        release.set()


def test_durable_timers(runtime, client):
    runtime.register_activity("SendReminder", echo)

    @runtime.register_orchestration("DelayedNotification")
    def delayed_notification(ctx, input):
        yield ctx.schedule_timer(60 * 60 * 1000)  # wait 1 hour (survives restarts)
        yield ctx.schedule_activity("SendReminder", input)
        return "done"

    runtime.start()
    client.start_orchestration("t-1", "DelayedNotification", {"to": "bob"})
    # The hour-long timer is recorded and pending; nothing else happens before it fires.
    history = _wait_for_history(client, "t-1", lambda kinds: "TimerCreated" in kinds)
    created = next(e for e in history if e.kind == "TimerCreated")
    started = history[0].timestamp_ms
    assert json.loads(created.data)["fire_at_ms"] - started >= 60 * 60 * 1000 - 1000
    assert client.get_status("t-1").status == "Running"
    assert client.get_queue_depths().timer_queue >= 1


def test_short_durable_timer_fires(runtime, client):
    @runtime.register_orchestration("Sleep")
    def sleep(ctx, ms):
        t0 = yield ctx.utc_now()
        yield ctx.schedule_timer(ms)
        t1 = yield ctx.utc_now()
        return t1 - t0

    runtime.start()
    client.start_orchestration("t-2", "Sleep", 100)
    assert client.wait_for_orchestration("t-2").output >= 100


def _wait_for_history(client, instance_id, done, timeout=10.0):
    """Polls an instance's history until `done(kinds)` holds (history has no change notification)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            history = client.read_execution_history(instance_id, client.get_instance_info(instance_id).current_execution_id)
        except Exception:  # noqa: BLE001 - not created yet
            history = []
        if done([e.kind for e in history]):
            return history
        if time.monotonic() > deadline:
            raise AssertionError(f"history of {instance_id} never satisfied the condition: {[e.kind for e in history]}")
        time.sleep(0.01)


def test_external_events(runtime, client):
    executed = []
    runtime.register_activity("RequestApproval", echo)
    runtime.register_activity("Execute", lambda ctx, x: executed.append(x))

    @runtime.register_orchestration("ApprovalWorkflow")
    def approval_workflow(ctx, input):
        yield ctx.schedule_activity("RequestApproval", input)
        ctx.trace_info("waiting for approval...")

        approval = yield ctx.wait_for_event("approval")

        if approval["approved"]:
            yield ctx.schedule_activity("Execute", input)
            return "approved"
        else:
            return "rejected"

    runtime.start()
    client.start_orchestration("instance-1", "ApprovalWorkflow", {"order": 7})

    # Raise the event from outside:
    client.raise_event("instance-1", "approval", {"approved": True})

    assert client.wait_for_orchestration("instance-1").output == "approved"
    assert executed == [{"order": 7}]

    client.start_orchestration("instance-2", "ApprovalWorkflow", {"order": 8})
    client.raise_event("instance-2", "approval", {"approved": False})
    assert client.wait_for_orchestration("instance-2").output == "rejected"


def test_sub_orchestrations(runtime, client):
    runtime.register_activity("DoWork", lambda ctx, x: {"done": x})

    @runtime.register_orchestration("Parent")
    def parent(ctx, input):
        child_result = yield ctx.schedule_sub_orchestration("Child", input)
        return {"parent_result": child_result}

    @runtime.register_orchestration("Child")
    def child(ctx, input):
        r = yield ctx.schedule_activity("DoWork", input)
        return r

    @runtime.register_orchestration("ParentWithId")
    def parent_with_id(ctx, input):
        result = yield ctx.schedule_sub_orchestration_with_id(
            "Child", f"child-{input['id']}", input
        )
        return result

    runtime.start()
    client.start_orchestration("parent-1", "Parent", 5)
    assert client.wait_for_orchestration("parent-1").output == {"parent_result": {"done": 5}}

    client.start_orchestration("parent-2", "ParentWithId", {"id": 42})
    assert client.wait_for_orchestration("parent-2").output == {"done": {"id": 42}}
    assert client.get_status("child-42").status == "Completed"
    assert client.get_instance_info("child-42").parent_instance_id == "parent-2"


def test_fire_and_forget_orchestrations(runtime, client):
    runtime.register_activity("ProvisionVM", echo)

    @runtime.register_orchestration("InstanceMonitor")
    def instance_monitor(ctx, input):
        return {"monitoring": input["instance_id"]}

    @runtime.register_orchestration("CreateInstance")
    def create_instance(ctx, input):
        yield ctx.schedule_activity("ProvisionVM", input)

        # Launch monitor — runs independently
        yield ctx.start_orchestration(
            "InstanceMonitor",
            f"monitor-{input['instance_id']}",
            {"instance_id": input["instance_id"]},
        )

        return {"status": "provisioned"}

    runtime.start()
    client.start_orchestration("create-1", "CreateInstance", {"instance_id": "vm-9"})
    assert client.wait_for_orchestration("create-1").output == {"status": "provisioned"}
    assert client.wait_for_orchestration("monitor-vm-9").output == {"monitoring": "vm-9"}
    # Detached: no parent link.
    assert client.get_instance_info("monitor-vm-9").parent_instance_id is None


def test_continue_as_new_eternal_orchestration(runtime, client):
    checks = []

    @runtime.register_activity("CheckHealth")
    def check_health(ctx, target):
        checks.append(target)
        return {"status": "healthy"}

    @runtime.register_orchestration("Monitor")
    def monitor(ctx, input):
        state = input.get("state", {"check_count": 0})

        # Do periodic work
        health = yield ctx.schedule_activity("CheckHealth", input["target"])
        ctx.trace_info(f"health check #{state['check_count']}: {health['status']}")

        # Wait before next check
        yield ctx.schedule_timer(30000)  # 30 seconds

        # Restart with updated state (keeps history from growing unbounded)
        yield ctx.continue_as_new({
            "target": input["target"],
            "state": {"check_count": state["check_count"] + 1},
        })

    runtime.start()
    client.start_orchestration("mon-1", "Monitor", {"target": "db"})
    # The first check ran and the 30-second timer is pending; the next execution is exercised below
    # with a short timer (the same code shape), so the suite does not sleep for 30 s.
    _wait_for_history(client, "mon-1", lambda kinds: "TimerCreated" in kinds)
    assert checks == ["db"]
    client.cancel_instance("mon-1", "test over")
    assert client.wait_for_orchestration("mon-1").error.startswith("canceled: test over")


def test_continue_as_new_starts_next_execution(runtime, client):
    @runtime.register_activity("CheckHealth")
    def check_health(ctx, target):
        return {"status": "healthy"}

    @runtime.register_orchestration("Monitor")
    def monitor(ctx, input):
        state = input.get("state", {"check_count": 0})
        health = yield ctx.schedule_activity("CheckHealth", input["target"])
        ctx.trace_info(f"health check #{state['check_count']}: {health['status']}")
        if state["check_count"] == 3:
            return state
        yield ctx.schedule_timer(10)
        yield ctx.continue_as_new({
            "target": input["target"],
            "state": {"check_count": state["check_count"] + 1},
        })

    runtime.start()
    client.start_orchestration("mon-2", "Monitor", {"target": "db"})
    assert client.wait_for_orchestration("mon-2").output == {"check_count": 3}
    assert client.list_executions("mon-2") == [1, 2, 3, 4]


def test_error_handling(runtime, client):
    cleanups = []

    @runtime.register_activity("RiskyCall")
    def risky(ctx, x):
        raise ValueError("upstream said no")

    runtime.register_activity("Cleanup", lambda ctx, x: cleanups.append(x))

    @runtime.register_orchestration("SafeWorkflow")
    def safe_workflow(ctx, input):
        try:
            result = yield ctx.schedule_activity("RiskyCall", input)
            return result
        except Exception as e:
            ctx.trace_error(f"activity failed: {e}")
            yield ctx.schedule_activity("Cleanup", {"error": str(e)})
            return {"status": "failed", "error": str(e)}

    runtime.start()
    client.start_orchestration("safe-1", "SafeWorkflow", {})
    out = client.wait_for_orchestration("safe-1").output
    assert out == {"status": "failed", "error": "ValueError: upstream said no"}
    assert cleanups == [{"error": "ValueError: upstream said no"}]


def test_retry_policies(runtime, client):
    calls = []

    @runtime.register_activity("FlakeyApi")
    def flakey(ctx, x):
        calls.append(x)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return {"ok_after": len(calls)}

    @runtime.register_orchestration("Retrying")
    def retrying(ctx, input):
        result = yield ctx.schedule_activity_with_retry("FlakeyApi", input, {
            "max_attempts": 3,
            "backoff": "exponential",
            "timeout_ms": 5000,       # per-attempt timeout
            "total_timeout_ms": 30000, # total timeout across all attempts
        })
        return result

    runtime.start()
    client.start_orchestration("retry-1", "Retrying", "x")
    assert client.wait_for_orchestration("retry-1").output == {"ok_after": 3}
    assert calls == ["x", "x", "x"]


# ---- Sessions -------------------------------------------------------------------------------------


def test_session_workflow(runtime, client):
    seen = []

    @runtime.register_activity("ProcessData")
    def process(ctx, x):
        seen.append((ctx.session_id, ctx.worker_id))
        return x

    @runtime.register_orchestration("SessionWorkflow")
    def session_workflow(ctx, input):
        # Explicit method
        r1 = yield ctx.schedule_activity_on_session("ProcessData", input, "my-session-1")

        # Keyword argument (equivalent)
        r2 = yield ctx.schedule_activity("ProcessData", input, session_id="my-session-1")

        return [r1, r2]

    runtime.start()
    client.start_orchestration("s-1", "SessionWorkflow", "data")
    assert client.wait_for_orchestration("s-1").output == ["data", "data"]
    assert [s for s, _ in seen] == ["my-session-1", "my-session-1"]
    assert seen[0][1] == seen[1][1]


def test_reading_session_id_in_an_activity(runtime, client, capsys):
    @runtime.register_activity("MyActivity")
    def my_activity(ctx, input):
        if ctx.session_id:
            print(f"Running in session: {ctx.session_id}")
        else:
            print("No session (regular activity)")
        return input

    @runtime.register_orchestration("Both")
    def both(ctx, input):
        a = yield ctx.schedule_activity("MyActivity", 1)
        b = yield ctx.schedule_activity("MyActivity", 2, session_id="sess-7")
        return [a, b]

    runtime.start()
    client.start_orchestration("s-2", "Both", None)
    assert client.wait_for_orchestration("s-2").output == [1, 2]
    out = capsys.readouterr().out
    assert "No session (regular activity)\n" in out
    assert "Running in session: sess-7\n" in out


def test_session_runtime_options(provider, runtimes):
    runtime = Runtime(provider, RuntimeOptions(
        max_sessions_per_runtime=10,       # Max concurrent sessions (default: 10)
        session_idle_timeout_ms=300000,    # Idle timeout before releasing slot (default: 5 min)
        worker_node_id="pod-abc-123",      # Stable worker identity (e.g., K8s pod name)
    ))
    runtimes.append(runtime)
    client = Client(provider)

    @runtime.register_activity("WhoAmI")
    def who(ctx, x):
        return ctx.worker_id

    @runtime.register_orchestration("Who")
    def who_orch(ctx, x):
        r = yield ctx.schedule_activity_on_session("WhoAmI", x, "s")
        return r

    runtime.start()
    client.start_orchestration("who-1", "Who", None)
    assert client.wait_for_orchestration("who-1").output == "pod-abc-123"


def test_sessions_complete_example(make_provider, runtimes, capsys):
    from duroxide import SqliteProvider, Client, Runtime, RuntimeOptions  # noqa: F811 - as in the guide

    provider = make_provider()
    client = Client(provider)
    runtime = Runtime(provider, RuntimeOptions(
        max_sessions_per_runtime=5,
        session_idle_timeout_ms=60000,
        worker_node_id="worker-1",
    ))
    runtimes.append(runtime)

    # Stateful activity — shares in-memory state within a session
    session_state = {}

    @runtime.register_activity("Accumulate")
    def accumulate(ctx, input):
        sid = ctx.session_id
        if sid not in session_state:
            session_state[sid] = []
        session_state[sid].append(input)
        return session_state[sid]

    @runtime.register_orchestration("BatchProcess")
    def batch_process(ctx, input):
        for item in input["items"]:
            result = yield ctx.schedule_activity_on_session(
                "Accumulate", item, f"batch-{input['batch_id']}"
            )
        return result  # All items accumulated in order

    runtime.start()

    client.start_orchestration("batch-1", "BatchProcess", {
        "batch_id": "001",
        "items": ["a", "b", "c"],
    })
    result = client.wait_for_orchestration("batch-1")
    print(result.output)  # ["a", "b", "c"]

    runtime.shutdown()
    assert result.output == ["a", "b", "c"]
    assert capsys.readouterr().out == "['a', 'b', 'c']\n"


# ---- Custom Status ----------------------------------------------------------------------------------


def test_custom_status_progress_reporting(runtime, client, capsys):
    gate = threading.Event()
    runtime.register_activity("ValidateConfig", echo)

    @runtime.register_activity("CreateVM")
    def create_vm(ctx, config):
        gate.wait(10)
        return {"id": "vm-1"}

    runtime.register_activity("InstallSoftware", echo)

    @runtime.register_orchestration("ProvisionServer")
    def provision_server(ctx, input):
        ctx.set_custom_status("validating configuration")
        yield ctx.schedule_activity("ValidateConfig", input)

        ctx.set_custom_status("creating VM")
        vm = yield ctx.schedule_activity("CreateVM", input)

        ctx.set_custom_status("installing software")
        yield ctx.schedule_activity("InstallSoftware", vm)

        ctx.reset_custom_status()  # clear status when done
        return {"vm_id": vm["id"]}

    runtime.start()
    config = {"size": "small"}

    # Start orchestration
    client.start_orchestration("prov-1", "ProvisionServer", config)

    # Poll for status changes
    seen = []
    last_version = 0
    while True:
        result = client.wait_for_status_change("prov-1", last_version, 50, 10000)
        if result is None:
            break  # timeout — orchestration may have completed
        print(f"Status: {result.custom_status}")
        seen.append(result.custom_status)
        last_version = result.custom_status_version
        if result.custom_status == "creating VM":
            gate.set()
        if result.status != "Running":
            break

    assert "creating VM" in seen
    final = client.wait_for_orchestration("prov-1")
    assert final.output == {"vm_id": "vm-1"}
    assert final.custom_status is None
    assert "Status: creating VM" in capsys.readouterr().out


# ---- KV Store -----------------------------------------------------------------------------------------


def test_kv_store(runtime, client):
    @runtime.register_orchestration("RequestServer")
    def request_server(ctx, input):
        ctx.set_kv_value("status", "ready")
        request = yield ctx.wait_for_event("request")
        response = request["command"][::-1]
        ctx.set_kv_value(f"response:{request['op_id']}", response)
        return "done"

    runtime.start()
    client.start_orchestration("server-1", "RequestServer", None)

    status = client.wait_for_kv_value("server-1", "status", 10000)
    client.raise_event("server-1", "request", {"command": "olleh", "op_id": "op-1"})
    client.wait_for_orchestration("server-1")
    response = client.get_kv_value("server-1", "response:op-1")

    assert status == "ready"
    assert response == "hello"


def test_kv_context_methods(runtime, client):
    @runtime.register_orchestration("Reader")
    def reader(ctx, input):
        ctx.set_kv_value("shared", "42")
        yield ctx.wait_for_event("go")
        return "ok"

    @runtime.register_orchestration("KvAll")
    def kv_all(ctx, input):
        ctx.set_kv_value("a", "1")
        ctx.set_kv_value("b", "2")
        ctx.set_kv_value("c", "3")
        before = ctx.get_kv_value("a")
        values = ctx.get_kv_all_values()
        keys = ctx.get_kv_all_keys()
        length = ctx.get_kv_length()
        ctx.clear_kv_value("a")
        after_clear = ctx.get_kv_all_keys()
        now = yield ctx.utc_now()
        pruned = ctx.prune_kv_values_updated_before(now + 1)
        ctx.set_kv_value("d", "4")
        other = yield ctx.get_kv_value_from_instance("reader-1", "shared")
        missing = yield ctx.get_kv_value_from_instance("reader-1", "nope")
        ctx.clear_all_kv_values()
        return {
            "before": before, "values": values, "keys": keys, "length": length,
            "after_clear": after_clear, "pruned": pruned, "other": other, "missing": missing,
            "final": ctx.get_kv_length(),
        }

    runtime.start()
    client.start_orchestration("reader-1", "Reader", None)
    client.wait_for_kv_value("reader-1", "shared", 10000)
    client.start_orchestration("kv-1", "KvAll", None)
    out = client.wait_for_orchestration("kv-1").output
    assert out == {
        "before": "1", "values": {"a": "1", "b": "2", "c": "3"}, "keys": ["a", "b", "c"], "length": 3,
        "after_clear": ["b", "c"], "pruned": 2, "other": "42", "missing": None, "final": 0,
    }
    assert client.get_kv_value("kv-1", "b") is None
    client.raise_event("reader-1", "go", None)


# ---- Event Queues --------------------------------------------------------------------------------------


def test_event_queues(runtime, client):
    runtime.register_activity("ProcessRequest", lambda ctx, r: {"processed": r["data"]["id"]})

    @runtime.register_orchestration("RequestProcessor")
    def request_processor(ctx, input):
        # Block until a message arrives on the "requests" queue
        request_json = yield ctx.dequeue_event("requests")
        request = json.loads(request_json)

        result = yield ctx.schedule_activity("ProcessRequest", request)
        return result

    runtime.start()
    client.start_orchestration("proc-1", "RequestProcessor", None)

    client.enqueue_event("proc-1", "requests", json.dumps({
        "action": "process",
        "data": {"id": 42},
    }))

    assert client.wait_for_orchestration("proc-1").output == {"processed": 42}


def test_multiple_queues(runtime, client):
    @runtime.register_orchestration("MultiQueue")
    def multi_queue(ctx, input):
        # Each queue is independent — FIFO within each queue
        command = yield ctx.dequeue_event("commands")
        config = yield ctx.dequeue_event("config")
        return {"command": command, "config": config}

    runtime.start()
    client.start_orchestration("mq-1", "MultiQueue", None)
    client.enqueue_event("mq-1", "config", "cfg-1")
    client.enqueue_event("mq-1", "commands", "cmd-1")
    client.enqueue_event("mq-1", "commands", "cmd-2")
    assert client.wait_for_orchestration("mq-1").output == {"command": "cmd-1", "config": "cfg-1"}


def test_retry_on_session(runtime, client):
    attempts = []

    @runtime.register_activity("FlakeyGpuTask")
    def flakey_gpu(ctx, x):
        attempts.append(ctx.session_id)
        if len(attempts) < 2:
            raise RuntimeError("GPU busy")
        return f"rendered {x}"

    @runtime.register_orchestration("RetrySessionWorkflow")
    def retry_session_workflow(ctx, input):
        result = yield ctx.schedule_activity_with_retry_on_session(
            "FlakeyGpuTask",
            input,
            {"max_attempts": 3, "backoff_strategy": "none"},
            "gpu-session-1",
        )
        return result

    runtime.start()
    client.start_orchestration("rs-1", "RetrySessionWorkflow", "frame")
    assert client.wait_for_orchestration("rs-1").output == "rendered frame"
    assert attempts == ["gpu-session-1", "gpu-session-1"]


def test_copilot_chat_bot(runtime, client, capsys):
    import json

    @runtime.register_activity("Generate")
    def generate(ctx, text):
        # Call an LLM or generate a response
        return f"Echo: {text}"

    @runtime.register_orchestration("ChatBot")
    def chat_bot(ctx, input):
        # Wait for next message on the "inbox" queue
        msg_json = yield ctx.dequeue_event("inbox")
        msg = json.loads(msg_json)

        # Process the message
        response = yield ctx.schedule_activity("Generate", msg["text"])

        # Report the response via custom status
        ctx.set_custom_status(json.dumps({
            "state": "replied",
            "response": response,
            "seq": msg["seq"],
        }))

        # Exit on "bye", otherwise loop
        if "bye" in msg["text"].lower():
            return f"Done after {msg['seq']} msgs"

        # Restart with fresh history (messages survive continue-as-new)
        return (yield ctx.continue_as_new(""))

    runtime.start()

    # --- Client side ---

    # Start the chat bot
    client.start_orchestration("chat-1", "ChatBot", "")

    # Send a message
    client.enqueue_event("chat-1", "inbox", json.dumps({"seq": 1, "text": "Hello!"}))

    # Wait for the response
    status = client.wait_for_status_change("chat-1", 0, 50, 10000)
    reply = json.loads(status.custom_status)
    print(reply["response"])  # "Echo: Hello!"

    # End the conversation
    client.enqueue_event("chat-1", "inbox", json.dumps({"seq": 2, "text": "Bye!"}))

    assert capsys.readouterr().out == "Echo: Hello!\n"
    final = client.wait_for_orchestration("chat-1")
    assert final.output == "Done after 2 msgs"
    assert json.loads(final.custom_status)["response"] == "Echo: Bye!"
    assert len(client.list_executions("chat-1")) == 2


# ---- Activities ---------------------------------------------------------------------------------------


def test_basic_activity(runtime, client):
    @runtime.register_activity("SendEmail")
    def send_email(ctx, input):
        ctx.trace_info(f"sending to {input['to']}")
        # ... actual email sending ...
        return {"sent": True}

    @runtime.register_orchestration("Mail")
    def mail(ctx, input):
        r = yield ctx.schedule_activity("SendEmail", input)
        return r

    runtime.start()
    client.start_orchestration("mail-1", "Mail", {"to": "a@example.com"})
    assert client.wait_for_orchestration("mail-1").output == {"sent": True}


def test_activity_with_client_access(runtime, client):
    @runtime.register_activity("TriggerCleanup")
    def trigger_cleanup(ctx, input):
        client = ctx.get_client()
        client.start_orchestration(
            f"cleanup-{input['id']}",
            "CleanupWorkflow",
            {"resource_id": input["id"]},
        )
        return {"triggered": True}

    @runtime.register_orchestration("CleanupWorkflow")
    def cleanup_workflow(ctx, input):
        return {"cleaned": input["resource_id"]}

    @runtime.register_orchestration("Trigger")
    def trigger(ctx, input):
        r = yield ctx.schedule_activity("TriggerCleanup", input)
        return r

    runtime.start()
    client.start_orchestration("trig-1", "Trigger", {"id": "r1"})
    assert client.wait_for_orchestration("trig-1").output == {"triggered": True}
    assert client.wait_for_orchestration("cleanup-r1").output == {"cleaned": "r1"}


def test_returning_errors(runtime, client):
    @runtime.register_activity("ValidateInput")
    def validate_input(ctx, input):
        if not input.get("email"):
            raise Exception("email is required")
        return {"valid": True}

    @runtime.register_orchestration("Validate")
    def validate(ctx, input):
        r = yield ctx.schedule_activity("ValidateInput", input)
        return r

    runtime.start()
    client.start_orchestration("v-1", "Validate", {"email": "x@y"})
    client.start_orchestration("v-2", "Validate", {})
    assert client.wait_for_orchestration("v-1").output == {"valid": True}
    failed = client.wait_for_orchestration("v-2")
    assert failed.status == "Failed"
    assert failed.error == "Exception: email is required"


def test_cooperative_cancellation(runtime, client):
    outcome = []

    @runtime.register_activity("LongRunning")
    def long_running(ctx, input):
        for i in range(100):
            if ctx.is_cancelled():
                ctx.trace_info("cancelled, cleaning up")
                return "cancelled"
            time.sleep(0.1)  # do work
        return "done"

    runtime.register_activity("LongRunningObserved", lambda ctx, x: outcome.append(long_running(ctx, x)))

    @runtime.register_orchestration("Racer")
    def racer(ctx, input):
        winner = yield ctx.race(ctx.schedule_activity("LongRunningObserved", input), ctx.schedule_timer(100))
        return winner["index"]

    runtime.start()
    started = time.monotonic()
    client.start_orchestration("lr-1", "Racer", None)
    assert client.wait_for_orchestration("lr-1").output == 1
    deadline = time.monotonic() + 5
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.02)
    assert outcome == ["cancelled"]
    # Seen well within the activity's 10 s of work (the design target is one second).
    assert time.monotonic() - started < 3


# ---- Tracing ------------------------------------------------------------------------------------------


def test_orchestration_tracing(runtime, client):
    runtime.register_activity("Work", lambda ctx, x: x * 2)

    @runtime.register_orchestration("Traced")
    def traced(ctx, input):
        ctx.trace_info("[v1.0.0] starting workflow")
        ctx.trace_debug(f"input: {input}")

        result = yield ctx.schedule_activity("Work", input)

        ctx.trace_info(f"[v1.0.0] completed: {result}")
        return result

    runtime.start()
    client.start_orchestration("tr-1", "Traced", 21)
    assert client.wait_for_orchestration("tr-1").output == 42


def test_activity_tracing(runtime, client):
    # The guide's example calls `requests`; this stand-in answers like a JSON API would.
    requests = types.SimpleNamespace(
        get=lambda url: types.SimpleNamespace(json=lambda: [{"url": url, "n": i} for i in range(3)])
    )

    @runtime.register_activity("FetchData")
    def fetch_data(ctx, input):
        ctx.trace_info(f"fetching data for {input['id']}")
        data = requests.get(input["url"]).json()
        ctx.trace_info(f"got {len(data)} records")
        return data

    @runtime.register_orchestration("Fetch")
    def fetch(ctx, input):
        r = yield ctx.schedule_activity("FetchData", input)
        return len(r)

    runtime.start()
    client.start_orchestration("fd-1", "Fetch", {"id": 1, "url": "http://127.0.0.1/records"})
    assert client.wait_for_orchestration("fd-1").output == 3


def test_controlling_log_level_with_rust_log(tmp_path):
    """`RUST_LOG=info` shows the orchestration and activity trace lines, once each (not on replay)."""
    script = tmp_path / "traced.py"
    script.write_text(textwrap.dedent("""
        from duroxide import SqliteProvider, Client, Runtime
        provider = SqliteProvider.in_memory()
        client = Client(provider)
        runtime = Runtime(provider)

        @runtime.register_activity("Work")
        def work(ctx, x):
            ctx.trace_info("activity line")
            return x

        @runtime.register_orchestration("Traced")
        def traced(ctx, input):
            ctx.trace_info("[v1.0.0] starting workflow")
            result = yield ctx.schedule_activity("Work", input)
            ctx.trace_info(f"[v1.0.0] completed: {result}")
            return result

        runtime.start()
        client.start_orchestration("t", "Traced", 1)
        client.wait_for_orchestration("t")
        runtime.shutdown()
    """))
    env = dict(__import__("os").environ, RUST_LOG="duroxide::orchestration=info,duroxide::activity=info")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    logs = out.stdout + out.stderr
    assert logs.count("[v1.0.0] starting workflow") == 1
    assert logs.count("[v1.0.0] completed: 1") == 1
    assert "activity line" in logs


# ---- Providers ---------------------------------------------------------------------------------------


def test_sqlite_providers(tmp_path, runtimes):
    # File-backed (persistent)
    provider = SqliteProvider.open(str(tmp_path / "nested" / "myapp.db"))
    assert (tmp_path / "nested" / "myapp.db").exists()

    # In-memory (ephemeral, great for tests)
    memory = SqliteProvider.in_memory()

    for p in (provider, memory):
        rt = Runtime(p)
        runtimes.append(rt)
        rt.register_orchestration("Id", lambda ctx, x: x)
        rt.start()
        Client(p).start_orchestration("i", "Id", 3)
        assert Client(p).wait_for_orchestration("i").output == 3


def test_sqlite_file_survives_restart(tmp_path):
    path = tmp_path / "restart.db"
    p1 = SqliteProvider.open(path)
    rt = Runtime(p1)
    rt.register_orchestration("Wait", _wait_orch)
    rt.start()
    Client(p1).start_orchestration("w", "Wait", None)
    Client(p1).wait_for_status_change("w", 0, 10, 10000)
    rt.shutdown()
    del rt, p1

    p2 = SqliteProvider.open(path)
    rt2 = Runtime(p2)
    rt2.register_orchestration("Wait", _wait_orch)
    rt2.start()
    try:
        Client(p2).raise_event("w", "go", "later")
        assert Client(p2).wait_for_orchestration("w").output == "later"
    finally:
        rt2.shutdown()


def _wait_orch(ctx, _):
    ctx.set_custom_status("waiting")
    v = yield ctx.wait_for_event("go")
    return v


def test_postgres_provider_connect(runtimes):
    from conftest import PG_URL, _pg_available, _pg_schemas

    ok, why = _pg_available()
    assert ok, f"{why}. Set DUROXIDE_PG_URL to a reachable PostgreSQL server or start one."
    import uuid

    provider = PostgresProvider.connect(PG_URL)
    assert provider is not None
    # With schema isolation
    schema = f"duroxide_app_{uuid.uuid4().hex[:8]}"
    _pg_schemas.append(schema)
    provider = PostgresProvider.connect_with_schema(
        PG_URL,
        schema,
    )
    rt = Runtime(provider)
    runtimes.append(rt)
    rt.register_orchestration("Id", lambda ctx, x: x)
    rt.start()
    Client(provider).start_orchestration("pg-1", "Id", "pg")
    assert Client(provider).wait_for_orchestration("pg-1").output == "pg"


# ---- Runtime Options, Metrics, Client Operations --------------------------------------------------------


def test_runtime_options(provider, runtimes):
    from duroxide import Runtime, RuntimeOptions

    runtime = Runtime(provider, RuntimeOptions(
        orchestration_concurrency=4,     # Max concurrent orchestration dispatches
        worker_concurrency=8,            # Max concurrent activity workers
        dispatcher_poll_interval_ms=100, # Polling interval in ms
        log_level="info",                # Tracing log level
        log_format="pretty",             # "pretty" or "json"
        service_name="my-service",       # Service name for tracing metadata
        service_version="1.0.0",         # Service version for tracing metadata
        max_sessions_per_runtime=10,     # Max concurrent session slots
        session_idle_timeout_ms=300000,  # Session idle timeout (5 min default)
        worker_node_id="pod-name",       # Stable worker identity for sessions
    ))
    runtimes.append(runtime)
    assert runtime.options.worker_concurrency == 8
    runtime.register_orchestration("Id", lambda ctx, x: x)
    runtime.start()
    Client(provider).start_orchestration("o-1", "Id", 1)
    assert Client(provider).wait_for_orchestration("o-1").output == 1


def test_metrics(runtime, client, capsys):
    runtime.register_activity("Work", echo)

    @runtime.register_orchestration("M")
    def m(ctx, x):
        r = yield ctx.schedule_activity("Work", x)
        return r

    runtime.start()
    client.start_orchestration("met-1", "M", 1)
    client.wait_for_orchestration("met-1")
    # Counters are updated just after the turn commits, which is when waiters may already see it.
    deadline = time.monotonic() + 10
    while runtime.metrics_snapshot().orch_completions < 1 and time.monotonic() < deadline:
        time.sleep(0.005)

    snapshot = runtime.metrics_snapshot()
    if snapshot:
        print(f"Orchestrations started: {snapshot['orch_starts']}")
        print(f"Orchestrations completed: {snapshot['orch_completions']}")
        print(f"Activity successes: {snapshot['activity_success']}")
        print(f"Provider errors: {snapshot['provider_errors']}")

    out = capsys.readouterr().out
    assert "Orchestrations started: 1\n" in out
    assert "Orchestrations completed: 1\n" in out
    assert "Activity successes: 1\n" in out


def test_client_operations(runtime, provider):
    @runtime.register_orchestration("WorkflowName")
    def v1(ctx, x):
        ctx.set_custom_status("started")
        ev = yield ctx.wait_for_event("event_name")
        q = yield ctx.dequeue_event("queue_name")
        return {"v": "1.0.0", "event": ev, "queue": q}

    @runtime.register_orchestration_versioned("WorkflowName", "1.0.2")
    def v2(ctx, x):
        return {"v": "1.0.2", "input": x}

    runtime.start()
    input_data = {"k": 1}
    event_data = {"e": 2}
    data_string = "payload"
    last_seen_version = 0
    poll_interval_ms, timeout_ms = 20, 10000

    client = Client(provider)

    # Start an orchestration
    client.start_orchestration("id", "WorkflowName", input_data)
    client.start_orchestration_versioned("id-v", "WorkflowName", input_data, "1.0.2")

    # Poll for custom status changes (the latest version, 1.0.2, runs "id": it completes at once)
    status = client.wait_for_status_change("id", last_seen_version, poll_interval_ms, timeout_ms)
    assert status.status == "Completed"

    # Wait for completion (with timeout in ms)
    result = client.wait_for_orchestration("id", 30000)
    # result.status: "Completed" | "Failed" | "Running" | "Terminated" | ...
    # result.custom_status: custom status string or None
    # result.custom_status_version: monotonically increasing version counter
    assert result.output == {"v": "1.0.2", "input": input_data}
    assert client.wait_for_orchestration("id-v", 30000).output == {"v": "1.0.2", "input": input_data}

    # An instance on version 1.0.0 to exercise events, queues and cancellation.
    client.start_orchestration_versioned("id1", "WorkflowName", input_data, "1.0.0")
    # Raise an event
    client.raise_event("id1", "event_name", event_data)
    # Enqueue event to a named queue (FIFO, survives continue-as-new)
    client.enqueue_event("id1", "queue_name", data_string)
    assert client.wait_for_orchestration("id1").output == {"v": "1.0.0", "event": event_data, "queue": data_string}

    client.start_orchestration_versioned("id2", "WorkflowName", input_data, "1.0.0")
    status = client.wait_for_status_change("id2", last_seen_version, poll_interval_ms, timeout_ms)
    assert status.custom_status == "started"
    # Cancel a running orchestration
    client.cancel_instance("id2", "reason")
    assert client.wait_for_orchestration("id2").error.startswith("canceled: reason")

    # Get status without waiting
    status = client.get_status("id")
    assert status.status == "Completed"

    # Admin operations
    client.delete_instance("id", force=False)
    metrics = client.get_system_metrics()
    depths = client.get_queue_depths()
    assert client.get_status("id").status == "NotFound"
    assert metrics.total_instances == 3
    assert depths.orchestrator_queue == 0


# ---- Versioning, Multi-step blocks, Determinism -------------------------------------------------------


def test_versioning(runtime, client):
    runtime.register_activity("Work", lambda ctx, x: f"work {x}")
    runtime.register_activity("Validate", echo)

    @runtime.register_orchestration("MyWorkflow")
    def my_workflow_v1(ctx, input):
        # v1.0.0 — original
        r = yield ctx.schedule_activity("Work", input)
        return r

    @runtime.register_orchestration_versioned("MyWorkflow", "1.0.1")
    def my_workflow_v2(ctx, input):
        # v1.0.1 — with validation
        yield ctx.schedule_activity("Validate", input)
        r = yield ctx.schedule_activity("Work", input)
        return r

    runtime.start()
    client.start_orchestration("ver-1", "MyWorkflow", "a")
    client.start_orchestration_versioned("ver-0", "MyWorkflow", "b", "1.0.0")
    assert client.wait_for_orchestration("ver-1").output == "work a"
    assert client.wait_for_orchestration("ver-0").output == "work b"
    assert client.get_instance_info("ver-1").orchestration_version == "1.0.1"
    assert client.get_instance_info("ver-0").orchestration_version == "1.0.0"
    kinds = [e.kind for e in client.read_execution_history("ver-1", 1)]
    assert kinds.count("ActivityScheduled") == 2


def test_multi_step_parallel_blocks(runtime, client):
    runtime.register_activity("Step", lambda ctx, x: f"step {x}")

    # Pattern: wrap multi-step logic as a sub-orchestration
    @runtime.register_orchestration("BlockA")
    def block_a(ctx, input):
        first = yield ctx.schedule_activity("Step", "A1")
        if "step" in first:
            second = yield ctx.schedule_activity("Step", "A2")
            return f"A:[{first},{second}]"
        return "A:fallback"

    @runtime.register_orchestration("BlockB")
    def block_b(ctx, input):
        yield ctx.schedule_timer(5)
        result = yield ctx.schedule_activity("Step", "B1")
        return f"B:[timer,{result}]"

    # Parent: join/race sub-orchestration descriptors
    @runtime.register_orchestration("Parent")
    def parent(ctx, input):
        # Join multiple multi-step blocks
        a, b = yield ctx.all([
            ctx.schedule_sub_orchestration("BlockA", ""),
            ctx.schedule_sub_orchestration("BlockB", ""),
        ])
        return f"{a},{b}"

    runtime.start()
    client.start_orchestration("blocks-1", "Parent", None)
    out = client.wait_for_orchestration("blocks-1").output
    assert out == "{'ok': 'A:[step A1,step A2]'},{'ok': 'B:[timer,step B1]'}"


def test_determinism_rules_utc_now_and_new_guid(runtime, client):
    @runtime.register_orchestration("Det")
    def det(ctx, input):
        now = yield ctx.utc_now()
        guid = yield ctx.new_guid()
        ctx.trace_info(f"at {now}: {guid}")
        yield ctx.wait_for_event("go")
        again = yield ctx.utc_now()
        return {"now": now, "guid": guid, "later": again}

    runtime.start()
    before = int(time.time() * 1000)
    client.start_orchestration("det-1", "Det", None)
    _wait_for_history(client, "det-1", lambda kinds: "ExternalSubscribed" in kinds)
    client.raise_event("det-1", "go", None)
    out = client.wait_for_orchestration("det-1").output
    assert before - 5 <= out["now"] <= out["later"] <= int(time.time() * 1000) + 5
    assert len(out["guid"]) == 36 and out["guid"][14] == "4"
    kinds = [e.kind for e in client.read_execution_history("det-1", 1)]
    assert kinds.count("UtcNowRecorded") == 2 and kinds.count("GuidRecorded") == 1
