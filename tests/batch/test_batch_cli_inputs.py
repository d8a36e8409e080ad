"""``batch submit --rows FILE`` with constant ``-i`` inputs, ``--set`` and a CSV file."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.common import EXIT_CODES
from chatstep.testing import TestServer

runner = CliRunner()
CHAT = "/v1/chat/completions"


def test_csv_rows_constant_inputs_and_set(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("text\nfirst\nsecond\n")
    args = ["batch", "submit", str(step_file), "--rows", str(rows), "-i", "n:=7"]
    args += ["--set", "max_tokens=9", "--wait", "--poll", "0.05", "-o", str(tmp_path / "o.jsonl")]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    bodies = [r.body for r in openai_env.requests if r.path == CHAT]
    assert sorted(b["messages"][0]["content"] for b in bodies) == [  # type: ignore[index]
        "Item 7: first",
        "Item 7: second",
    ]
    assert {b["max_tokens"] for b in bodies} == {9}  # type: ignore[index]
    joined = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [row["input"] for row in joined] == [
        {"n": 7, "text": "first"},
        {"n": 7, "text": "second"},
    ]


def test_inputs_without_a_step_are_refused(openai_env: TestServer, tmp_path: Path) -> None:
    rows = tmp_path / "requests.jsonl"
    rows.write_text("{}\n")
    out = runner.invoke(app, ["batch", "submit", "--rows", str(rows), "-i", "n=1"])
    assert out.exit_code == EXIT_CODES["config"], out.output
    assert "needs a step" in out.stderr
    assert openai_env.requests == []
