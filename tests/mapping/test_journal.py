"""RunJournal: rows recorded as they finish, refused under a changed step, one user at a time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chatstep.errors import StorageError
from chatstep.mapping.journal import JournalMismatchError, RunJournal, row_hash

STEP = {"type": "chat", "model": "gpt-4o-mini", "prompt": "Classify {{ inputs.text }}"}


def test_records_rows_and_reads_them_back_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    with RunJournal(path, definition=STEP) as journal:
        assert not journal.resumed
        journal.record(0, row_hash({"text": "a"}), "ok", {"content": "A"}, 0.001)
        journal.record(2, row_hash({"text": "c"}), "failed", {"error": "boom"}, None)
        run_id = journal.run_id
    with RunJournal(path, definition=STEP) as journal:
        assert journal.resumed
        assert journal.run_id == run_id
        assert journal.finished() == {
            0: ("ok", row_hash({"text": "a"})),
            2: ("failed", row_hash({"text": "c"})),
        }
        entry = journal.get(0)
        assert entry is not None
        assert entry.record == {"content": "A"}
        assert journal.get(1) is None
        assert journal.spent() == pytest.approx(0.001)
        assert journal.count("failed") == 1
        assert [r.index for r in journal.rows()] == [0, 2]


def test_a_retried_row_replaces_its_failure(tmp_path: Path) -> None:
    with RunJournal(tmp_path / "j", definition=STEP) as journal:
        journal.record(5, "h", "failed", {"error": "x"}, None)
        journal.record(5, "h", "ok", {"content": "y"}, 0.5)
        assert journal.finished() == {5: ("ok", "h")}


def test_every_record_is_committed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = RunJournal(path, definition=STEP)
    journal.record(0, "h", "ok", {"content": "A"}, 0.0)
    # Another connection (as after a crash of this process) sees the row already.
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM rows").fetchone()[0] == 1
    other.close()
    journal.close()


def test_a_changed_step_is_refused_with_the_changed_fields(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with RunJournal(path, definition=STEP) as journal:
        journal.record(0, "h", "ok", {}, 0.0)
    changed = {**STEP, "prompt": "Summarize {{ inputs.text }}", "temperature": 0.2}
    with pytest.raises(JournalMismatchError) as info:
        RunJournal(path, definition=changed)
    message = str(info.value)
    assert "different step definition" in message
    assert "prompt, temperature" in message
    assert "--restart" in message
    # The refused run left the journal as it was, and unlocked.
    with RunJournal(path, definition=STEP) as journal:
        assert journal.count() == 1


def test_restart_forgets_the_rows_and_takes_the_new_step(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with RunJournal(path, definition=STEP) as journal:
        journal.record(0, "h", "ok", {}, 0.0)
        old_run = journal.run_id
    changed = {**STEP, "model": "gpt-4o"}
    with RunJournal(path, definition=changed, restart=True) as journal:
        assert journal.count() == 0
        assert journal.run_id != old_run
    with RunJournal(path, definition=changed) as journal:
        assert journal.resumed


def test_one_process_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with (
        RunJournal(path, definition=STEP),
        pytest.raises(StorageError, match="in use by another running"),
    ):
        RunJournal(path, definition=STEP)
    with RunJournal(path, definition=STEP):
        pass


def test_row_hash_ignores_key_order() -> None:
    assert row_hash({"a": 1, "b": 2}) == row_hash({"b": 2, "a": 1})
    assert row_hash({"a": 1}) != row_hash({"a": 2})
