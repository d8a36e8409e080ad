"""The core never imports an orchestrator; an integration without its extra names the extra."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ORCHESTRATORS = ("airflow", "prefect", "flytekit", "ray")


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("airflow.operators", "airflow"),
        ("airflow.batch", "airflow"),
        ("prefect", "prefect"),
        ("ray", "ray"),
    ],
)
def test_integration_without_its_extra_names_the_extra(module: str, extra: str) -> None:
    if importlib.util.find_spec(extra) is not None:
        pytest.skip(f"{extra} is installed here")
    with pytest.raises(ImportError, match=rf'pip install "chatstep\[{extra}\]"'):
        importlib.import_module(f"chatstep.integrations.{module}")


def test_core_and_flows_import_no_orchestrator(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "id: f\ninputs: [{id: x, type: INT}]\n"
        "tasks:\n  - id: r\n    type: io.kestra.plugin.core.debug.Return\n"
        "    format: '{{ inputs.x + 1 }}'\n"
    )
    script = f"""
import json, sys
import chatstep, chatstep.flows.api, chatstep.cli.app, chatstep.core.runner, chatstep.integrations
run = chatstep.flows.api.run_flow({str(flow)!r}, {{"x": "41"}})
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({ORCHESTRATORS!r}))
print(json.dumps([run.outputs["r"]["value"], loaded]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    value, loaded = json.loads(done.stdout.splitlines()[-1])
    assert value == "42"
    assert loaded == []
