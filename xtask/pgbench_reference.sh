#!/usr/bin/env bash
# The physical reference for the PostgreSQL figures: `pgbench -N` TPS (8 clients, 2 threads, 10 s) on
# a scratch database of the server at DUROXIDE_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres),
# created for the run and dropped after. Prints one JSON line.
set -euo pipefail

source "$(dirname "$0")/pg_scratch_db.sh"
scratch_database duroxide_pgbench
pgbench -q -i "$target" >/dev/null 2>&1
tps="$(pgbench -N -c 8 -j 2 -T 10 "$target" 2>/dev/null | sed -nE 's/^tps = ([0-9.]+).*/\1/p')"
echo "{\"pgbench_N_tps\":${tps:-null},\"clients\":8,\"seconds\":10}"
