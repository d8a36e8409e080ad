#!/usr/bin/env bash
# Flyte integration: flytekit brings many dependencies, so it gets its own virtualenv
# ($CHATSTEP_VENVS/flyte, reused when present), with the project installed from its own files
# (extras flyte and dev), then the Flyte tests: real @workflows executed locally by flytekit
# against the project's OpenAI-compatible test server.
set -euo pipefail
cd "$(dirname "$0")/.."
VENVS="${CHATSTEP_VENVS:-.venvs}"
VENV="$VENVS/flyte"
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
"$VENV/bin/python" -m pip install -q -e ".[flyte,dev]"
"$VENV/bin/python" -c "import flytekit, chatstep.integrations.flyte"

# Flyte's local execution leaves its sandboxes in the temp directory: use one removed after.
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
TMPDIR="$SCRATCH" "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/integrations/flyte
