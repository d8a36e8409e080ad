"""The response cache: a finished response stored under a hash of the request that produced it.

What the key covers (:func:`cache_key`) is the SHA-256 of the compact, key-sorted JSON of::

    {"v": 1, "endpoint": <endpoint>, "base_url": <normalized base URL>, "body": <body>}

where ``body`` is the OpenAI HTTP request body minus the fields that cannot change the answer
(:data:`IGNORED_FIELDS`: ``stream``, ``stream_options``, ``user``, ``safety_identifier``,
``metadata``, ``store``, ``prompt_cache_key``), with integral floats written as integers
(``temperature: 1.0`` and ``1`` are one request). Everything else is in it: model, messages,
tools, response_format, temperature, seed, max_tokens, n...

The API key is never in it: keys travel in HTTP headers, never in the body, and a body that
carries an ``api_key``-like field is refused. The base URL is normalized (lower-case scheme and
host, default port and trailing slash dropped) and stripped of user info and of every query
parameter but ``api-version``, so credentials in a URL do not reach the key either.

Backends: :class:`SqliteCache` (default, a file in the user directory) and :class:`RedisCache`
(``pip install 'chatstep[redis]'``), chosen by :func:`open_cache`. A cache failure (database
locked too long, Redis down) is logged and counted as a miss: the cache never fails a call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chatstep.errors import BackendUnavailableError
from chatstep.storage.paths import user_dir
from chatstep.storage.sqlite_files import open_wal

__all__ = [
    "DEFAULT_BASE_URL",
    "IGNORED_FIELDS",
    "CacheStats",
    "RedisCache",
    "ResponseCache",
    "SqliteCache",
    "cache_key",
    "normalize_base_url",
    "open_cache",
]

logger = logging.getLogger("chatstep.cache")

#: What ``base_url=None`` stands for in a key: OpenAI's own endpoint.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Body fields that do not change the answer, so they are left out of the key.
IGNORED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "prompt_cache_key",
    }
)
# Fields that would mean a credential was put in a body; the body is the HTTP body, so never.
_CREDENTIAL_FIELDS = frozenset({"api_key", "apikey", "api-key", "authorization", "headers"})
_KEY_VERSION = 1
_DEFAULT_PORTS = {"http": 80, "https": 443}
_KEPT_QUERY = frozenset({"api-version"})


def normalize_base_url(base_url: str | None) -> str:
    """The base URL as it enters a key: canonical form, without credentials."""
    if base_url is None or not base_url.strip():
        return DEFAULT_BASE_URL
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    query = urlencode(sorted((k, v) for k, v in parse_qsl(parts.query) if k in _KEPT_QUERY))
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), query, ""))


def _canonical(value: Any) -> Any:
    # 1.0 and 1 serialize differently but mean the same parameter value.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def cache_key(endpoint: str, body: Mapping[str, Any], base_url: str | None) -> str:
    """The cache key (64 hex digits) of a request; see the module docstring for its contents."""
    leaked = _CREDENTIAL_FIELDS.intersection(k.lower() for k in body)
    if leaked:
        raise ValueError(
            f"body.{sorted(leaked)[0]}: a request body never carries credentials "
            "(they belong in HTTP headers); remove the field"
        )
    material = {
        "v": _KEY_VERSION,
        "endpoint": endpoint,
        "base_url": normalize_base_url(base_url),
        "body": _canonical({k: v for k, v in body.items() if k not in IGNORED_FIELDS}),
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class CacheStats:
    """Counters of one cache object since it was opened."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    errors: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0.0 before the first lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@runtime_checkable
class ResponseCache(Protocol):
    """Where finished responses are kept, by :func:`cache_key`."""

    stats: CacheStats

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response, or None when absent or expired."""
        ...

    def set(self, key: str, value: dict[str, Any], ttl: float | None = None) -> None:
        """Store a response for ``ttl`` seconds (None: until evicted by hand)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _Counters:
    """Thread-safe updates of a :class:`CacheStats`."""

    def __init__(self) -> None:
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._warned = False

    def hit(self) -> None:
        with self._lock:
            self.stats.hits += 1

    def miss(self) -> None:
        with self._lock:
            self.stats.misses += 1

    def write(self) -> None:
        with self._lock:
            self.stats.writes += 1

    def error(self, where: str, exc: BaseException) -> None:
        with self._lock:
            self.stats.errors += 1
            first = not self._warned
            self._warned = True
        # Once per cache object: a dead cache must not flood the log of a 100k-row run.
        if first:
            logger.warning("response cache %s failed, continuing without it: %s", where, exc)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS responses_expires ON responses(expires) WHERE expires IS NOT NULL;
"""


class SqliteCache:
    """A response cache in a SQLite file, shared safely by threads and processes (WAL mode).

    Each thread gets its own connection. Expired entries are never returned: a read that finds
    one deletes it, and every :attr:`PURGE_EVERY` writes purge all expired rows.
    """

    PURGE_EVERY = 1000

    def __init__(
        self, path: str | Path | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path) if path is not None else user_dir() / "cache.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._counters = _Counters()
        self.stats = self._counters.stats
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writes_since_purge = 0
        self._closed = False
        self._connection()  # create the schema now, so a bad path fails at open time

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise RuntimeError("SqliteCache is closed")
        # check_same_thread=False only so close() can close every thread's connection.
        conn = open_wal(self.path, timeout=10.0, check_same_thread=False)
        conn.executescript(_SCHEMA)
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response, or None when absent or expired."""
        try:
            conn = self._connection()
            row = conn.execute(
                "SELECT value, expires FROM responses WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[1] is not None and row[1] <= self._clock():
                conn.execute("DELETE FROM responses WHERE key = ? AND expires <= ?", (key, row[1]))
                row = None
            value: dict[str, Any] | None = json.loads(row[0]) if row is not None else None
        except (sqlite3.Error, ValueError) as exc:
            self._counters.error("read", exc)
            value = None
        if value is None:
            self._counters.miss()
        else:
            self._counters.hit()
        return value

    def set(self, key: str, value: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: no expiry)."""
        now = self._clock()
        expires = None if ttl is None else now + ttl
        try:
            conn = self._connection()
            conn.execute(
                "INSERT OR REPLACE INTO responses (key, value, created, expires) "
                "VALUES (?, ?, ?, ?)",
                (key, _dumps(value), now, expires),
            )
            with self._lock:
                self._writes_since_purge += 1
                purge = self._writes_since_purge >= self.PURGE_EVERY
                if purge:
                    self._writes_since_purge = 0
            if purge:
                self.purge_expired()
        except sqlite3.Error as exc:
            self._counters.error("write", exc)
            return
        self._counters.write()

    def purge_expired(self) -> int:
        """Delete every expired entry; returns how many were deleted."""
        cursor = self._connection().execute(
            "DELETE FROM responses WHERE expires IS NOT NULL AND expires <= ?", (self._clock(),)
        )
        return cursor.rowcount

    def __len__(self) -> int:
        row = self._connection().execute("SELECT count(*) FROM responses").fetchone()
        return int(row[0])

    def clear(self) -> None:
        """Delete every entry."""
        self._connection().execute("DELETE FROM responses")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> SqliteCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisCache:
    """A response cache in Redis, under the key prefix ``chatstep:cache:``.

    Needs the ``redis`` package (``pip install 'chatstep[redis]'``). TTLs are kept by Redis
    (``SET ... PX``, the millisecond form of ``SETEX``), so expiry is exact and needs no purge.
    """

    PREFIX = "chatstep:cache:"

    def __init__(self, url: str, *, prefix: str = PREFIX, **client_options: Any) -> None:
        try:
            import redis
        except ImportError as exc:
            raise BackendUnavailableError(
                "a redis:// response cache needs the 'redis' package: "
                "pip install 'chatstep[redis]' (or use the default SQLite cache)"
            ) from exc
        self._redis_error: type[Exception] = redis.RedisError
        self._client: Any = redis.Redis.from_url(url, **client_options)
        self.prefix = prefix
        self._counters = _Counters()
        self.stats = self._counters.stats

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response, or None when absent or expired."""
        value: dict[str, Any] | None = None
        try:
            raw = self._client.get(self.prefix + key)
            if raw is not None:
                value = json.loads(raw)
        except (self._redis_error, ValueError) as exc:
            self._counters.error("read", exc)
        if value is None:
            self._counters.miss()
        else:
            self._counters.hit()
        return value

    def set(self, key: str, value: dict[str, Any], ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: no expiry)."""
        try:
            if ttl is None:
                self._client.set(self.prefix + key, _dumps(value))
            else:
                # Redis refuses a zero TTL; one millisecond expires just as surely.
                self._client.set(self.prefix + key, _dumps(value), px=max(1, round(ttl * 1000)))
        except self._redis_error as exc:
            self._counters.error("write", exc)
            return
        self._counters.write()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> RedisCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_cache(spec: str | Path | None = None) -> ResponseCache:
    """Open the cache a setting names.

    ``None`` or ``"sqlite"``: the default SQLite file in the user directory; ``redis://``,
    ``rediss://`` or ``unix://`` URLs: Redis; anything else (optionally ``sqlite:`` prefixed):
    a SQLite file at that path.
    """
    if spec is None:
        return SqliteCache()
    text = str(spec).strip()
    if text in ("", "sqlite"):
        return SqliteCache()
    if text.startswith(("redis://", "rediss://", "unix://")):
        return RedisCache(text)
    if text.startswith("sqlite:"):
        text = text[len("sqlite:") :].removeprefix("//")
    return SqliteCache(Path(text).expanduser())
