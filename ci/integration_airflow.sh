#!/usr/bin/env bash
# Airflow integration: its own virtualenv (Airflow pins shared dependencies its own way), the
# project installed with the [airflow] extra, then tests/integrations/airflow (a real DAG run
# with a SQLite metadata database against chatstep's test server).
#   CHATSTEP_VENVS  where virtualenvs live (default: .venvs/); the venv is reused when present
#   PYTHON          the interpreter that creates the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
venvs="${CHATSTEP_VENVS:-.venvs}"
venv="$venvs/airflow"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -q -e ".[airflow,testing]" "pytest>=8"
if ! "$venv/bin/python" -c "import airflow.sdk" 2>/dev/null; then
    echo "error: Airflow is not installed in $venv: does pyproject.toml define the [airflow] extra?" >&2
    exit 1
fi
# Each test run gets its own AIRFLOW_HOME (the tests set it); nothing here touches ~/airflow.
"$venv/bin/python" -m pytest tests/integrations/airflow -q -p no:cacheprovider
