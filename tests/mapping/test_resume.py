"""Kill -9 of a running `chatstep map`, then the same command: nothing lost, nothing paid twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from chatstep.mapping.files import default_journal_path

from .conftest import ServerFactory, chat_bodies, prompt_of

ROWS = 240
CONCURRENCY = 8
STEP_YAML = """\
model: gpt-4o-mini
prompt: "row {{ inputs.id }}: {{ inputs.text }}"
max_retries: 2
"""


def finished_rows(journal: Path) -> set[int]:
    """Indices the journal has as finished (read-only, as another process would)."""
    if not journal.exists():
        return set()
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        return {int(i) for (i,) in conn.execute("SELECT idx FROM rows")}
    except sqlite3.OperationalError:
        return set()  # not created yet
    finally:
        conn.close()


def test_kill_9_mid_run_then_the_same_command_resumes(serve: ServerFactory, tmp_path: Path) -> None:
    # Latency keeps the run going long enough to kill it in the middle.
    server = serve(latency=(0.08, 0.04), seed=5)
    step = tmp_path / "step.yaml"
    step.write_text(STEP_YAML)
    source = tmp_path / "rows.jsonl"
    source.write_text(
        "".join(json.dumps({"id": i, "text": f"text number {i}"}) + "\n" for i in range(ROWS))
    )
    output = tmp_path / "out.jsonl"
    journal = default_journal_path(output)
    command = [
        sys.executable, "-m", "chatstep", "map", str(step),
        "--rows", str(source), "--output", str(output),
        "--concurrency", str(CONCURRENCY), "--no-history",
    ]  # fmt: skip
    env = dict(os.environ)

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(finished_rows(journal)) < ROWS // 3:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run made no progress"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    done_before = finished_rows(journal)
    sent_before = len(server.requests)
    assert ROWS // 3 <= len(done_before) < ROWS, "killed too late to test a resume"
    assert not output.exists()  # the output appears only when a run finishes

    second = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 0, second.stderr

    out = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in out] == list(range(ROWS))  # every row exactly once, in order
    assert all(r["content"] == f"echo: row {r['id']}: text number {r['id']}" for r in out)
    assert all(r["error"] is None for r in out)

    bodies = chat_bodies(server)
    rows_of = [int(prompt_of(b).split(":")[0].split()[1]) for b in bodies]
    first_run, second_run = rows_of[:sent_before], rows_of[sent_before:]
    # No row the journal had finished was sent again...
    assert not set(second_run) & done_before
    # ...only rows in flight at the kill were (at most the concurrency, plus any whose
    # answer arrived after the last journal read and before the kill).
    resent = set(second_run) & set(first_run)
    assert len(resent) <= CONCURRENCY
    assert len(second_run) == len(set(second_run)) == ROWS - len(done_before)
    # Not a terminal: quiet progress lines, which say the run resumed.
    assert f"resuming: {len(done_before)} rows already finished" in second.stderr
    assert f"{ROWS} rows ({len(done_before)} from the journal), 0 failed" in second.stderr
