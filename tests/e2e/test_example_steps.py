"""Every step file in examples/ runs through `chatstep run` against the test server.

Flows (files with ``tasks``) run in tests/flows/test_flow_cli.py, Flyte and Airflow examples in
their integration tests, README commands in tests/test_readme.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.steps.loading import load_step
from chatstep.templating.variables import collect_input_names
from chatstep.testing import TestServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STEP_FILES = sorted(
    path for path in EXAMPLES.glob("*.yaml") if "tasks" not in yaml.safe_load(path.read_text())
)


def test_every_step_example_is_listed() -> None:
    names = {p.name for p in STEP_FILES}
    assert {"summarize.yaml", "moderate.yaml", "embed.yaml", "review_triage.yaml"} <= names


@pytest.mark.parametrize("path", STEP_FILES, ids=lambda p: p.name)
def test_step_example_runs(path: Path, openai_env: TestServer) -> None:
    step = load_step(path)
    data = step.model_dump(exclude_unset=True, by_alias=False)
    inputs = [
        f"{name}=A sample {name} for the example." for name in sorted(collect_input_names(data))
    ]
    args = ["run", str(path), "--json"]
    for value in inputs:
        args += ["-i", value]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["response"]
    sent = [r for r in openai_env.requests if r.method == "POST"]
    assert len(sent) == 1
    assert not inputs or "A sample" in json.dumps(sent[0].body)  # the inputs reached the request
