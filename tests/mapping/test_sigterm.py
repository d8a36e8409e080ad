"""SIGTERM, how orchestrators stop a task, is handled like Ctrl-C (issue 11, kind 8).

A real ``chatstep map`` gets SIGTERM once the test server has seen some of its requests: the
history is flushed, the journal is consistent, the summary is printed, the exit code is 143,
and the same command resumes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from chatstep.cli.common import EXIT_CODES
from chatstep.mapping.files import default_journal_path

from .conftest import ServerFactory, chat_bodies, prompt_of

ROWS = 200
CONCURRENCY = 4
STEP = 'model: gpt-4o-mini\nprompt: "row {{ inputs.id }}"\nmax_tokens: 5\n'


def count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def test_sigterm_mid_map_flushes_history_keeps_the_journal_and_exits_143(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve(latency=0.05)
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(ROWS)))
    output = tmp_path / "out.jsonl"
    command = [
        sys.executable, "-m", "chatstep", "map", str(step), "--rows", str(source),
        "--output", str(output), "--concurrency", str(CONCURRENCY), "--no-cache",
    ]  # fmt: skip
    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.monotonic() + 120
    while len(chat_bodies(server)) < 20:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the run sent nothing"
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)

    assert first.returncode == EXIT_CODES["terminated"] == 143, err
    assert "Traceback" not in err
    assert "terminated" in err
    assert "the same command resumes" in err
    journal = default_journal_path(output)
    finished = count(journal, "SELECT count(*) FROM rows")
    assert 0 < finished < ROWS
    assert f"chatstep map: {finished} rows, 0 failed" in err  # the summary
    # The history got every call that finished (its last batch was flushed, not lost).
    history = Path(os.environ["CHATSTEP_HOME"]) / "history.sqlite3"
    assert count(history, "SELECT count(*) FROM calls") >= finished
    assert not output.exists()
    sent_first = len(chat_bodies(server))

    second = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(ROWS))
    resent = [int(prompt_of(b).split()[1]) for b in chat_bodies(server)[sent_first:]]
    assert len(resent) == ROWS - finished  # no finished row was sent again


def test_sigterm_during_run_and_flow_run_exits_143(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(latency=30.0)  # the answer never comes before the signal
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "id: f\nnamespace: t\ntasks:\n  - id: ask\n    type: chatstep.chat\n"
        "    model: gpt-4o-mini\n    prompt: row 1\n"
    )
    for number, args in enumerate([["run", str(step), "-i", "id=1"], ["flow", "run", str(flow)]]):
        process = subprocess.Popen(
            [sys.executable, "-m", "chatstep", *args], stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while len(chat_bodies(server)) <= number:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the request was not sent"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 143, err
        assert "Traceback" not in err
        assert "terminated" in err
