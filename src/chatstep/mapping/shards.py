"""A sharded run journal: deterministic shards of rows, a journal and a lease per shard.

A scaled-out map cuts its rows into shards of ``shard_rows`` consecutive rows (shard ``i`` holds
rows ``i x shard_rows`` up to the next shard), so a rerun cuts the same shards. Each shard has
its own journal, where every finished row is committed the moment it finishes, keyed by its
position in the shard (or by a row id), and its own lease (:mod:`chatstep.mapping.leases`):

- :class:`SqliteShardJournal`: a directory with one SQLite file per shard (WAL, a commit per
  row) and a lease table; for workers on one machine (SQLite locks do not cross hosts);
- :class:`RedisShardJournal`: one Redis hash per shard (``HSET`` per row) and ``SET NX PX``
  leases; for workers on several machines.

Both keep the run's step fingerprint and shard size: a rerun with another step or another
shard size is refused (:class:`~chatstep.errors.JournalMismatchError`) unless it restarts.
:class:`ShardRunJournal` shows one shard's journal to :class:`~chatstep.mapping.run.MapRun` as
its :class:`~chatstep.mapping.journal.RunJournal`, so a shard runs the ordinary map scheduler.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chatstep.errors import ConfigError, JournalMismatchError, StorageError
from chatstep.mapping.journal import JournalEntry, RowStatus, RunJournal, step_fingerprint
from chatstep.mapping.leases import LeaseStore, RedisLease, SqliteLease
from chatstep.storage.files import sqlite_storage_error
from chatstep.storage.history import new_id

if TYPE_CHECKING:
    from chatstep.mapping.leases import Lease

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "Shard",
    "ShardJournalStore",
    "ShardRunJournal",
    "open_shard_journal",
    "plan_shards",
]

#: Rows per shard unless told otherwise.
DEFAULT_SHARD_ROWS = 1000


@dataclass(frozen=True)
class Shard:
    """Rows ``start`` (included) to ``stop`` (excluded) of the input: shard number ``index``."""

    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.index:06d}"

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_shards(total: int, shard_rows: int = DEFAULT_SHARD_ROWS) -> list[Shard]:
    """The shards of ``total`` rows, ``shard_rows`` each (the last one may be shorter)."""
    if shard_rows < 1:
        raise ConfigError("--shard-rows", f"must be at least 1, got {shard_rows}")
    return [
        Shard(i, start, min(total, start + shard_rows))
        for i, start in enumerate(range(0, total, shard_rows))
    ]


@dataclass(frozen=True)
class _Finished:
    status: RowStatus
    input_hash: str
    record_json: str
    cost: float


class ShardJournalStore(Protocol):
    """Where shard journals and leases live (a directory, or a Redis database)."""

    where: str

    def claim(self, definition: Mapping[str, Any], shard_rows: int, restart: bool) -> str: ...

    def finished(self, shard: str, keys: Sequence[str]) -> dict[str, _Finished]: ...

    def record(
        self, shard: str, key: str, input_hash: str, status: RowStatus, record: str, cost: float
    ) -> None: ...

    def leases(self) -> LeaseStore: ...

    def close(self) -> None: ...


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _mismatch(where: str, old: Mapping[str, str], fingerprint: str, shard_rows: int) -> None:
    if old.get("fingerprint") != fingerprint:
        raise JournalMismatchError(
            "journal",
            f"{where} was started with a different step definition",
            "re-run with --restart to start over, or give this run another --journal",
        )
    if old.get("shard_rows") != str(shard_rows):
        raise JournalMismatchError(
            "--shard-rows",
            f"{where} was cut into shards of {old.get('shard_rows')} rows, not {shard_rows}",
            f"re-run with --shard-rows {old.get('shard_rows')}, or --restart",
        )


class SqliteShardJournal:
    """Shard journals as SQLite files in ``directory`` (one machine)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.where = str(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(self.where, f"cannot create the journal directory ({exc})") from None
        self._shards: dict[str, sqlite3.Connection] = {}
        self._leases: SqliteLease | None = None

    def _open(self, name: str) -> sqlite3.Connection:
        conn = self._shards.get(name)
        if conn is None:
            from chatstep.storage.sqlite_files import open_wal

            path = self.directory / f"{name}.sqlite3"
            try:
                conn = open_wal(path, timeout=30.0, check_same_thread=False)
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, input_hash TEXT "
                    "NOT NULL, status TEXT NOT NULL, record TEXT NOT NULL, cost REAL NOT NULL)"
                )
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            except sqlite3.Error as exc:
                raise sqlite_storage_error(path, exc, "open the shard journal") from None
            self._shards[name] = conn
        return conn

    def claim(self, definition: Mapping[str, Any], shard_rows: int, restart: bool) -> str:
        meta = self._open("run")
        fingerprint = step_fingerprint(definition)
        old = dict(meta.execute("SELECT key, value FROM meta").fetchall())
        if old and not restart:
            _mismatch(self.where, old, fingerprint, shard_rows)
            return str(old["run_id"])
        for path in self.directory.glob("shard-*.sqlite3"):
            self._open(path.stem).execute("DELETE FROM rows")
        run_id = "map-" + new_id()
        values = {"fingerprint": fingerprint, "shard_rows": str(shard_rows), "run_id": run_id}
        values["definition"] = _canonical(definition)
        meta.execute("BEGIN IMMEDIATE")
        meta.execute("DELETE FROM meta")
        meta.executemany("INSERT INTO meta VALUES (?, ?)", list(values.items()))
        meta.execute("COMMIT")
        return run_id

    def finished(self, shard: str, keys: Sequence[str]) -> dict[str, _Finished]:
        conn = self._open(f"shard-{shard}")
        found: dict[str, _Finished] = {}
        for start in range(0, len(keys), 500):
            part = list(keys[start : start + 500])
            marks = ",".join("?" * len(part))
            sql = f"SELECT key, status, input_hash, record, cost FROM rows WHERE key IN ({marks})"
            for key, status, h, record, cost in conn.execute(sql, part):
                found[str(key)] = _Finished(status, str(h), str(record), float(cost))
        return found

    def record(
        self, shard: str, key: str, input_hash: str, status: RowStatus, record: str, cost: float
    ) -> None:
        conn = self._open(f"shard-{shard}")
        try:
            conn.execute(
                "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?)",
                (key, input_hash, status, record, cost),
            )
        except sqlite3.Error as exc:
            path = self.directory / f"shard-{shard}.sqlite3"
            raise sqlite_storage_error(path, exc, f"record row {key}") from None

    def leases(self) -> LeaseStore:
        if self._leases is None:
            self._leases = SqliteLease(self.directory / "leases.sqlite3")
        return self._leases

    def close(self) -> None:
        for conn in self._shards.values():
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._shards.clear()
        if self._leases is not None:
            self._leases.close()
            self._leases = None


class RedisShardJournal:
    """Shard journals as Redis hashes (``chatstep:journal:<run>:<shard>``), several machines.

    ``run``: the run's name, so several runs can share one database (the CLI uses a hash of
    the output path).
    """

    def __init__(self, url: str, run: str) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError(
                "--journal",
                "a redis:// journal needs the redis package",
                'pip install "chatstep[redis]"',
            ) from None
        self.where = re.sub(r"//[^@/]*@", "//***@", url)
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=10.0, socket_connect_timeout=10.0
        )
        self._prefix = f"chatstep:journal:{run}:"
        self._leases = RedisLease(self._client, self.where)

    def _call(self, action: Any, *args: Any) -> Any:
        import redis

        try:
            return action(*args)
        except (redis.RedisError, OSError) as exc:
            raise StorageError(
                self.where, f"the shard journal cannot be reached ({type(exc).__name__}: {exc})"
            ) from None

    def claim(self, definition: Mapping[str, Any], shard_rows: int, restart: bool) -> str:
        meta = self._prefix + "meta"
        raw = self._call(self._client.hgetall, meta)
        old = {k.decode(): v.decode() for k, v in raw.items()}
        fingerprint = step_fingerprint(definition)
        if old and not restart:
            _mismatch(self.where, old, fingerprint, shard_rows)
            return str(old["run_id"])
        stale = self._call(lambda: list(self._client.scan_iter(self._prefix + "shard:*")))
        if stale:
            self._call(self._client.delete, *stale)
        run_id = "map-" + new_id()
        values = {"fingerprint": fingerprint, "shard_rows": str(shard_rows), "run_id": run_id}
        values["definition"] = _canonical(definition)
        self._call(self._client.delete, meta)
        self._call(lambda: self._client.hset(meta, mapping=values))
        return run_id

    def finished(self, shard: str, keys: Sequence[str]) -> dict[str, _Finished]:
        found: dict[str, _Finished] = {}
        name = self._prefix + "shard:" + shard
        for start in range(0, len(keys), 500):
            part = list(keys[start : start + 500])
            for key, value in zip(part, self._call(self._client.hmget, name, part), strict=True):
                if value is not None:
                    status, h, cost, record = json.loads(value)
                    found[key] = _Finished(status, h, record, float(cost))
        return found

    def record(
        self, shard: str, key: str, input_hash: str, status: RowStatus, record: str, cost: float
    ) -> None:
        value = json.dumps([status, input_hash, cost, record])
        self._call(self._client.hset, self._prefix + "shard:" + shard, key, value)

    def leases(self) -> LeaseStore:
        return self._leases

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def open_shard_journal(spec: str | Path, run: str = "default") -> ShardJournalStore:
    """The shard journal store at ``spec``: a ``redis://`` URL, else a directory."""
    text = str(spec)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisShardJournal(text, run)
    return SqliteShardJournal(text)


class ShardRunJournal(RunJournal):
    """One shard's journal seen as a :class:`RunJournal` by :class:`~chatstep.mapping.run.MapRun`.

    ``keys[i]`` is the journal key of the shard's row ``i`` (its position, or its id). Every
    ``record`` checks ``lease`` first: a worker that lost its lease records (and sends) nothing
    more, raising :class:`~chatstep.errors.ShardLeaseError`.
    """

    def __init__(  # the store holds the files: no RunJournal.__init__ (no path, no lock)
        self,
        store: ShardJournalStore,
        shard: str,
        keys: Sequence[str],
        *,
        run_id: str,
        lease: Lease | None = None,
    ) -> None:
        self.store = store
        self.shard = shard
        self.keys = list(keys)
        self.path = Path(store.where)
        self.resumed = True
        self.lease = lease
        self._run_id = run_id
        self._finished = store.finished(shard, self.keys)

    @property
    def run_id(self) -> str:
        return self._run_id

    def stream(self, start: int = 0, *, chunk: int | None = None) -> Iterator[JournalEntry]:
        for index in range(start, len(self.keys)):
            done = self._finished.get(self.keys[index])
            if done is not None:
                yield JournalEntry(index, done.status, done.input_hash, done.record_json)

    def finished_ranges(self, *, include_failed: bool = True) -> Iterator[tuple[int, int]]:
        """(first, last) index of each run of finished rows (a shard's rows are few: a scan)."""
        statuses = ("ok", "failed") if include_failed else ("ok",)
        first = last = -1
        for index, key in enumerate(self.keys):
            done = self._finished.get(key)
            if done is None or done.status not in statuses:
                continue
            if first >= 0 and index == last + 1:
                last = index
                continue
            if first >= 0:
                yield first, last
            first = last = index
        if first >= 0:
            yield first, last

    def record(
        self,
        index: int,
        input_hash: str,
        status: RowStatus,
        record: Mapping[str, Any],
        cost: float | None,
    ) -> None:
        if self.lease is not None:
            self.lease.check()
        text = _canonical(record)
        self.store.record(self.shard, self.keys[index], input_hash, status, text, cost or 0.0)
        self._finished[self.keys[index]] = _Finished(status, input_hash, text, cost or 0.0)

    def spent(self) -> float:
        return sum(done.cost for done in self._finished.values())

    def count(self, status: RowStatus | None = None) -> int:
        return sum(1 for d in self._finished.values() if status is None or d.status == status)

    def close(self) -> None:
        """Nothing to close: the store belongs to the caller."""
