"""Resuming reads the journal as a stream beside the input (issue 13, item 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatstep.mapping import journal as journal_module
from chatstep.mapping.journal import JournalCursor, RunJournal, row_hash
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
