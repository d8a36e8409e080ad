"""``chatstep history --cost``: spend from the history, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.common import EXIT_CODES
from chatstep.testing import TestServer

runner = CliRunner()


def _spend_some(tmp_path: Path) -> None:
    step = tmp_path / "s.yaml"
    step.write_text("id: greet\nmodel: gpt-4o-mini\nprompt: 'Hi {{ inputs.name }}'\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"name": "a"}\n{"name": "b"}\n')
    assert runner.invoke(app, ["run", str(step), "-i", "name=x"]).exit_code == 0
    args = ["map", str(step), "--rows", str(rows), "-o", str(tmp_path / "o.jsonl")]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, ["prompt", "hello", "-m", "no-such-price"]).exit_code == 0


def test_cost_json_by_step_and_run(openai_env: TestServer, tmp_path: Path) -> None:
    _spend_some(tmp_path)
    out = runner.invoke(app, ["history", "--cost", "--by", "step", "--by", "run", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["by"] == ["step", "run"]
    groups = {(g["step"], g["run"] is not None): g for g in report["groups"]}
    assert groups[("greet", True)]["calls"] == 2  # the map run
    assert groups[("greet", False)]["calls"] == 1  # chatstep run
    assert groups[(None, False)]["unpriced"] == 1  # the model without a price
    assert "model" not in report["groups"][0]
    assert report["total"]["calls"] == 4
    assert report["total"]["unpriced"] == 1
    priced = sum(g["cost_usd"] for g in report["groups"])
    assert report["total"]["cost_usd"] == priced > 0


def test_cost_table(openai_env: TestServer, tmp_path: Path) -> None:
    _spend_some(tmp_path)
    out = runner.invoke(app, ["history", "--cost", "--by", "model", "--since", "1d"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert any(line.split()[:2] == ["gpt-4o-mini", "3"] for line in lines)
    assert any(line.split()[:2] == ["total", "4"] for line in lines)
    assert "1 calls have no price" in out.stderr


def test_cost_bad_since(openai_env: TestServer) -> None:
    out = runner.invoke(app, ["history", "--cost", "--since", "soon"])
    assert out.exit_code == EXIT_CODES["config"]
    assert "--since" in out.stderr
