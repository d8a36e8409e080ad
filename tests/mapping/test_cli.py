"""``chatstep map`` on the command line: files, progress, budgets, exit codes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.map import EXIT_BUDGET, EXIT_ROWS_FAILED
from chatstep.testing import Fail

from .conftest import ServerFactory, chat_bodies, prompt_of

STEP = 'model: gpt-4o-mini\nprompt: "Classify: {{ inputs.text }}"\nmax_tokens: 10\n'


def write_inputs(tmp_path: Path, n: int) -> tuple[Path, Path]:
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    source = tmp_path / "reviews.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(n):
            writer.writerow([i, f"review {i}, with a comma"])
    return step, source


def test_map_csv_to_csv_with_quiet_progress(serve: ServerFactory, tmp_path: Path) -> None:
    serve()
    step, source = write_inputs(tmp_path, 30)
    output = tmp_path / "labels.csv"
    result = CliRunner().invoke(
        app,
        ["map", str(step), "-r", str(source), "-o", str(output), "-s", "content", "-s", "usage"],
    )
    assert result.exit_code == 0, result.output
    with output.open(newline="") as handle:
        back = list(csv.DictReader(handle))
    assert [r["id"] for r in back] == [str(i) for i in range(30)]
    assert list(back[0]) == [
        "id", "text", "content", "usage.prompt_tokens", "usage.completion_tokens",
        "usage.total_tokens", "error",
    ]  # fmt: skip
    assert back[3]["content"] == "echo: Classify: review 3, with a comma"
    # Not a terminal: quiet lines on stderr, ending with a summary.
    assert "chatstep map: 30 rows, 0 failed, 30 requests (0 rate-limited)" in result.stderr


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "chatstep", *args, "--no-history"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_max_cost_stops_and_says_so(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve()
    # A user price file: every token of gpt-4o-mini costs a tenth of a cent.
    home = Path(os.environ["CHATSTEP_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    prices = {"models": {"gpt-4o-mini": {"input": 1000.0, "output": 1000.0}}}
    (home / "prices.json").write_text(json.dumps(prices))
    step, source = write_inputs(tmp_path, 50)
    output = tmp_path / "out.jsonl"
    args = ["map", str(step), "--rows", str(source), "-o", str(output), "--max-cost", "0.2"]
    # A process of its own: the price table is read once per process.
    result = run_cli(args)
    assert result.returncode == EXIT_BUDGET, result.stderr
    assert "stopped early: --max-cost $0.2000 reached" in result.stderr
    out = [json.loads(line) for line in output.read_text().splitlines()]
    assert 0 < len(out) < 50
    assert sum(r["cost"] for r in out) <= 0.2
    sent = len(chat_bodies(server))
    # A higher budget continues where the first run stopped, paying only for new rows.
    result = run_cli([*args[:-1], "100"])
    assert result.returncode == 0, result.stderr
    assert len(chat_bodies(server)) - sent == 50 - len(out)
    assert len(output.read_text().splitlines()) == 50


def test_failed_rows_exit_with_their_own_code(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve()
    server.handler = lambda path, body: (
        Fail(400, "bad review") if prompt_of(body).endswith("review 2, with a comma") else None
    )
    step, source = write_inputs(tmp_path, 5)
    output = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["map", str(step), "--rows", str(source), "-o", str(output)])
    assert result.exit_code == EXIT_ROWS_FAILED, result.output
    assert "1 rows failed" in result.stderr
    assert "--retry-failed" in result.stderr
    out = [json.loads(line) for line in output.read_text().splitlines()]
    assert "bad review" in out[2]["error"]


def test_a_changed_step_is_a_configuration_error(serve: ServerFactory, tmp_path: Path) -> None:
    serve()
    step, source = write_inputs(tmp_path, 3)
    output = tmp_path / "out.jsonl"
    args = ["map", str(step), "--rows", str(source), "-o", str(output)]
    assert CliRunner().invoke(app, args).exit_code == 0
    step.write_text(STEP.replace("Classify", "Summarize"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3
    assert "different step definition (changed: prompt)" in result.stderr
    assert "--restart" in result.stderr
    assert CliRunner().invoke(app, [*args, "--restart"]).exit_code == 0
