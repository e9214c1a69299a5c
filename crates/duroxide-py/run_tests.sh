#!/usr/bin/env bash
# Builds the duroxide Python package into <repo>/.venv (see venv.sh) and runs its pytest suite on
# crates/duroxide-py/tests. Extra arguments go to pytest. DUROXIDE_PG_URL points the PostgreSQL tests
# at a server (default postgres://postgres@127.0.0.1:5432/postgres; the PostgreSQL tests fail, saying
# so, when none answers).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"

cd "$repo"
exec "$py" -m pytest -p no:cacheprovider "$here/tests" "$@"
