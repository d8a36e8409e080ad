"""Resuming reads the journal as a stream beside the input (issue 13, item 5)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chatstep.core.runner import AsyncRunner
from chatstep.errors import JournalMismatchError
from chatstep.mapping import datasets
from chatstep.mapping import journal as journal_module
from chatstep.mapping.datasets import DatasetFile
from chatstep.mapping.files import default_journal_path, map_file
from chatstep.mapping.journal import FinishedRanges, JournalCursor, RunJournal, row_hash
from chatstep.mapping.options import MapOptions
from chatstep.mapping.run import MapRun, map_step
from chatstep.steps.definitions import ChatCompletion

from .conftest import ServerFactory, chat_bodies, prompt_of

STEP = {"type": "chat", "model": "gpt-4o-mini", "prompt": "{{ inputs.id }}"}


def test_the_cursor_finds_rows_in_index_order_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "STREAM_CHUNK", 2)
    with RunJournal(tmp_path / "j", definition=STEP) as journal:
        for i in (0, 2, 3, 4, 9):
            journal.record(i, f"h{i}", "ok", {"content": str(i)}, None)
        cursor = JournalCursor(journal)
        found = []
        for i in range(12):
            entry = cursor.lookup(i)
            if entry is not None:
                found.append((entry.index, entry.input_hash, entry.record()))
            # Rows this run records behind the cursor are not read back as journaled.
            journal.record(i, "new", "ok", {"content": "new"}, None)
        assert found == [(i, f"h{i}", {"content": str(i)}) for i in (0, 2, 3, 4, 9)]
    assert JournalCursor(None).lookup(0) is None


def step() -> ChatCompletion:
    return ChatCompletion(model="gpt-4o-mini", prompt="row {{ inputs.id }}")


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i} for i in range(n)]


def test_a_resumed_run_sends_only_unfinished_rows_and_keeps_the_order(
    serve: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "STREAM_CHUNK", 7)  # many chunks, gaps across them
    server = serve(latency=(0.0, 0.01), seed=5)
    path = tmp_path / "run.journal"
    total = 300
    missing = {i for i in range(total) if i % 11 == 3 or 100 <= i < 130 or i >= 290}
    run = MapRun(step(), rows(total), MapOptions(journal=path))
    journal = run.open_journal()
    assert journal is not None
    for i in range(total):
        if i not in missing:
            record = {"content": f"journaled {i}", "cost": 0.0}
            journal.record(i, row_hash({"id": i}), "ok", record, 0.0)
    run.close()

    out = map_step(step(), rows(total), journal=path, concurrency=6, history=False)

    sent = sorted(int(prompt_of(body).removeprefix("row ")) for body in chat_bodies(server))
    assert sent == sorted(missing)  # each unfinished row once, no finished row again
    assert [r["id"] for r in out] == list(range(total))
    for r in out:
        expected = f"echo: row {r['id']}" if r["id"] in missing else f"journaled {r['id']}"
        assert r["content"] == expected
    assert out.stats.from_journal == total - len(missing)
    assert out.stats.journaled == total - len(missing)


TRICKY_LINES = [
    '{"id": 0}',
    "",
    "   ",
    '{"id": 1, "t": "caf\\u00e9"}',
    "\x1c\x1f ",  # str.strip() removes these: a blank line, not a row
    '{"id": 2, "t": "naïve"}',
    "\u00a0",  # a non-ASCII blank line
    '{"id": 3}',
    '{"id": 4}',
    "\t",
    '{"id": 5, "t": "x"}',
]


@pytest.mark.parametrize("block", [1, 7, 32, 1 << 20])
@pytest.mark.parametrize("bom", [False, True])
def test_skipping_finished_rows_counts_rows_exactly_as_reading_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, bom: bool
) -> None:
    monkeypatch.setattr(datasets, "_SKIP_BLOCK", block)
    path = tmp_path / "rows.jsonl"
    text = "\n".join(TRICKY_LINES * 3)  # no line end after the last row
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    every = list(datasets.read_rows(path))
    assert len(every) == 18
    for finished in ({0}, {1, 2, 3}, set(range(18)), {5, 6, 7, 8, 17}, set(range(3, 17))):
        out: list[Any] = []
        for item in datasets.read_rows_skipping(path, _Runs(finished)):
            out.extend([None] * item if isinstance(item, int) else [item])
        assert out == [None if i in finished else row for i, row in enumerate(every)]


class _Runs:
    def __init__(self, finished: set[int]) -> None:
        self.finished = finished

    def run_from(self, index: int) -> int:
        n = 0
        while index + n in self.finished:
            n += 1
        return n


def test_finished_ranges_are_the_runs_of_consecutive_finished_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "RANGE_SPAN", 64)
    monkeypatch.setattr(journal_module, "_RANGE_LEAF", 4)
    done = set(range(0, 130)) | {140, 141, 143} | set(range(150, 300)) | {1000}
    with RunJournal(tmp_path / "j", definition=STEP) as journal:
        for i in sorted(done):
            journal.record(i, "h", "failed" if i in (141, 200) else "ok", {}, None)
        assert list(journal.finished_ranges()) == [
            (0, 129), (140, 141), (143, 143), (150, 299), (1000, 1000)
        ]  # fmt: skip
        assert list(journal.finished_ranges(include_failed=False)) == [
            (0, 129), (140, 140), (143, 143), (150, 199), (201, 299), (1000, 1000)
        ]  # fmt: skip
        ranges = FinishedRanges(journal)
        assert [ranges.run_from(i) for i in (0, 129, 130, 140, 142, 143, 299, 999, 1000)] == [
            130, 1, 0, 2, 0, 1, 1, 0, 1
        ]  # fmt: skip


def _journal_rows(path: Path, total: int, missing: set[int]) -> None:
    run = MapRun(step(), rows(total), MapOptions(journal=path))
    journal = run.open_journal()
    assert journal is not None
    for i in range(total):
        if i not in missing:
            journal.record(i, row_hash({"id": i}), "ok", {"content": f"journaled {i}"}, 0.0)
    run.close()


def test_a_resumed_file_run_sends_its_first_request_before_handing_out_the_journal(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve()
    total, missing = 3000, {2990, 2995}
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(f'{{"id": {i}}}\n' for i in range(total)))
    output = tmp_path / "out.jsonl"
    _journal_rows(default_journal_path(output), total, missing)
    handed_out_at_first_send: list[int] = []

    class FirstSend:
        async def before_send(self, request: Any, conn: Any) -> None:
            if not handed_out_at_first_send:
                handed_out_at_first_send.append(len(written))

        async def after_reply(self, request: Any, conn: Any, reply: Any) -> None:
            pass

        async def after_result(self, step: Any, request: Any, result: Any, error: Any) -> None:
            pass

    written: list[dict[str, Any]] = []

    async def go() -> Any:
        runner = AsyncRunner(hooks=[FirstSend()], history=False, cache=False)
        run = MapRun(step(), DatasetFile(source), MapOptions(journal=default_journal_path(output)),
                     runner=runner)  # fmt: skip
        async for row in run:
            written.append(row)
        return run.stats

    stats = asyncio.run(go())
    assert handed_out_at_first_send[0] < 1000  # the journal's 2,998 rows did not go first
    assert [r["id"] for r in written] == list(range(total))
    assert sorted(int(prompt_of(b).removeprefix("row ")) for b in chat_bodies(server)) == [
        2990, 2995
    ]  # fmt: skip
    assert written[2990]["content"] == "echo: row 2990"
    assert written[5]["content"] == "journaled 5"
    assert stats.from_journal == total - 2


def test_a_finished_row_whose_input_changed_is_still_refused_when_skipped_unread(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve()
    total = 50
    source = tmp_path / "rows.jsonl"
    source.write_text(
        "".join(f'{{"id": {i}}}\n' for i in range(total)).replace('"id": 7}', '"id": 7, "x": 1}')
    )
    output = tmp_path / "out.jsonl"
    _journal_rows(default_journal_path(output), total, {40})
    with pytest.raises(JournalMismatchError, match="row 7 differs"):
        map_file(step(), source, output, history=False)
    assert not output.exists()
    assert len(chat_bodies(server)) <= 1  # at most the window of unfinished rows


VOCABULARY_CHILD = """
import sys
from chatstep.mapping.run import map_step
out = map_step({"model": "gpt-4o-mini", "prompt": "row {{ inputs.id }}", "max_tokens": 5},
               [{"id": i} for i in range(20)], history=False)
assert all(r["error"] is None for r in out), out
tokens = sys.modules.get("chatstep.accounting.tokens")
print("loaded" if tokens is not None and tokens._counters else "not loaded")
"""


def test_a_map_with_no_limit_and_no_rate_headers_loads_no_vocabulary(
    serve: ServerFactory, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    server = serve()  # no rpm/tpm: no x-ratelimit headers
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "CHATSTEP_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", VOCABULARY_CHILD],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["not", "loaded"]
    assert len(chat_bodies(server)) == 20
