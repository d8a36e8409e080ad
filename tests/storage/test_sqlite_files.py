"""Opening chatstep's SQLite files: concurrent first opens of a fresh file all succeed."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from chatstep.storage.sqlite_files import is_busy, open_wal


def test_threads_opening_a_fresh_file_together_all_get_wal(tmp_path: Path) -> None:
    # Without the retry, about 1 in 25 of these rounds saw "database is locked" on this machine.
    errors: list[BaseException] = []
    modes: list[str] = []
    for round_ in range(100):
        path = tmp_path / f"f{round_}.sqlite3"
        barrier = threading.Barrier(8)

        def open_one(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                conn = open_wal(path, timeout=10.0)
                modes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
                conn.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert modes == ["wal"] * 800


def test_is_busy_tells_transient_errors_apart() -> None:
    assert is_busy(sqlite3.OperationalError("database is locked"))
    assert is_busy(sqlite3.OperationalError("database is busy"))
    assert not is_busy(sqlite3.OperationalError("no such table: calls"))
    assert not is_busy(sqlite3.IntegrityError("UNIQUE constraint failed: calls.id (locked)"))


def test_a_file_that_is_not_a_database_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "not.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        open_wal(path, timeout=10.0)
