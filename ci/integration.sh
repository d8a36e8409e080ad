#!/usr/bin/env bash
# One orchestrator integration in its own virtualenv, with the project installed from its own
# files plus that integration's extra, then its tests against chatstep's test server:
#   bash ci/integration.sh airflow   a real DAG run on a SQLite metadata database
#   bash ci/integration.sh flyte     real @workflows executed locally by flytekit
#   bash ci/integration.sh prefect   real flow runs under prefect_test_harness
#   bash ci/integration.sh ui        chatstep ui (Datasette) in Debian's Chromium via Playwright
#   bash ci/integration.sh ray       map --engine ray / map_dataset on a 3-node loopback cluster,
#                                    inside a network namespace with only loopback when allowed
# Each gets its own venv because each pins shared dependencies its own way.
#   CHATSTEP_VENVS  where virtualenvs live (default: .venvs/); a venv is reused when present
#   PYTHON          the interpreter that creates the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: ci/integration.sh airflow|flyte|prefect|ui|ray}"
tests="tests/integrations/$name"
more=()
case "$name" in
    airflow) extras="airflow,testing"; probe="import airflow.sdk" ;;
    flyte) extras="flyte,dev"; probe="import flytekit, chatstep.integrations.flyte" ;;
    prefect) extras="prefect,testing"; probe="import prefect" ;;
    ui)
        # Playwright drives the system Chromium (apt-get install chromium); its own browser
        # download is never used. CHATSTEP_UI_REQUIRED turns the tests' skips into failures.
        extras="ui,testing"; probe="import datasette, datasette_dashboards, playwright"
        tests="tests/ui"; more=("playwright>=1.40"); export CHATSTEP_UI_REQUIRED=1
        command -v chromium >/dev/null 2>&1 \
            || { echo "error: chromium is not installed (apt-get install -y chromium)" >&2; exit 1; }
        ;;
    ray)
        # Ray's wheels are large (~70 MB): the venv is reused between runs (pip's cache too).
        # Its nodes bind to 127.0.0.1 only (the tests set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0).
        extras="ray,testing"; probe="import ray.data, redis, chatstep.integrations.ray"
        more=("httpx>=0.27") ;;
    *) echo "error: unknown integration '$name' (airflow, flyte, prefect, ui or ray)" >&2; exit 2 ;;
esac
venv="${CHATSTEP_VENVS:-.venvs}/$name"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Bounded: a registry that stalls fails the step instead of hanging CI.
timeout 900 "$venv/bin/python" -m pip install -q -e ".[$extras]" "pytest>=8" "${more[@]}"
if ! "$venv/bin/python" -c "$probe" 2>/dev/null; then
    echo "error: '$probe' fails in $venv: does pyproject.toml define the [$name] extra?" >&2
    exit 1
fi
# Airflow tests set their own AIRFLOW_HOME; Prefect's harness and Flyte's local sandboxes go to
# a scratch directory removed afterwards, so nothing touches the home directory.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
run=("$venv/bin/python" -m pytest "$tests" -q -p no:cacheprovider)
if [ "$name" = ray ]; then
    # Counts are asserted, not times; the bound only stops a hung cluster (~4 min on 2 idle cores).
    run=(timeout 720 "${run[@]}")
    if unshare -n true 2>/dev/null; then
        # Only loopback exists in here: nothing Ray starts can listen on another interface.
        PREFECT_HOME="$scratch/prefect" TMPDIR="$scratch" \
            unshare -n sh -c 'ip link set lo up && exec "$@"' sh "${run[@]}"
        exit
    fi
    echo "warning: unshare -n is not permitted here; the Ray tests run in the host's network" \
        "namespace (every node still binds to 127.0.0.1)" >&2
fi
PREFECT_HOME="${PREFECT_HOME:-$scratch/prefect}" TMPDIR="$scratch" "${run[@]}"
