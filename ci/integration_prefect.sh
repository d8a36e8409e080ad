#!/usr/bin/env bash
# Prefect integration: its own virtualenv, the project installed with the [prefect] extra, then
# tests/integrations/prefect (real flow runs under prefect_test_harness against the test server).
#   CHATSTEP_VENVS  where virtualenvs live (default: .venvs/); the venv is reused when present
#   PYTHON          the interpreter that creates the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
venvs="${CHATSTEP_VENVS:-.venvs}"
venv="$venvs/prefect"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -q -e ".[prefect,testing]" "pytest>=8"
if ! "$venv/bin/python" -c "import prefect" 2>/dev/null; then
    echo "error: Prefect is not installed in $venv: does pyproject.toml define the [prefect] extra?" >&2
    exit 1
fi
# The harness runs a temporary Prefect server on a SQLite database; keep its home out of ~.
export PREFECT_HOME="${PREFECT_HOME:-$(mktemp -d)}"
"$venv/bin/python" -m pytest tests/integrations/prefect -q -p no:cacheprovider
