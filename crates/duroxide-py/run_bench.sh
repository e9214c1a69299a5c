#!/usr/bin/env bash
# Builds the duroxide Python package into <repo>/.venv (see venv.sh) and runs the shared Python
# workloads (../shared/bench/py_workloads.py beside the repository, or PY_WORKLOADS) on each backend
# given (default: mem file pg) with N orchestrations (N, default 500), then bench/capacity.py (the same
# chain3 and timer workloads with their starts and the runtime's work taken apart). The pg backend
# uses DUROXIDE_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres) and drops its schemas
# after.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"

workloads="${PY_WORKLOADS:-$repo/../shared/bench/py_workloads.py}"
if [ ! -f "$workloads" ]; then
    echo "run_bench.sh: no workloads script at $workloads; set PY_WORKLOADS to py_workloads.py" >&2
    exit 2
fi
pg_url="${DUROXIDE_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
backends=("$@")
if [ ${#backends[@]} -eq 0 ]; then
    backends=(mem file pg)
fi
for backend in "${backends[@]}"; do
    echo "== python workloads: $backend" >&2
    if [ "$backend" = pg ]; then
        # Both scripts name their schemas bench_<run id>...; drop what this run created.
        before="$(psql "$pg_url" -Atc "SELECT string_agg(nspname, ' ') FROM pg_namespace WHERE nspname LIKE 'bench\_%'")"
        DATABASE_URL="$pg_url" "$py" "$workloads" pg "${N:-500}"
        DATABASE_URL="$pg_url" "$py" "$here/bench/capacity.py" pg "${N:-500}"
        for schema in $(psql "$pg_url" -Atc "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\_%'"); do
            case " $before " in
                *" $schema "*) ;;
                *) PGOPTIONS=--client-min-messages=warning psql "$pg_url" -qc "DROP SCHEMA \"$schema\" CASCADE" ;;
            esac
        done
        # The dropped schema's catalog rows would otherwise slow the next runs on a server without
        # autovacuum (see the script).
        DUROXIDE_PG_URL="$pg_url" bash "$repo/xtask/pg_vacuum_catalogs.sh" >&2
    else
        "$py" "$workloads" "$backend" "${N:-500}"
        "$py" "$here/bench/capacity.py" "$backend" "${N:-500}"
    fi
done
