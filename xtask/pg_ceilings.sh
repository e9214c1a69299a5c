#!/usr/bin/env bash
# What the PostgreSQL server at DUROXIDE_PG_URL allows at most, with no runtime and no client library
# in the way: the ceilings that the Python pg figures of py_workloads.py (500 orchestrations) cannot
# pass on this machine, whatever the engine does. On a scratch database, created for the run and
# dropped after, with the least schema an engine needs (pg_ceilings/schema.sql):
# - starts: single-client latency of a durable start (one statement, waits for its WAL flush).
#   py_workloads.py's timer figure starts 500 orchestrations one after another and then waits 50 ms
#   for their timers, so it is at most 500 / (500 * latency + 0.050 s), even if nothing else cost
#   anything;
# - timer: orchestrations that sleep on a timer per second, each as its three one-statement
#   transactions (pg_ceilings/timer.sql, the wait left out), 8 clients, the whole machine;
# - chain3: orchestrations of three chained activities per second, each as its eight one-statement
#   transactions (pg_ceilings/chain3.sql), 8 clients, the whole machine to the server and pgbench.
#   The engine needs its CPU on top of this (replay, the Python code, encoding).
# Prints one JSON line.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
source "$here/pg_scratch_db.sh"
scratch_database duroxide_ceilings
psql "$target" -q -v ON_ERROR_STOP=1 -f "$here/pg_ceilings/schema.sql"

field() { sed -nE "s/^$1 = ([0-9.]+).*/\1/p"; }
# Runs pgbench with the given arguments and prints the named figure of its report; a run that fails
# (a client aborted on an error) or gives no such figure fails the script with pgbench's own output.
measure() {
    local name="$1"; shift
    local report value status=0
    report="$(pgbench -n -M prepared "$@" "$target" 2>&1)" || status=$?
    value="$(printf '%s\n' "$report" | field "$name")"
    if [ "$status" -ne 0 ] || [ -z "$value" ]; then
        printf 'pg_ceilings.sh: pgbench %s gave no "%s":\n%s\n' "$*" "$name" "$report" >&2
        exit 1
    fi
    printf '%s' "$value"
}
start_ms="$(measure 'latency average' -c 1 -T 5 -f "$here/pg_ceilings/start.sql")"
timer_tps="$(measure tps -c 8 -j 2 -T 10 -f "$here/pg_ceilings/timer.sql")"
chain3_tps="$(measure tps -c 8 -j 2 -T 10 -f "$here/pg_ceilings/chain3.sql")"
timer_max="$(awk -v l="$start_ms" 'BEGIN { printf "%.0f", 500 / (500 * l / 1000 + 0.050) }')"
echo "{\"start_latency_ms\":${start_ms},\"timer_500_orch_per_s_at_most\":${timer_max},\"timer_orch_per_s_sql_alone\":${timer_tps},\"chain3_orch_per_s_sql_alone\":${chain3_tps}}"
