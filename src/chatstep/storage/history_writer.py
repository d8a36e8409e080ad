"""Batched writes to the call history, done on the thread that made the calls.

A :class:`HistoryWriter` buffers entries and writes them to the :class:`History`
in one transaction per batch: when :attr:`~HistoryWriter.flush_rows` entries are waiting, when
the oldest has waited :attr:`~HistoryWriter.flush_seconds` (checked on the next call, and by a
timer on the running event loop), and when the writer is closed (``AsyncRunner.aclose``, and at
interpreter exit).

Why not a background thread: the first version wrote from one, and measured ~1 ms of CPU per
call in ``bench/overhead.py``: the writer thread and the event loop handing the GIL to each other
around every SQLite statement cost ten times the writes themselves. A batch of 64 written inline
costs ~100 µs of CPU per call and holds the loop for a few milliseconds, once per 64 calls.

What can be lost: a process killed with SIGKILL loses the entries still buffered, at most
``flush_rows - 1`` calls or ``flush_seconds`` of them. The map journal, not the history, is what
makes a run resumable, so nothing is paid for twice.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
from collections.abc import Callable

from chatstep.storage.history import History, HistoryEntry

__all__ = ["HistoryWriter"]


class HistoryWriter:
    """Buffers history entries and writes them in batches (see the module docstring)."""

    def __init__(
        self,
        history: History,
        *,
        flush_rows: int = 64,
        flush_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.history = history
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._buffer: list[HistoryEntry] = []
        self._oldest = 0.0
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._at_exit = False

    @property
    def pending(self) -> int:
        """Entries buffered and not yet written."""
        return len(self._buffer)

    def submit(self, entry: HistoryEntry) -> None:
        """Buffer one entry; writes the batch now when it is full or old enough."""
        if not self.history.writes_enabled:
            return
        with self._lock:
            if not self._buffer:
                self._oldest = self._clock()
            self._buffer.append(entry)
            due = (
                len(self._buffer) >= self.flush_rows
                or self._clock() - self._oldest >= self.flush_seconds
            )
            if not self._at_exit:
                self._at_exit = True
                atexit.register(self.close)
        if due:
            self.flush()
        else:
            self._arm_timer()

    def _arm_timer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next submit or close writes the batch
        if self._timer is not None and self._timer_loop is loop:
            return
        self._timer = loop.call_later(self.flush_seconds, self._on_timer)
        self._timer_loop = loop

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write every buffered entry now (one transaction)."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self.history.record_many(batch)

    def close(self) -> None:
        """Write everything buffered; the writer stays usable (it buffers again on submit).

        Call it on the thread of the loop that armed the timer (or with no timer armed): a
        timer handle is not safe to cancel from another thread.
        """
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()
        with self._lock:
            registered, self._at_exit = self._at_exit, False
        if registered:
            atexit.unregister(self.close)
