"""The runtime's capacity with no client in its way: what py_workloads.py's chain3 and timer figures
would be if its 500 sequential starts cost nothing.

Usage: python capacity.py BACKEND [N]    BACKEND: mem | file | pg (pg reads DATABASE_URL)
Prints one JSON line.

Why: py_workloads.py starts its N orchestrations one after another from the process that also runs
the runtime, and times from the first start to the last completion, so its throughput mixes two
costs. Here they are taken apart, per workload, on a store of its own:
- `*_starts_ms_per_start`: the N starts with no runtime running (no other load at all);
- `*_drain_orch_per_s`: N orchestrations already started and waiting, from `Runtime.start()` to the
  last completion (the timer's 50 ms included), with py_workloads.py's runtime options.
A drain figure below a target says the engine itself is short of it on this machine; a drain figure
above it, with the workload's own figure below, says the overlap with the starts is what costs.

Where the drain's CPU goes, per orchestration: `*_drain_py_cpu_ms` is this process's (the runtime, its
Python code and the provider's client side), `*_drain_pg_cpu_ms` the PostgreSQL server's, summed over
its processes on this host (pg only, and only when the server runs here: its processes are read from
/proc). On a machine with C cores, C * 1000 / (py + pg) bounds the drain rate from above.
"""
import json
import os
import sys
import tempfile
import time

from duroxide import Client, Runtime, RuntimeOptions, SqliteProvider

backend = sys.argv[1] if len(sys.argv) > 1 else "mem"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 500
RUN = f"cap{int(time.time() * 1000):x}"


def make_provider(workload):
    if backend == "mem":
        return SqliteProvider.in_memory()
    if backend == "file":
        return SqliteProvider.open(os.path.join(tempfile.mkdtemp(), "capacity.db"))
    from duroxide import PostgresProvider

    # `bench_` like py_workloads.py's schemas, so run_bench.sh drops them afterwards.
    return PostgresProvider.connect_with_schema(os.environ["DATABASE_URL"], f"bench_{RUN}_{workload}")


def postgres_cpu_s():
    """CPU seconds of the PostgreSQL server processes on this host, or None when none are visible."""
    total, found = 0, False
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith(("postgres", "postmaster")):
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            found = True
    return total / os.sysconf("SC_CLK_TCK") if found else None


def own_cpu_s():
    t = os.times()
    return t.user + t.system


def make_runtime(provider):
    runtime = Runtime(
        provider, RuntimeOptions(orchestration_concurrency=4, worker_concurrency=8, dispatcher_poll_interval_ms=10)
    )

    @runtime.register_activity("Echo")
    def echo(ctx, x):
        return x

    @runtime.register_orchestration("Chain3")
    def chain3(ctx, x):
        a = yield ctx.schedule_activity("Echo", x)
        b = yield ctx.schedule_activity("Echo", a)
        c = yield ctx.schedule_activity("Echo", b)
        return c

    @runtime.register_orchestration("Sleep")
    def sleep(ctx, ms):
        yield ctx.schedule_timer(ms)
        return "ok"

    return runtime


def measure(workload, name, arg):
    provider = make_provider(workload)
    client = Client(provider)
    ids = [f"{RUN}-{workload}-{i}" for i in range(N)]
    t = time.perf_counter()
    for iid in ids:
        client.start_orchestration(iid, name, arg)
    starts = time.perf_counter() - t

    runtime = make_runtime(provider)
    pg_before = postgres_cpu_s() if backend == "pg" else None
    own_before = own_cpu_s()
    t = time.perf_counter()
    runtime.start()
    for iid in ids:
        r = client.wait_for_orchestration(iid, 300000)
        assert r.status == "Completed", (iid, r.status, r.error)
    drain = time.perf_counter() - t
    own = own_cpu_s() - own_before
    pg_after = postgres_cpu_s() if pg_before is not None else None
    runtime.shutdown()
    out = {
        f"{workload}_starts_ms_per_start": round(starts * 1000 / N, 3),
        f"{workload}_drain_orch_per_s": round(N / drain, 1),
        f"{workload}_drain_py_cpu_ms": round(own * 1000 / N, 3),
    }
    if pg_after is not None:
        out[f"{workload}_drain_pg_cpu_ms"] = round((pg_after - pg_before) * 1000 / N, 3)
    return out


out = {"backend": backend, "n": N}
out.update(measure("chain3", "Chain3", 1))
out.update(measure("timer", "Sleep", 50))
print(json.dumps(out), flush=True)
