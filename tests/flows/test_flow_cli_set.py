"""``chatstep flow run --set TASK.field=value`` overrides one task's step."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.common import EXIT_CODES
from chatstep.testing import TestServer

runner = CliRunner()

FLOW = """
id: two
tasks:
  - id: first-call
    type: chatstep.chat
    model: gpt-4o-mini
    prompt: "one {{ inputs.x }}"
  - id: second
    type: chatstep.chat
    model: gpt-4o-mini
    prompt: "two"
  - id: out
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.second.choices[0].message.content }}"
inputs:
  - {id: x, type: STRING}
"""


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(FLOW)
    return path


def test_set_reaches_one_task(openai_env: TestServer, flow_file: Path) -> None:
    args = ["flow", "run", str(flow_file), "-i", "x=@-", "--set", "first-call.max_tokens=5"]
    out = runner.invoke(app, [*args, "--set", "second.model=gpt-4.1"], input="stdin")
    assert out.exit_code == 0, out.output
    first, second = (r.body for r in openai_env.requests)
    assert first["max_tokens"] == 5  # type: ignore[index]
    assert first["messages"][0]["content"] == "one stdin"  # type: ignore[index]
    assert second["model"] == "gpt-4.1"  # type: ignore[index]
    assert "max_tokens" not in second  # type: ignore[operator]


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("max_tokens=5", "--set max_tokens: names no task"),
        ("out.model=x", "--set out: is not a task of the flow with a step"),
        ("second.temperature=9", "--set second: temperature:"),
    ],
)
def test_bad_set_exits_3(openai_env: TestServer, flow_file: Path, pair: str, message: str) -> None:
    out = runner.invoke(app, ["flow", "run", str(flow_file), "-i", "x=1", "--set", pair])
    assert out.exit_code == EXIT_CODES["config"], out.output
    assert message in out.stderr
    assert openai_env.requests == []
