# Sourced by run_tests.sh and run_bench.sh: builds the duroxide package into <repo>/.venv.
#
# Idempotent: creates the virtualenv if it is missing, (re)installs maturin and pytest, rebuilds and
# reinstalls the package (release build, sharing the workspace's cargo target dir). PYTHON picks the
# interpreter for a new virtualenv (default python3, 3.9 or newer). Sets `here`, `repo` and `py`.

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
# The build backend runs the `maturin` executable from PATH.
export PATH="$venv/bin:$PATH"

"$py" -m pip install --quiet --disable-pip-version-check "maturin>=1.5,<2" "pytest>=7"
# The build backend (maturin) is already in the virtualenv, so build without an isolated environment.
"$py" -m pip install --quiet --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps "$here"
