"""Batched history writes: by size, by age, by a loop timer, at close; from many threads."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from chatstep.storage.history import History, HistoryEntry
from chatstep.storage.history_writer import HistoryWriter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def entry(n: int) -> HistoryEntry:
    return HistoryEntry(request={"model": "m", "messages": [{"role": "user", "content": f"q{n}"}]})


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "h.sqlite3", enabled=True)


def test_a_full_batch_is_written_at_once(history: History) -> None:
    writer = HistoryWriter(history, flush_rows=3, flush_seconds=3600)
    writer.submit(entry(1))
    writer.submit(entry(2))
    assert history.count() == 0
    assert writer.pending == 2
    writer.submit(entry(3))
    assert history.count() == 3
    assert writer.pending == 0
    writer.close()


def test_an_old_batch_is_written_by_the_next_submit(history: History) -> None:
    clock = FakeClock()
    writer = HistoryWriter(history, flush_rows=100, flush_seconds=1.0, clock=clock)
    writer.submit(entry(1))
    clock.now += 0.5
    writer.submit(entry(2))
    assert history.count() == 0
    clock.now += 0.6  # the first entry has now waited 1.1 s
    writer.submit(entry(3))
    assert history.count() == 3
    writer.close()


def test_a_quiet_event_loop_writes_the_batch_on_a_timer(history: History) -> None:
    writer = HistoryWriter(history, flush_rows=100, flush_seconds=0.05)

    async def main() -> int:
        writer.submit(entry(1))
        writer.submit(entry(2))
        for _ in range(400):  # no new call comes: the timer must write the batch
            if writer.pending == 0:
                break
            await asyncio.sleep(0.01)
        return history.count()

    assert asyncio.run(main()) == 2
    writer.close()


def test_close_writes_what_is_left_and_the_writer_stays_usable(history: History) -> None:
    writer = HistoryWriter(history, flush_rows=100, flush_seconds=3600)
    writer.submit(entry(1))
    writer.close()
    assert history.count() == 1
    writer.submit(entry(2))
    writer.close()
    assert history.count() == 2


def test_a_disabled_history_buffers_nothing(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite3", enabled=False)
    writer = HistoryWriter(history)
    writer.submit(entry(1))
    assert writer.pending == 0
    writer.close()
    assert not (tmp_path / "h.sqlite3").exists()


def test_many_threads_submitting_lose_nothing(history: History) -> None:
    writer = HistoryWriter(history, flush_rows=16, flush_seconds=3600)

    def work(worker: int) -> None:
        for i in range(100):
            writer.submit(entry(worker * 1000 + i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert history.count() == 800
    assert len({e.id for e in history.recent(limit=1000)}) == 800
