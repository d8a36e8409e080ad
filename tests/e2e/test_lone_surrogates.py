"""Text that cannot be sent (a lone surrogate) is refused naming where it came from, never a
traceback: in a dataset file (file and line), in an input value, in a Python row."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep import ConfigError, run_step
from chatstep.cli.app import app
from chatstep.mapping.run import map_step
from chatstep.testing import TestServer

STEP = {"model": "gpt-4o-mini", "prompt": "{{ inputs.text }}"}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> TestServer:
    with TestServer() as running:
        monkeypatch.setenv("OPENAI_BASE_URL", running.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-surrogate-000000")
        monkeypatch.setenv("CHATSTEP_HOME", str(tmp_path / "home"))
        yield running


def test_a_dataset_line_with_a_lone_surrogate_escape_is_named(
    server: TestServer, tmp_path: Path
) -> None:
    step = tmp_path / "s.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: '{{ inputs.text }}'\n")
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"text": "fine"}\n{"text": "bad \\ud800 here"}\n')
    out = CliRunner().invoke(
        app, ["map", str(step), "--rows", str(rows), "-o", str(tmp_path / "o.jsonl")]
    )
    assert out.exit_code == 3, out.output
    assert "line 2" in out.output
    assert "surrogate" in out.output
    assert "Traceback" not in out.output


def test_an_input_value_with_a_lone_surrogate_is_refused_before_sending(
    server: TestServer,
) -> None:
    with pytest.raises(ConfigError, match="surrogate"):
        run_step(STEP, {"text": "bad \udcff"})
    assert server.requests == []


def test_a_python_row_with_a_lone_surrogate_fails_alone(server: TestServer) -> None:
    out = map_step(STEP, [{"text": "ok"}, {"text": "bad \ud800"}], history=False)
    assert out[0]["error"] is None
    assert "surrogate" in out[1]["error"]
