"""``-i`` means one thing: ``--rows FILE`` is the dataset of ``map`` and ``batch submit``, and
``-i NAME=VALUE`` gives every row a constant input; ``--set`` overrides a step field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.common import EXIT_CODES
from chatstep.testing import TestServer

from .conftest import ServerFactory, chat_bodies, prompt_of

STEP = 'model: gpt-4o-mini\nprompt: "{{ inputs.task }}: {{ inputs.text }}"\n'


def _write(tmp_path: Path) -> tuple[Path, Path]:
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two", "task": "Shout"}) + "\n"
    )
    return step, rows


def test_constant_inputs_go_under_every_row(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve()
    step, rows = _write(tmp_path)
    output = tmp_path / "out.jsonl"
    args = ["map", str(step), "--rows", str(rows), "-o", str(output), "-i", "task=Classify"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(prompt_of(b) for b in chat_bodies(server)) == ["Classify: one", "Shout: two"]
    out = [json.loads(line) for line in output.read_text().splitlines()]
    # The output keeps the input's columns: constants are not added to it.
    assert "task" not in out[0]
    assert out[0]["text"] == "one"
    assert out[1]["task"] == "Shout"


def test_changed_constant_inputs_are_refused_by_the_journal(
    serve: ServerFactory, tmp_path: Path
) -> None:
    serve()
    step, rows = _write(tmp_path)
    output = tmp_path / "out.jsonl"
    args = ["map", str(step), "-r", str(rows), "-o", str(output)]
    assert CliRunner().invoke(app, [*args, "-i", "task=Classify"]).exit_code == 0
    result = CliRunner().invoke(app, [*args, "-i", "task=Summarize"])
    assert result.exit_code == EXIT_CODES["config"], result.output
    assert "changed: inputs" in result.stderr


def test_map_set_overrides_a_field(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve()
    step, rows = _write(tmp_path)
    output = tmp_path / "out.jsonl"
    args = ["map", str(step), "-r", str(rows), "-o", str(output), "-i", "task=T"]
    result = CliRunner().invoke(app, [*args, "--set", "max_tokens=7", "--set", "model=gpt-4.1"])
    assert result.exit_code == 0, result.output
    bodies = chat_bodies(server)
    assert [(b["max_tokens"], b["model"]) for b in bodies] == [(7, "gpt-4.1")] * 2


@pytest.mark.parametrize("command", [["map"], ["batch", "submit"]])
def test_a_rows_file_given_to_dash_i_points_at_rows(
    serve: ServerFactory, tmp_path: Path, command: list[str]
) -> None:
    server = serve()
    step, rows = _write(tmp_path)
    args = [*command, str(step), "-i", str(rows), "-o", str(tmp_path / "out.jsonl")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == EXIT_CODES["config"], result.output
    assert f"-i {rows}: is a file, not NAME=VALUE" in result.stderr
    assert "--rows FILE" in result.stderr
    assert server.requests == []


@pytest.mark.parametrize("command", [["map"], ["batch", "submit"]])
def test_missing_rows_is_a_usage_error(
    serve: ServerFactory, tmp_path: Path, command: list[str]
) -> None:
    step, _ = _write(tmp_path)
    result = CliRunner().invoke(app, [*command, str(step), "-o", str(tmp_path / "o.jsonl")])
    assert result.exit_code == EXIT_CODES["usage"], result.output
    assert "missing --rows FILE" in result.stderr


def test_a_misspelt_select_is_refused_before_any_request(tmp_path: Path) -> None:
    with TestServer() as server:
        step = tmp_path / "s.yaml"
        step.write_text("model: gpt-4o-mini\nprompt: '{{ inputs.text }}'\n")
        rows = tmp_path / "in.jsonl"
        rows.write_text('{"text": "a"}\n')
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test-select-00000"}
        args = ["map", str(step), "--rows", str(rows), "-o", str(tmp_path / "o.jsonl")]
        out = CliRunner().invoke(app, [*args, "--select", "nosuch"], env=env)
        assert out.exit_code == 3, out.output
        assert "nosuch" in out.output
        assert "parsed" in out.output  # the fix lists what may be selected
        assert server.requests == []
