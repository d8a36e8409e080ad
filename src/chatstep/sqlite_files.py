"""Opening the SQLite files chatstep keeps (history, cache, map journal) in WAL mode.

Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is locked"
at once, without waiting on the busy timeout, when two connections do it together: two
processes sharing a fresh cache, or several threads first writing a fresh history. This module
retries that case and lets callers retry any other busy/locked error the same way.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

__all__ = ["is_busy", "open_wal"]


def is_busy(exc: sqlite3.Error) -> bool:
    """True for the transient "database is locked" / "database is busy" errors."""
    message = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in message or "busy" in message)


def open_wal(
    path: str | Path, *, timeout: float, check_same_thread: bool = True
) -> sqlite3.Connection:
    """An autocommit connection to ``path`` in WAL mode with ``synchronous=NORMAL``.

    ``timeout`` is SQLite's busy timeout, and also how long a locked WAL switch is retried.
    """
    conn = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread
    )
    deadline = time.monotonic() + max(timeout, 1.0)
    delay = 0.005
    try:
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        # NORMAL: a commit survives a crash of this process (not a power cut), with no fsync
        # per transaction.
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn
