#!/usr/bin/env bash
# Vacuums the system catalogs of the PostgreSQL database the tests use (DUROXIDE_PG_URL, default
# postgres://postgres@127.0.0.1:5432/postgres). Every test schema that is created and dropped leaves
# dead rows in pg_class, pg_attribute, pg_depend, pg_proc and the like; a server running with
# autovacuum off (as the CI machines' is) never removes them, and they pile up run after run (one
# `cargo xtask test` left about 180,000, half of them in pg_attribute, where `pgbench -N` then ran
# 6 to 16% slower than after a vacuum). Takes about a second; without psql, or without the right
# to vacuum a catalog, it says so and succeeds.
set -euo pipefail

url="${DUROXIDE_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if ! command -v psql >/dev/null; then
    echo "pg_vacuum_catalogs.sh: psql not found; the catalogs were not vacuumed" >&2
    exit 0
fi
dead() {
    psql "$url" -qAtc "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_sys_tables WHERE schemaname = 'pg_catalog'"
}
before="$(dead)"
psql "$url" -qc "VACUUM pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_attrdef,
    pg_catalog.pg_depend, pg_catalog.pg_proc, pg_catalog.pg_type, pg_catalog.pg_constraint,
    pg_catalog.pg_index, pg_catalog.pg_namespace, pg_catalog.pg_statistic, pg_catalog.pg_description,
    pg_catalog.pg_trigger, pg_catalog.pg_sequence"
echo "pg_vacuum_catalogs.sh: dead catalog rows $before -> $(dead)"
