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
# - timer under load: the same bound with the turns' work counted. While the engine turns, the
#   server has less left for the client's starts, so they take longer: start.sql's latency is
#   measured again beside pg_ceilings/timer_turns.sql (the least the rest of an orchestration
#   needs, 4 clients) run at 1,000 and 2,000 orchestrations/s, and the turns' own capacity at
#   8 clients. For each turn
#   rate r (0: the turns wait until every start is in) the 500 starts take 500 * latency(r), the
#   turns done meanwhile are r times that, the rest run at full capacity after the last start, and
#   that start's timer takes 50 ms. The best of these schedules is printed;
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
# Runs start.sql alone on one client while timer_turns.sql runs at $1 orchestrations/s on 4 others;
# prints the starts' average latency and the turns' achieved rate.
start_beside_turns() {
    local rate="$1" turns="$(mktemp)" start_ms
    pgbench -n -M prepared -c 4 -j 1 -T 7 -R "$rate" -f "$here/pg_ceilings/timer_turns.sql" "$target" >"$turns" 2>&1 &
    local pid=$!
    sleep 1
    start_ms="$(measure 'latency average' -c 1 -T 5 -f "$here/pg_ceilings/start.sql")"
    wait "$pid" || { printf 'pg_ceilings.sh: timer_turns.sql at %s/s failed:\n' "$rate" >&2; cat "$turns" >&2; exit 1; }
    printf '%s %s' "$start_ms" "$(field tps <"$turns")"
    rm -f "$turns"
}
turns_tps="$(measure tps -c 8 -j 2 -T 5 -f "$here/pg_ceilings/timer_turns.sql")"
read -r start_1k rate_1k <<<"$(start_beside_turns 1000)"
read -r start_2k rate_2k <<<"$(start_beside_turns 2000)"
timer_loaded="$(awk -v cap="$turns_tps" -v l0="$start_ms" -v l1="$start_1k" -v r1="$rate_1k" \
    -v l2="$start_2k" -v r2="$rate_2k" '
    function per_s(l, r,   starts, done, rest) {
        starts = 500 * l / 1000; done = r * starts; if (done > 500) done = 500
        rest = (500 - done) / cap; if (rest < 0.050) rest = 0.050
        return 500 / (starts + rest)
    }
    BEGIN { best = per_s(l0, 0); if (per_s(l1, r1) > best) best = per_s(l1, r1)
            if (per_s(l2, r2) > best) best = per_s(l2, r2); printf "%.0f", best }')"
timer_max="$(awk -v l="$start_ms" 'BEGIN { printf "%.0f", 500 / (500 * l / 1000 + 0.050) }')"
echo "{\"start_latency_ms\":${start_ms},\"timer_500_orch_per_s_at_most\":${timer_max},\"timer_orch_per_s_sql_alone\":${timer_tps},\"start_latency_ms_beside_turns_1k_2k\":[${start_1k},${start_2k}],\"timer_turns_orch_per_s\":${turns_tps},\"timer_500_orch_per_s_at_most_under_load\":${timer_loaded},\"chain3_orch_per_s_sql_alone\":${chain3_tps}}"
