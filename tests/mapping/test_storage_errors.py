"""Unwritable and full disks: one error line naming the path, exit 12, nothing lost (kind 2).

Real ``chatstep map`` processes. A read-only directory is a read-only bind mount and a full disk
a small tmpfs, both in a private mount namespace (``unshare -m``: root, or a user namespace);
where that is not allowed, a non-root user gets a chmod-ed directory and the full-disk test
is skipped. (root ignores directory permissions, hence the mount.)
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatstep.cli.common import EXIT_CODES

from .conftest import ServerFactory, chat_bodies, prompt_of

STEP = 'model: gpt-4o-mini\nprompt: "row {{ inputs.id }}: {{ inputs.pad }}"\nmax_tokens: 5\n'
EXIT_STORAGE = EXIT_CODES["storage"]
CONCURRENCY = 4


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


CAN_MOUNT = _can_mount()


def inputs(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    step = tmp_path / "step.yaml"
    step.write_text(STEP)
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({"id": i, "pad": "p" * 200}) + "\n" for i in range(rows)))
    return step, source


def chatstep_map(step: Path, source: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "chatstep", "map", str(step), "--rows", str(source),
        "--output", str(output), "--no-cache", "--no-history",
        "--concurrency", str(CONCURRENCY), *extra,
    ]  # fmt: skip


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def run_read_only(directory: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    """``command`` with ``directory`` read-only for it."""
    if CAN_MOUNT:
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, str(directory), *command]
    elif os.geteuid() != 0:
        directory.chmod(0o555)
    else:
        pytest.skip("root ignores permissions, and mounts are not allowed here")
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("where", ["output", "journal", "output-subdir"])
def test_an_unwritable_directory_fails_before_the_first_request(
    serve: ServerFactory, tmp_path: Path, where: str
) -> None:
    server = serve()
    step, source = inputs(tmp_path, rows=5)
    locked = tmp_path / "locked"
    locked.mkdir()
    if where == "output":
        output, extra = locked / "out.jsonl", ()
    elif where == "output-subdir":
        output, extra = locked / "new" / "out.jsonl", ()
    else:
        output, extra = tmp_path / "out.jsonl", ("--journal", str(locked / "j.sqlite3"))
    result = run_read_only(locked, chatstep_map(step, source, output, *extra))
    assert result.returncode == EXIT_STORAGE, result.stderr
    assert "Traceback" not in result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert f"StorageError: {locked}" in errors[0]
    assert "writable" in errors[0]
    assert chat_bodies(server) == []  # checked before anything was paid for
    assert not output.exists()


def _journal_rows(journal: Path) -> set[int]:
    conn = sqlite3.connect(journal)
    try:
        return {int(i) for (i,) in conn.execute("SELECT idx FROM rows")}
    finally:
        conn.close()


@pytest.mark.skipif(not CAN_MOUNT, reason="needs a private mount namespace for a small tmpfs")
def test_a_disk_full_mid_run_stops_cleanly_and_the_same_command_resumes(
    serve: ServerFactory, tmp_path: Path
) -> None:
    rows = 300
    server = serve()
    step, source = inputs(tmp_path, rows=rows)
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    kept.mkdir()
    output = disk / "out.jsonl"
    command = " ".join(f"'{part}'" for part in chatstep_map(step, source, output))
    # One process keeps the namespace: run, save the journal, wait for the test, grow, run again.
    script = f"""
        mount -t tmpfs -o size=160k tmpfs '{disk}' || exit 99
        {command} 2> '{kept}/first.err'; echo $? > '{kept}/first.code'
        cp '{disk}'/out.jsonl.journal.sqlite3* '{kept}/'
        ls -a '{disk}' > '{kept}/first.ls'
        touch '{kept}/first.done'
        while [ ! -e '{kept}/go' ]; do sleep 0.02; done
        mount -o remount,size=16m '{disk}'
        {command} 2> '{kept}/second.err'; echo $? > '{kept}/second.code'
        cp '{output}' '{kept}/out.jsonl'
    """
    process = subprocess.Popen(["unshare", "-m", "sh", "-c", script])
    deadline = time.monotonic() + 120
    while not (kept / "first.done").exists():
        assert process.poll() is None, "the script ended early"
        assert time.monotonic() < deadline, "the first run did not end"
        time.sleep(0.02)

    first_err = (kept / "first.err").read_text()
    assert (kept / "first.code").read_text().strip() == str(EXIT_STORAGE), first_err
    assert "Traceback" not in first_err
    errors = error_lines(first_err)
    assert len(errors) == 1, first_err
    assert f"StorageError: {disk}/out.jsonl" in errors[0]
    assert "free some space" in errors[0]
    # The summary still came out, and no temporary file was left behind.
    assert "chatstep map:" in first_err
    assert not [n for n in (kept / "first.ls").read_text().split() if n.endswith(".partial")]
    done_first = _journal_rows(kept / "out.jsonl.journal.sqlite3")
    sent_first = [int(prompt_of(b).split(":")[0].split()[1]) for b in chat_bodies(server)]
    assert 0 < len(done_first) < rows, "the disk did not fill mid-run"

    (kept / "go").touch()
    assert process.wait(timeout=300) == 0
    second_err = (kept / "second.err").read_text()
    assert (kept / "second.code").read_text().strip() == "0", second_err
    out = [json.loads(line) for line in (kept / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == list(range(rows))
    assert all(r["error"] is None for r in out)
    sent = [int(prompt_of(b).split(":")[0].split()[1]) for b in chat_bodies(server)]
    sent_second = sent[len(sent_first) :]
    assert not set(sent_second) & done_first  # no journaled row was paid for twice
    # Only rows in flight when the disk filled (at most the concurrency) went out again.
    assert len(set(sent_second) & set(sent_first)) <= CONCURRENCY
    assert len(sent_second) == rows - len(done_first)
