"""A Python runtime process killed with SIGKILL mid-run, then restarted on the same file database,
finishes every orchestration exactly as it would have without the crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from duroxide import Client, SqliteProvider

# The worker process: registers the workload, starts a runtime, and runs until killed (or until every
# orchestration is done, when it prints DONE). Each activity appends a line to a side-effect log so
# the test can see which ran and how often.
WORKER = textwrap.dedent(
    """
    import os, sys, time
    from duroxide import Client, Runtime, RuntimeOptions, SqliteProvider

    db, log, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    provider = SqliteProvider.open(db)
    runtime = Runtime(provider, RuntimeOptions(worker_lock_timeout_ms=1000, orchestrator_lock_timeout_ms=1000))

    @runtime.register_activity("Step")
    def step(ctx, x):
        with open(log, "a") as f:
            f.write(f"{ctx.instance_id} {ctx.activity_id}\\n")
        time.sleep(0.05)  # long enough that a kill lands mid-activity
        return x + 1

    @runtime.register_orchestration("Chain")
    def chain(ctx, x):
        for _ in range(5):
            x = yield ctx.schedule_activity("Step", x)
        yield ctx.schedule_timer(10)
        return x

    runtime.start()
    client = Client(provider)
    for i in range(n):
        client.start_orchestration(f"chain-{i}", "Chain", i)  # idempotent across restarts
    print("STARTED", flush=True)
    for i in range(n):
        client.wait_for_orchestration(f"chain-{i}", 120000)
    print("DONE", flush=True)
    runtime.shutdown()
    """
)


def _spawn(script, db, log, n):
    return subprocess.Popen(
        [sys.executable, str(script), str(db), str(log), str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _completed(db, n) -> int:
    client = Client(SqliteProvider.open(str(db)))
    return sum(client.get_status(f"chain-{i}").status == "Completed" for i in range(n))


def test_killed_python_runtime_restarts_and_finishes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    db, log, n = tmp_path / "crash.db", tmp_path / "effects.log", 20

    kills = 0
    for kill_round, delay in enumerate((0.4, 0.5, 0.4)):
        proc = _spawn(script, db, log, n)
        assert proc.stdout.readline().strip() == "STARTED"
        # Kill once some, but not all, of the work has happened.
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            if kill_round == 0:
                # The first kill must land mid-run: some work done, not all of it.
                assert log.exists() and log.read_text(), "killed before any activity ran"
                assert _completed(db, n) < n, "everything finished before the kill"

    final = _spawn(script, db, log, n)
    out, _ = final.communicate(timeout=180)
    assert final.returncode == 0, out
    assert "DONE" in out
    assert kills >= 1, "the workload finished before any kill; the test proved nothing"

    client = Client(SqliteProvider.open(str(db)))
    for i in range(n):
        result = client.get_status(f"chain-{i}")
        assert result.status == "Completed", (i, result.status, result.error)
        assert result.output == i + 5
        # Exactly one completion per step in history, whatever ran twice.
        kinds = [e.kind for e in client.read_execution_history(f"chain-{i}", 1)]
        assert kinds.count("ActivityCompleted") == 5, kinds
        assert kinds.count("OrchestrationCompleted") == 1, kinds

    # Activities run at least once: every (instance, activity) pair appears in the side-effect log.
    effects = log.read_text().split("\n")
    ran = {tuple(line.split()) for line in effects if line}
    assert len({i for i, _ in ran}) == n
