# Sourced by the pgbench scripts: `scratch_database NAME` creates the database NAME_<pid> on the
# server at DUROXIDE_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres), drops it when the
# script exits, and sets `target` to its URL (same server and credentials, other database).
scratch_database() {
    local url="${DUROXIDE_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
    local db="$1_$$"
    psql "$url" -qc "CREATE DATABASE $db"
    # Expanded now: the trap runs after this function's locals are gone.
    trap "psql '$url' -qc 'DROP DATABASE IF EXISTS $db' >/dev/null 2>&1 || true" EXIT
    target="$(printf '%s' "$url" | sed -E "s#/[^/?]*(\?|$)#/$db\1#")"
}
