"""Leases on map shards: one worker at a time may send a shard's rows.

A lease has an owner (host, process and a random part), a time to live and a store:

- :class:`RedisLease`: ``SET key owner NX PX ttl``; renewing and releasing are Lua scripts that
  act only while the key still names this owner (workers on several machines);
- :class:`SqliteLease`: a row (shard, owner, expiry) in a SQLite file, taken in an
  ``IMMEDIATE`` transaction when absent, expired or already ours (workers on one machine: the
  expiry is that machine's wall clock).

A worker holds a lease while :meth:`Lease.keep` renews it (every third of the time to live).
It trusts the lease only until its own deadline: the moment before its last successful renewal
*started*, plus the time to live, minus a margin. A worker that cannot renew (a zombie cut off
from the store, a process stopped for a while) stops sending before the store lets a retried
task take the shard, so the two never both send one shard. A worker killed outright leaves
its lease to expire; the next taker waits for that (at most the time to live).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from chatstep.errors import ShardLeaseError, StorageError

__all__ = [
    "DEFAULT_LEASE_TTL",
    "Lease",
    "LeaseStore",
    "RedisLease",
    "SqliteLease",
    "lease_owner",
]

#: Seconds a lease lives without renewal (a killed worker's shard waits this long at most).
DEFAULT_LEASE_TTL = 30.0
# A lease is trusted locally for this share of its time to live after a renewal started.
_TRUSTED = 0.8

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_owner() -> str:
    """An owner name unique to this process and call: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class LeaseStore(Protocol):
    """Where leases live: take, renew (both True when this owner holds it now), release."""

    def take(self, name: str, owner: str, ttl: float) -> bool: ...

    def renew(self, name: str, owner: str, ttl: float) -> bool: ...

    def release(self, name: str, owner: str) -> None: ...

    def holder(self, name: str) -> str | None: ...


class RedisLease:
    """Leases as Redis keys (``chatstep:lease:<name>``) set with ``NX PX``.

    ``client``: a synchronous ``redis.Redis``; ``shown``: its URL without a password (errors).
    """

    def __init__(self, client: Any, shown: str) -> None:
        self._client = client
        self._shown = shown
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def _key(name: str) -> str:
        return f"chatstep:lease:{name}"

    def _call(self, action: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return action(*args, **kwargs)
        except (redis.RedisError, OSError) as exc:
            raise StorageError(
                self._shown, f"the lease store cannot be reached ({type(exc).__name__}: {exc})"
            ) from None

    def take(self, name: str, owner: str, ttl: float) -> bool:
        key, px = self._key(name), int(ttl * 1000)
        if self._call(self._client.set, key, owner, nx=True, px=px):
            return True
        return self.renew(name, owner, ttl)

    def renew(self, name: str, owner: str, ttl: float) -> bool:
        px = int(ttl * 1000)
        return bool(self._call(self._renew, keys=[self._key(name)], args=[owner, px]))

    def release(self, name: str, owner: str) -> None:
        self._call(self._release, keys=[self._key(name)], args=[owner])

    def holder(self, name: str) -> str | None:
        value = self._call(self._client.get, self._key(name))
        return value.decode() if isinstance(value, bytes) else value


class SqliteLease:
    """Leases as rows of a ``leases`` table in a SQLite file (one machine's clock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            # Renewals run in a worker thread (asyncio.to_thread); a lock keeps calls apart.
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS leases "
                "(name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StorageError(str(self.path), f"cannot open the lease table ({exc})") from None
        self._guard = threading.Lock()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._guard:
            return self._write_now(sql, args)

    def _write_now(self, sql: str, args: tuple[Any, ...]) -> int:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count = self._db.execute(sql, args).rowcount
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(str(self.path), f"cannot write a lease ({exc})") from None
        return int(count)

    def take(self, name: str, owner: str, ttl: float) -> bool:
        now = time.time()
        taken = self._write(
            "INSERT INTO leases (name, owner, expires) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
            "WHERE leases.expires < ? OR leases.owner = excluded.owner",
            (name, owner, now + ttl, now),
        )
        return taken > 0

    def renew(self, name: str, owner: str, ttl: float) -> bool:
        sql = "UPDATE leases SET expires = ? WHERE name = ? AND owner = ? AND expires >= ?"
        now = time.time()
        return self._write(sql, (now + ttl, name, owner, now)) > 0

    def release(self, name: str, owner: str) -> None:
        self._write("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    def holder(self, name: str) -> str | None:
        sql = "SELECT owner FROM leases WHERE name = ? AND expires >= ?"
        with self._guard:
            row = self._db.execute(sql, (name, time.time())).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


class Lease:
    """This worker's lease on one shard: :meth:`acquire`, :meth:`keep` renewing, :meth:`check`.

    ``ttl``: seconds the lease lives unrenewed; ``wait``: seconds :meth:`acquire` waits for a
    holder's lease to end (default: ``2 x ttl``, time enough for a killed holder's to expire).
    """

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        *,
        ttl: float = DEFAULT_LEASE_TTL,
        wait: float | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.wait = 2 * ttl if wait is None else wait
        self.owner = owner or lease_owner()
        self._trusted_until = 0.0
        self._lost = False

    @property
    def held(self) -> bool:
        """Whether this worker may still send: renewed in time, never lost."""
        return not self._lost and time.monotonic() < self._trusted_until

    def check(self) -> None:
        """Raise :class:`ShardLeaseError` unless the lease is held.

        Past the local deadline (a busy event loop can delay renewals), the store is asked
        once: a renewal it accepts proves nobody else took the shard meanwhile.
        """
        if self.held:
            return
        if not self._lost:
            try:
                if self._take(True):
                    return
            except StorageError:
                pass
            self._lost = True
        if not self.held:
            raise ShardLeaseError(
                f"shard {self.name}",
                "this worker's lease on the shard ended (not renewed in time); it sends "
                "nothing more of it",
                "the shard's next taker resumes it from its journal",
            )

    def _take(self, renew: bool) -> bool:
        started = time.monotonic()
        action = self.store.renew if renew else self.store.take
        if action(self.name, self.owner, self.ttl):
            self._trusted_until = started + self.ttl * _TRUSTED
            return True
        return False

    async def acquire(self) -> None:
        """Take the lease, waiting up to :attr:`wait` for another holder's to end.

        Raises :class:`ShardLeaseError` naming the holder when it is still held after that.
        """
        deadline = time.monotonic() + self.wait
        delay = min(0.05, self.ttl / 10)
        while not await asyncio.to_thread(self._take, False):
            if time.monotonic() + delay > deadline:
                holder = await asyncio.to_thread(self.store.holder, self.name)
                raise ShardLeaseError(
                    f"shard {self.name}",
                    f"is leased by another live worker ({holder or 'unknown'})",
                    "wait for that worker to finish; the same command resumes afterwards",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.ttl / 3)

    async def keep(self) -> None:
        """Renew the lease every third of its time to live until cancelled (or lost)."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                renewed = await asyncio.to_thread(self._take, True)
            except StorageError:
                # The store is out of reach: the lease is trusted until its deadline only.
                if self.held:
                    continue
                renewed = False
            if not renewed:  # expired, or taken by another worker: send nothing more
                self._lost = True
                return

    async def release(self) -> None:
        """Give the lease up (when the shard is done); never raises."""
        self._trusted_until = 0.0
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.store.release, self.name, self.owner)
