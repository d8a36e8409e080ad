"""Opening the SQLite files chatstep keeps (history, cache, map journal) in WAL mode.

Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is locked"
at once, without waiting on the busy timeout, when two connections do it together: two
processes sharing a fresh cache, or several threads first writing a fresh history. This module
retries that case and lets callers retry any other busy/locked error the same way.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

__all__ = ["is_busy", "open_wal", "retry_busy", "write_transaction"]

T = TypeVar("T")


def is_busy(exc: sqlite3.Error) -> bool:
    """True for the transient "database is locked" / "database is busy" errors."""
    message = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in message or "busy" in message)


def retry_busy(action: Callable[[], T], *, seconds: float, max_delay: float = 0.5) -> T:
    """``action()``, retried with backoff (5 ms, doubling up to ``max_delay``) while SQLite says
    the database is busy or locked, for up to ``seconds``; other errors, and the last busy one,
    propagate."""
    deadline = time.monotonic() + seconds
    delay = 0.005
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, max_delay)


def open_wal(
    path: str | Path, *, timeout: float, check_same_thread: bool = True
) -> sqlite3.Connection:
    """An autocommit connection to ``path`` in WAL mode with ``synchronous=NORMAL``.

    ``timeout`` is SQLite's busy timeout, and also how long a locked WAL switch is retried.
    """
    conn = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread
    )
    try:
        retry_busy(
            lambda: conn.execute("PRAGMA journal_mode=WAL"),
            seconds=max(timeout, 1.0),
            max_delay=0.25,
        )
        # NORMAL: a commit survives a crash of this process (not a power cut), with no fsync
        # per transaction.
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (the write lock now, waiting on the busy timeout) ... ``COMMIT``,
    rolled back on any exception, for an autocommit (``isolation_level=None``) connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
