"""The run journal: each row's result recorded in SQLite the moment it completes.

A map run writes one journal row per finished input row (its result, or its error) in its own
committed transaction, in WAL mode: after a crash (even ``kill -9``) every row that finished is
on disk, and the next run sends only the rest. Rows that were in flight at the crash had no
result yet, so they are sent again: at most the run's concurrency.

The journal is keyed by a fingerprint of the step definition and of the input: the step's
fingerprint is stored once, and every row keeps a hash of its input. A changed step, or an input
row that no longer matches its record, is refused (:class:`JournalMismatchError`) unless the run
restarts. One process at a time may use a journal (an OS file lock through ``filelock``,
released even by kill -9; another run is refused with :class:`StorageError`). A journal the
disk refuses (read-only, full) is a :class:`StorageError` too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chatstep.errors import JournalMismatchError, StorageError
from chatstep.storage.files import ExclusiveLock, sqlite_storage_error, storage_error
from chatstep.storage.history import new_id
from chatstep.storage.sqlite_files import open_wal, write_transaction

__all__ = [
    "FinishedRanges",
    "JournalCursor",
    "JournalEntry",
    "JournalMismatchError",
    "JournalRow",
    "RowStatus",
    "RunJournal",
    "row_hash",
    "step_fingerprint",
]

SCHEMA_VERSION = 1
#: Rows :meth:`RunJournal.stream` reads per query.
STREAM_CHUNK = 1000
#: Span of indexes :meth:`RunJournal.finished_ranges` counts per query at first.
RANGE_SPAN = 1 << 17
#: Spans this small and partly finished are read index by index.
_RANGE_LEAF = 512
RowStatus = Literal["ok", "failed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    idx INTEGER PRIMARY KEY,
    input_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    record TEXT NOT NULL,
    cost REAL,
    finished REAL NOT NULL
);
-- Counts, sums and runs of finished rows read this small index, not the records (resuming).
CREATE INDEX IF NOT EXISTS rows_status ON rows (status, idx, cost);
"""


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def step_fingerprint(definition: Mapping[str, Any]) -> str:
    """SHA-256 of a step definition's canonical JSON (leave the API key out of it)."""
    return hashlib.sha256(_canonical_json(definition).encode("utf-8")).hexdigest()


def row_hash(row: Mapping[str, Any]) -> str:
    """A short hash of one input row (its canonical JSON)."""
    return hashlib.sha256(_canonical_json(row).encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class JournalRow:
    """One finished row as the journal has it."""

    index: int
    input_hash: str
    status: RowStatus
    record: dict[str, Any]
    cost: float | None


@dataclass(frozen=True)
class JournalEntry:
    """One finished row as :meth:`RunJournal.stream` reads it: the record still JSON text."""

    index: int
    status: RowStatus
    input_hash: str
    record_json: str

    def record(self) -> dict[str, Any]:
        """The decoded record."""
        value: dict[str, Any] = json.loads(self.record_json)
        return value


class JournalCursor:
    """Looks rows up in a journal in rising index order, reading it as a stream.

    ``lookup`` must be called with rising indexes (the input's order); each finished row is
    read once, so resuming costs one pass over the journal beside the input, not a dict of
    every finished row.
    """

    def __init__(self, journal: RunJournal | None) -> None:
        self._entries = journal.stream() if journal is not None else iter(())
        self._next: JournalEntry | None = None
        self._done = False

    def lookup(self, index: int) -> JournalEntry | None:
        """The finished row at ``index``, or None (indexes must not go down between calls)."""
        while not self._done:
            if self._next is None:
                self._next = next(self._entries, None)
                if self._next is None:
                    self._done = True
                    return None
            if self._next.index > index:
                return None
            entry, self._next = self._next, None
            if entry.index == index:
                return entry
        return None


class FinishedRanges:
    """Runs of finished rows, asked about rising indexes: ``run_from(i)`` rows from ``i`` on.

    Reads runs of consecutive indexes from the journal (no records), a span at a time, so a
    resumed run can skip its finished rows without parsing them, in bounded memory.
    """

    def __init__(self, journal: RunJournal, *, include_failed: bool = True) -> None:
        self._ranges = journal.finished_ranges(include_failed=include_failed)
        self._first, self._last = next(self._ranges, (-1, -1))

    def run_from(self, index: int) -> int:
        """How many consecutive rows from ``index`` on are finished (0: ``index`` is not)."""
        while 0 <= self._last < index:
            self._first, self._last = next(self._ranges, (-1, -1))
        return self._last - index + 1 if self._first <= index <= self._last else 0


def _changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if _canonical_json(old.get(k)) != _canonical_json(new.get(k))]


class RunJournal:
    """Finished rows of one map run, by input index, in a SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        definition: Mapping[str, Any],
        restart: bool = False,
    ) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(self.path.parent, exc, "create the journal's directory") from None
        self._lock = ExclusiveLock(
            self.path,
            what="the journal",
            fix="wait for the other run to finish, or give this run another --journal",
        ).acquire()
        self._conn: sqlite3.Connection | None = None
        try:
            self._conn = open_wal(self.path, timeout=30.0)
            self._db.executescript(_SCHEMA)
            self._check_version()
            self.fingerprint = step_fingerprint(definition)
            self.resumed = self._claim(dict(definition), restart)
        except sqlite3.Error as exc:
            self.close()
            raise sqlite_storage_error(self.path, exc, "open the journal") from None
        except BaseException:
            self.close()
            raise

    def _check_version(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise JournalMismatchError(
                "journal",
                f"{self.path} has format version {version}; this chatstep reads {SCHEMA_VERSION}",
                "use another --journal, or --restart to start it over",
            )

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _claim(self, definition: dict[str, Any], restart: bool) -> bool:
        stored = self._meta("fingerprint")
        if restart or stored is None:
            with write_transaction(self._db) as conn:
                conn.execute("DELETE FROM rows")
                conn.execute("DELETE FROM meta")
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("fingerprint", self.fingerprint),
                        ("definition", _canonical_json(definition)),
                        ("created", str(time.time())),
                        ("run_id", _new_run_id()),
                    ],
                )
            return False
        if stored != self.fingerprint:
            old = json.loads(self._meta("definition") or "{}")
            changed = ", ".join(_changed_fields(old, definition)) or "unknown"
            raise JournalMismatchError(
                "journal",
                f"{self.path} was started with a different step definition "
                f"(changed: {changed}); its {self.count()} finished rows would not match "
                "the new step",
                "re-run with --restart to start over (finished rows are sent again), "
                "or give this run another --journal or --output",
            )
        return True

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(str(self.path), "the journal is closed")
        return self._conn

    @property
    def run_id(self) -> str:
        """An id for this journal's run (it tags the call history)."""
        return self._meta("run_id") or ""

    def finished(self) -> dict[int, tuple[RowStatus, str]]:
        """Index -> (status, input hash) of every finished row."""
        cursor = self._db.execute("SELECT idx, status, input_hash FROM rows")
        return {int(i): (status, str(h)) for i, status, h in cursor}

    def stream(self, start: int = 0, *, chunk: int | None = None) -> Iterator[JournalEntry]:
        """Finished rows from ``start`` on, in index order, ``chunk`` rows per query.

        Each query is short (keyset paging on the primary key), so the run may record rows
        between them, and memory holds one chunk however large the journal; records stay
        undecoded JSON text until wanted.
        """
        sql = "SELECT idx, status, input_hash, record FROM rows WHERE idx >= ? ORDER BY idx LIMIT ?"
        after, size = start, chunk or STREAM_CHUNK
        while True:
            try:
                batch = self._db.execute(sql, (after, size)).fetchall()
            except sqlite3.Error as exc:
                raise sqlite_storage_error(self.path, exc, "read the journal") from None
            for i, status, h, record in batch:
                yield JournalEntry(int(i), status, str(h), str(record))
            if len(batch) < size:
                return
            after = int(batch[-1][0]) + 1

    def finished_ranges(self, *, include_failed: bool = True) -> Iterator[tuple[int, int]]:
        """(first, last) index of each run of consecutive finished rows, rising.

        ``include_failed`` False: ``ok`` rows only. Counting rows in halving spans on the
        ``rows_status`` index finds the runs without reading records: a journal finished up
        to row N costs a few counts, not a scan of N records.
        """
        statuses = ("ok", "failed") if include_failed else ("ok",)
        where = f"status IN ({','.join('?' * len(statuses))}) AND idx >= ? AND idx < ?"
        count_sql = f"SELECT count(*) FROM rows WHERE {where}"
        index_sql = f"SELECT idx FROM rows WHERE {where} ORDER BY idx"

        def spans(low: int, high: int) -> Iterator[tuple[int, int]]:
            found = int(self._db.execute(count_sql, (*statuses, low, high)).fetchone()[0])
            if found == high - low:
                yield low, high - 1
            elif found and high - low <= _RANGE_LEAF:
                for (i,) in self._db.execute(index_sql, (*statuses, low, high)).fetchall():
                    yield int(i), int(i)
            elif found:
                middle = (low + high) // 2
                yield from spans(low, middle)
                yield from spans(middle, high)

        try:
            top = self._db.execute("SELECT max(idx) FROM rows").fetchone()[0]
            run: tuple[int, int] | None = None
            for start in range(0, -1 if top is None else int(top) + 1, RANGE_SPAN):
                for first, last in spans(start, start + RANGE_SPAN):
                    if run is not None and first == run[1] + 1:
                        run = (run[0], last)
                        continue
                    if run is not None:
                        yield run
                    run = (first, last)
            if run is not None:
                yield run
        except sqlite3.Error as exc:
            raise sqlite_storage_error(self.path, exc, "read the journal") from None

    def get(self, index: int) -> JournalRow | None:
        """The finished row at ``index``, or None."""
        row = self._db.execute(
            "SELECT idx, input_hash, status, record, cost FROM rows WHERE idx = ?", (index,)
        ).fetchone()
        if row is None:
            return None
        return JournalRow(int(row[0]), str(row[1]), row[2], json.loads(row[3]), row[4])

    def rows(self) -> Iterator[JournalRow]:
        """Every finished row, by index."""
        cursor = self._db.execute(
            "SELECT idx, input_hash, status, record, cost FROM rows ORDER BY idx"
        )
        for i, h, status, record, cost in cursor:
            yield JournalRow(int(i), str(h), status, json.loads(record), cost)

    def record(
        self,
        index: int,
        input_hash: str,
        status: RowStatus,
        record: Mapping[str, Any],
        cost: float | None,
    ) -> None:
        """Store a finished row (replacing an earlier failure of the same row); committed now.

        Raises :class:`StorageError` when the disk refuses it (full, read-only).
        """
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO rows (idx, input_hash, status, record, cost, finished) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (index, input_hash, status, _canonical_json(record), cost, time.time()),
            )
        except sqlite3.Error as exc:
            raise sqlite_storage_error(self.path, exc, f"record row {index}") from None

    def spent(self) -> float:
        """Dollars spent on the finished rows."""
        value = self._db.execute("SELECT coalesce(sum(cost), 0) FROM rows").fetchone()[0]
        return float(value)

    def count(self, status: RowStatus | None = None) -> int:
        """How many rows are finished (with ``status``, or any)."""
        if status is None:
            return int(self._db.execute("SELECT count(*) FROM rows").fetchone()[0])
        sql = "SELECT count(*) FROM rows WHERE status = ?"
        return int(self._db.execute(sql, (status,)).fetchone()[0])

    def close(self) -> None:
        """Close the database and release the lock (idempotent; never raises)."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        self._lock.release()

    def __enter__(self) -> RunJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _new_run_id() -> str:
    return "map-" + new_id()
