"""``chatstep batch`` through the CLI against the test server, and Ctrl-C during ``wait``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.batch import EXIT_INTERRUPTED, EXIT_ROWS_FAILED
from chatstep.testing import Delay, Fail, TestServer

runner = CliRunner()


def _fail_item_3(path: str, body: Any) -> Any:
    if "Item 3:" in json.dumps(body):
        return Fail(400, message="refused item 3")
    return None


def test_submit_wait_results(openai_env: TestServer, step_file: Path, tmp_path: Path) -> None:
    rows = tmp_path / "five.jsonl"
    rows.write_text("".join(f'{{"n": {n}, "text": "t{n}"}}\n' for n in range(5)))
    openai_env.handler = _fail_item_3

    submitted = runner.invoke(app, ["batch", "submit", str(step_file), "--rows", str(rows)])
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    assert job_id.startswith("csb_")

    waited = runner.invoke(app, ["batch", "wait", job_id, "--poll", "0.05", "--max-poll", "0.2"])
    assert waited.exit_code == 0, waited.output
    assert "completed" in waited.stdout
    assert "4/5 done, 1 failed" in waited.stdout

    out = tmp_path / "results.jsonl"
    results = runner.invoke(app, ["batch", "results", job_id, "--output", str(out)])
    assert results.exit_code == EXIT_ROWS_FAILED, results.output
    assert "5 rows: 4 succeeded, 1 failed" in results.stderr
    joined = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["input"]["n"] for row in joined] == [0, 1, 2, 3, 4]
    assert [row["ok"] for row in joined] == [True, True, True, False, True]
    assert "refused item 3" in joined[3]["error"]["message"]

    to_stdout = runner.invoke(app, ["batch", "results", job_id])
    assert [json.loads(line)["index"] for line in to_stdout.stdout.splitlines()] == [0, 1, 2, 3, 4]

    listed = runner.invoke(app, ["batch", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]

    status = runner.invoke(app, ["batch", "status", job_id, "--json"])
    assert json.loads(status.stdout)["status"] == "completed"


def test_submit_with_wait_writes_results(
    openai_env: TestServer, step_file: Path, rows_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    args = ["batch", "submit", str(step_file), "--rows", str(rows_file), "--max-requests", "50"]
    done = runner.invoke(app, [*args, "--wait", "--poll", "0.05", "--output", str(out)])
    assert done.exit_code == 0, done.output
    joined = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["index"] for row in joined] == list(range(120))
    assert len([r for r in openai_env.requests if r.path == "/v1/batches"]) == 3


def test_unknown_job_is_a_config_error(openai_env: TestServer) -> None:
    out = runner.invoke(app, ["batch", "status", "csb_nothing"])
    assert out.exit_code == 3
    assert "no batch job 'csb_nothing'" in out.stderr


def test_cancel_command(openai_env: TestServer, step_file: Path, rows_file: Path) -> None:
    openai_env.handler = lambda path, body: Delay(0.5) if path.endswith("/completions") else None
    job_id = runner.invoke(app, ["batch", "submit", str(step_file), "-r", str(rows_file)]).stdout
    out = runner.invoke(app, ["batch", "cancel", job_id.strip()])
    assert out.exit_code == 0, out.output
    assert "cancel" in out.stdout
    ended = runner.invoke(app, ["batch", "wait", job_id.strip(), "--poll", "0.05"])
    assert ended.exit_code == 10
    assert "cancelled" in ended.stderr


@pytest.mark.parametrize(
    ("stop", "code"), [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, 143)]
)
def test_ctrl_c_or_sigterm_during_wait_cancels_the_batch(
    openai_env: TestServer, step_file: Path, rows_file: Path, stop: signal.Signals, code: int
) -> None:
    openai_env.handler = lambda path, body: Delay(0.5) if path.endswith("/completions") else None
    job_id = runner.invoke(app, ["batch", "submit", str(step_file), "-r", str(rows_file)]).stdout
    command = ["batch", "wait", job_id.strip(), "--poll", "0.05", "--on-interrupt", "cancel"]
    wait = subprocess.Popen(
        [sys.executable, "-m", "chatstep", *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert wait.stderr is not None
    # The first progress line means the wait loop is running.
    first = wait.stderr.readline()
    assert job_id.strip() in first, first
    wait.send_signal(stop)
    _, err = wait.communicate(timeout=60)
    assert wait.returncode == code, err
    assert "cancelling" in err
    assert [r for r in openai_env.requests if r.path.endswith("/cancel")]


def _read_until(fd: int, marker: str, limit: float = 60.0) -> str:
    """Read a pty's output until ``marker`` shows (bounded, so a hang fails instead)."""
    import select
    import time

    seen = ""
    deadline = time.monotonic() + limit
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                seen += os.read(fd, 4096).decode(errors="replace")
            except OSError:  # the child closed the terminal
                break
    return seen


@pytest.mark.parametrize(("answer", "cancelled"), [("y", True), ("n", False)])
def test_ctrl_c_on_a_terminal_asks_before_cancelling(
    openai_env: TestServer, step_file: Path, rows_file: Path, answer: str, cancelled: bool
) -> None:
    import pty

    openai_env.handler = lambda path, body: Delay(0.5) if path.endswith("/completions") else None
    job_id = runner.invoke(app, ["batch", "submit", str(step_file), "-r", str(rows_file)]).stdout
    job_id = job_id.strip()
    master, slave = pty.openpty()
    wait = subprocess.Popen(
        [sys.executable, "-m", "chatstep", "batch", "wait", job_id, "--poll", "0.05"],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    os.close(slave)
    try:
        assert wait.stderr is not None
        first = wait.stderr.readline()
        assert job_id in first, first
        wait.send_signal(signal.SIGINT)
        prompt = _read_until(master, f"Cancel batch job {job_id}?")
        assert f"Cancel batch job {job_id}? [y/N]" in prompt
        os.write(master, f"{answer}\n".encode())
        _, err = wait.communicate(timeout=60)
    finally:
        wait.kill()
        os.close(master)
    assert wait.returncode == EXIT_INTERRUPTED, err
    cancels = [r for r in openai_env.requests if r.path.endswith("/cancel")]
    if cancelled:
        assert "cancelling" in err
        assert cancels
    else:
        assert f"batch job {job_id} keeps running" in err
        assert cancels == []


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_submit_reads_csv_and_parquet_rows_as_map_does(
    openai_env: TestServer, step_file: Path, tmp_path: Path, kind: str
) -> None:
    rows = tmp_path / f"rows.{kind}"
    if kind == "csv":
        rows.write_text('n,text\n0,first\n1,"with, a comma"\n2,third\n')
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        pa = pytest.importorskip("pyarrow")
        pq.write_table(
            pa.table({"n": [0, 1, 2], "text": ["first", "with, a comma", "third"]}), rows
        )
    out = tmp_path / "out.jsonl"
    args = ["batch", "submit", str(step_file), "--rows", str(rows), "--wait", "--poll", "0.05"]
    done = runner.invoke(app, [*args, "--output", str(out)])
    assert done.exit_code == 0, done.output
    joined = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["input"]["text"] for row in joined] == ["first", "with, a comma", "third"]
    assert all(row["ok"] for row in joined)


def test_submit_refuses_a_malformed_csv_naming_the_line(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text('n,text\n0,"ok"\n1,"open quote\n2,next\n')
    done = runner.invoke(app, ["batch", "submit", str(step_file), "--rows", str(rows)])
    assert done.exit_code == 3, done.output
    assert "rows.csv line 3" in done.stderr
    assert not [r for r in openai_env.requests if r.path == "/v1/batches"]
