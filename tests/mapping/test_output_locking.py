"""Two runs on one output: the second is refused before it touches anything (issue 11, kind 1).

Real ``chatstep map`` processes against the test server. Each run writes to a temporary file of
its own; a failure at commit time (the final rename) is a StorageError and the journal resumes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chatstep.errors import StorageError
from chatstep.mapping.files import default_journal_path, map_file
from chatstep.mapping.progress import MapStats
from chatstep.mapping.writers import open_writer, stale_partials

from .conftest import ServerFactory, chat_bodies

ROWS = 120
STEP = 'model: gpt-4o-mini\nprompt: "row {{ inputs.id }}"\nmax_tokens: 5\n'
EXIT_STORAGE = 12


def inputs(tmp_path: Path, rows: int = ROWS) -> tuple[Path, Path]:
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(rows)))
    return step, source


def map_command(step: Path, source: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "chatstep", "map", str(step), "--rows", str(source),
        "--output", str(output), "--concurrency", "2", "--no-history", "--no-cache", *extra,
    ]  # fmt: skip


def wait_for_requests(server: Any, count: int, process: subprocess.Popen[str]) -> None:
    """Until the server has seen ``count`` chat requests (the run is under way)."""
    deadline = time.monotonic() + 120
    while len(chat_bodies(server)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the first run sent nothing"
        time.sleep(0.02)


@pytest.mark.parametrize("separate_journals", [False, True])
def test_a_second_run_on_the_same_output_is_refused_and_touches_nothing(
    serve: ServerFactory, tmp_path: Path, separate_journals: bool
) -> None:
    server = serve(latency=0.1)  # ~6 s of run: the second run starts well inside it
    step, source = inputs(tmp_path)
    output = tmp_path / "out.jsonl"
    first_extra = ("--journal", str(tmp_path / "j1.sqlite3")) if separate_journals else ()
    second_extra = ("--journal", str(tmp_path / "j2.sqlite3")) if separate_journals else ()
    first = subprocess.Popen(
        map_command(step, source, output, *first_extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_requests(server, 4, first)
    partials = stale_partials(output)
    assert len(partials) == 1  # the first run's own temporary file
    size_before = partials[0].stat().st_size

    second = subprocess.run(
        map_command(step, source, output, *second_extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == EXIT_STORAGE, second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, second.stderr
    assert "out.jsonl: the output is in use" in errors[0]
    assert "Traceback" not in second.stderr
    assert first.poll() is None, "the first run ended before the second: nothing was tested"
    # The first run's temporary file is untouched (not truncated, not deleted).
    assert partials[0].exists()
    assert partials[0].stat().st_size >= size_before
    if separate_journals:
        assert not (tmp_path / "j2.sqlite3").exists()  # refused before opening its journal

    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(ROWS))  # every row once, in order
    assert len(chat_bodies(server)) == ROWS  # the second run sent nothing
    assert stale_partials(output) == []


def test_a_second_run_on_the_same_journal_is_refused(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(latency=0.1)
    step, source = inputs(tmp_path)
    journal = tmp_path / "shared.sqlite3"
    first = subprocess.Popen(
        map_command(step, source, tmp_path / "a.jsonl", "--journal", str(journal)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_requests(server, 2, first)
    second = subprocess.run(
        map_command(step, source, tmp_path / "b.jsonl", "--journal", str(journal)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == EXIT_STORAGE, second.stderr
    assert "the journal is in use by another running chatstep" in second.stderr
    assert stale_partials(tmp_path / "b.jsonl") == []  # refused before its output was opened
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err


class _BlockOutputAtFinish:
    """A progress display that, as the run finishes, puts a directory where the output goes."""

    def __init__(self, output: Path) -> None:
        self.output = output

    def start(self, stats: MapStats) -> None:
        pass

    def refresh(self, stats: MapStats) -> None:
        pass

    def finish(self, stats: MapStats) -> None:
        self.output.mkdir()
        (self.output / "keep").write_text("a directory cannot be replaced by a file")


def test_a_failed_commit_is_a_storage_error_and_the_journal_resumes(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve()
    step, source = inputs(tmp_path, rows=20)
    output = tmp_path / "out.jsonl"
    with pytest.raises(StorageError, match=r"out.jsonl: cannot move .*partial over it"):
        map_file(step, source, output, history=False, progress=_BlockOutputAtFinish(output))
    assert len(chat_bodies(server)) == 20
    assert stale_partials(output) == []  # its owner dropped it
    (output / "keep").unlink()
    output.rmdir()
    stats = map_file(step, source, output, history=False)
    assert stats.from_journal == 20
    assert len(chat_bodies(server)) == 20
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == list(range(20))
    assert default_journal_path(output).exists()


def test_writers_use_their_own_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    one, two = open_writer(target), open_writer(target)
    assert len(stale_partials(target)) == 2
    one.write({"a": 1})
    two.abort()  # dropping one writer's file leaves the other's alone
    one.commit()
    assert target.read_text() == '{"a": 1}\n'
    assert stale_partials(target) == []
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
