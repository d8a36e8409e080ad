"""The call history: every request and response logged to SQLite, searchable with FTS5.

Each call becomes one row of ``calls`` plus one row of the full-text index ``calls_fts``
(the request's message text and the response's content), written in one transaction on a
per-thread connection in WAL mode, so thousands of writes a minute stay cheap.

Nothing secret is stored: the request, the response and the error text pass through
:func:`chatstep.errors.redact` before they are written, and the index is built from the redacted
text. A failed write is logged and dropped; the history never fails a call.

Logging is off when ``CHATSTEP_HISTORY`` is ``off`` (or ``0``, ``false``, ``no``): then
:meth:`History.record` does nothing and creates no file, while reading an existing history still
works. :meth:`History.disabled` is a history that neither writes nor reads.

The schema is versioned with ``PRAGMA user_version``; :func:`migrate` brings any file, empty or
older, up to :data:`SCHEMA_VERSION` (:mod:`chatstep.storage.history_schema` holds the migrations).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from chatstep.errors import ChatstepError, redact
from chatstep.storage.history_schema import MIGRATIONS, SCHEMA_VERSION, migrate
from chatstep.storage.paths import user_dir
from chatstep.storage.sqlite_files import open_wal, retry_busy, write_transaction

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "History",
    "HistoryEntry",
    "history_enabled",
    "migrate",
    "new_id",
    "prompt_text",
    "response_text",
]

logger = logging.getLogger("chatstep.history")

_OFF_VALUES = frozenset({"off", "0", "false", "no", "disabled"})
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def history_enabled() -> bool:
    """False when ``CHATSTEP_HISTORY`` switches logging off."""
    return os.environ.get("CHATSTEP_HISTORY", "").strip().lower() not in _OFF_VALUES


def new_id() -> str:
    """A ULID: 26 characters that sort by creation time (48-bit ms time, 80 random bits)."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(kw_only=True)
class HistoryEntry:
    """One logged call. ``request`` is the OpenAI body sent; ``response`` the body received."""

    id: str = field(default_factory=new_id)
    time: str = field(default_factory=_utc_now)
    step: str | None = None
    endpoint: str = "chat.completions"
    model: str | None = None
    base_url: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    response: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    error: str | None = None
    cached: bool = False
    run_id: str | None = None
    cost_breakdown: dict[str, Any] | None = None
    """USD by token class (:meth:`chatstep.Cost.to_dict`), None when the model has no price."""
    usage_estimated: bool = False
    """The token counts were counted locally (a stream without usage, or cut midway)."""

    @classmethod
    def from_exchange(
        cls,
        endpoint: str,
        request: Mapping[str, Any],
        response: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> HistoryEntry:
        """An entry for one call, taking the model and token counts from the bodies."""
        usage = (response or {}).get("usage") or {}
        entry = cls(
            endpoint=endpoint,
            model=str(request.get("model")) if request.get("model") is not None else None,
            request=dict(request),
            response=dict(response) if response is not None else None,
            prompt_tokens=usage.get("prompt_tokens", usage.get("input_tokens")),
            completion_tokens=usage.get("completion_tokens", usage.get("output_tokens")),
            total_tokens=usage.get("total_tokens"),
        )
        for name, value in fields.items():
            if not hasattr(entry, name):
                raise TypeError(f"HistoryEntry has no field {name!r}")
            setattr(entry, name, value)
        return entry


def _text_of_content(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(part, Mapping):
                for key in ("text", "refusal"):
                    if isinstance(part.get(key), str):
                        yield part[key]


def _tool_call_text(calls: Any) -> Iterator[str]:
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                yield str(function.get("name") or "")
                yield str(function.get("arguments") or "")


def prompt_text(request: Mapping[str, Any]) -> str:
    """The searchable text of a request: message contents, the embeddings/moderation input, or
    a legacy completion's prompt."""
    chunks: list[str] = []
    for message in request.get("messages") or []:
        if isinstance(message, Mapping):
            chunks.extend(_text_of_content(message.get("content")))
            chunks.extend(_tool_call_text(message.get("tool_calls")))
    value = request.get("input", request.get("prompt"))
    if isinstance(value, str):
        chunks.append(value)
    elif isinstance(value, list):
        chunks.extend(v for v in value if isinstance(v, str))
        chunks.extend(_text_of_content([v for v in value if isinstance(v, Mapping)]))
    return "\n".join(c for c in chunks if c)


def response_text(response: Mapping[str, Any] | None) -> str:
    """The searchable text of a chat response: every choice's content, refusal and tool calls."""
    chunks: list[str] = []
    for choice in (response or {}).get("choices") or []:
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if isinstance(choice, Mapping) and isinstance(choice.get("text"), str):
            chunks.append(choice["text"])  # a legacy text_completion choice
        if isinstance(message, Mapping):
            chunks.extend(_text_of_content(message.get("content")))
            if isinstance(message.get("refusal"), str):
                chunks.append(message["refusal"])
            chunks.extend(_tool_call_text(message.get("tool_calls")))
    return "\n".join(c for c in chunks if c)


def _fts_query(query: str) -> str:
    # Plain words, all required: quoting each one keeps FTS5 syntax (-, :, *, AND) literal.
    terms = query.split()
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms)


_COLUMNS = (
    "id, time, step, endpoint, model, base_url, request, response, prompt_tokens, "
    "completion_tokens, total_tokens, latency_ms, cost_usd, error, cached, run_id, "
    "cost_breakdown, usage_estimated"
)


def _entry_from_row(row: tuple[Any, ...]) -> HistoryEntry:
    (id_, time_, step, endpoint, model, base_url, request, response) = row[:8]
    (prompt_tokens, completion_tokens, total_tokens, latency_ms, cost_usd) = row[8:13]
    (error, cached, run_id, breakdown, usage_estimated) = row[13:18]
    return HistoryEntry(
        id=id_,
        time=time_,
        step=step,
        endpoint=endpoint,
        model=model,
        base_url=base_url,
        request=json.loads(request),
        response=json.loads(response) if response is not None else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=total_tokens,
        latency_ms=latency_ms,
        cost_usd=cost_usd,
        error=error,
        cached=bool(cached),
        run_id=run_id,
        cost_breakdown=json.loads(breakdown) if breakdown is not None else None,
        usage_estimated=bool(usage_estimated),
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _stored_row(entry: HistoryEntry) -> tuple[tuple[Any, ...], str, str]:
    """The redacted column values of an entry, and the redacted text to index."""
    request_json = redact(_dumps(entry.request))
    response_json = redact(_dumps(entry.response)) if entry.response is not None else None
    error = redact(entry.error) if entry.error is not None else None
    values = (
        entry.id,
        entry.time,
        entry.step,
        entry.endpoint,
        entry.model,
        entry.base_url,
        request_json,
        response_json,
        entry.prompt_tokens,
        entry.completion_tokens,
        entry.total_tokens,
        entry.latency_ms,
        entry.cost_usd,
        error,
        int(entry.cached),
        entry.run_id,
        _dumps(entry.cost_breakdown) if entry.cost_breakdown is not None else None,
        int(entry.usage_estimated),
    )
    return values, redact(prompt_text(entry.request)), redact(response_text(entry.response))


class History:
    """The call log in a SQLite file (default ``user_dir()/history.sqlite3``).

    ``record`` is safe from many threads (one connection per thread) and processes (WAL). The
    file is created on the first write, so an idle or disabled history leaves no trace.
    """

    def __init__(self, path: str | Path | None = None, *, enabled: bool | None = None) -> None:
        self._explicit_path = Path(path) if path is not None else None
        self.writes_enabled = history_enabled() if enabled is None else enabled
        self.reads_enabled = True
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._warned = False
        #: How long one SQLite statement waits on a lock (SQLite's own busy timeout).
        self.busy_timeout = 10.0
        #: How long a write keeps retrying a busy or locked database before it is dropped.
        self.busy_deadline = 30.0

    @classmethod
    def disabled(cls) -> History:
        """A history that records nothing and finds nothing."""
        history = cls(enabled=False)
        history.reads_enabled = False
        return history

    @property
    def path(self) -> Path:
        """The database file (resolving the default creates the user directory)."""
        if self._explicit_path is None:
            self._explicit_path = user_dir() / "history.sqlite3"
        return self._explicit_path

    def _read_connection(self) -> sqlite3.Connection | None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None or not self.path.exists():
            return conn
        return self._write_connection()

    def _write_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = open_wal(path, timeout=self.busy_timeout, check_same_thread=False)
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def record(self, entry: HistoryEntry) -> None:
        """Log one call (redacted). Never raises on a database problem: it logs a warning."""
        self.record_many([entry])

    def record_many(self, entries: Sequence[HistoryEntry]) -> None:
        """Log several calls in one transaction (redacted); never raises on a database problem.

        A busy or locked database (another thread or process writing, a checkpoint, two
        connections switching a new file to WAL at once) is retried with backoff for up to
        :attr:`busy_deadline` seconds, so concurrent writers do not drop rows.
        """
        if not self.writes_enabled or not entries:
            return
        rows = [_stored_row(entry) for entry in entries]
        try:
            retry_busy(lambda: self._insert(rows), seconds=self.busy_deadline)
        except (sqlite3.Error, ChatstepError) as exc:
            self._warn(exc)

    def _insert(self, rows: Sequence[tuple[tuple[Any, ...], str, str]]) -> None:
        with write_transaction(self._write_connection()) as conn:
            for values, index_prompt, index_response in rows:
                cursor = conn.execute(
                    f"INSERT INTO calls ({_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    values,
                )
                conn.execute(
                    "INSERT INTO calls_fts (rowid, prompt, response) VALUES (?, ?, ?)",
                    (cursor.lastrowid, index_prompt, index_response),
                )

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("call history %s could not be written: %s", self.path, exc)

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[HistoryEntry]:
        if not self.reads_enabled:
            return []
        conn = self._read_connection()
        if conn is None:
            return []
        return [_entry_from_row(row) for row in conn.execute(sql, params).fetchall()]

    def get(self, id: str) -> HistoryEntry | None:
        """The entry with this id, or None."""
        rows = self._read(f"SELECT {_COLUMNS} FROM calls WHERE id = ?", (id,))
        return rows[0] if rows else None

    def recent(
        self,
        limit: int = 20,
        model: str | None = None,
        step: str | None = None,
        errors_only: bool = False,
        run_id: str | None = None,
    ) -> list[HistoryEntry]:
        """The newest entries first, optionally only one model, step, run, or failed calls."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("model", model), ("step", step), ("run_id", run_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if errors_only:
            where.append("error IS NOT NULL")
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        sql = f"SELECT {_COLUMNS} FROM calls {clause}ORDER BY time DESC, seq DESC LIMIT ?"
        return self._read(sql, (*params, limit))

    def search(self, query: str, limit: int = 20) -> list[HistoryEntry]:
        """Entries whose prompt or response text contains every word of ``query``, best first."""
        match = _fts_query(query)
        if not match:
            return []
        columns = ", ".join(f"calls.{c.strip()}" for c in _COLUMNS.split(","))
        sql = (
            f"SELECT {columns} FROM calls_fts JOIN calls ON calls.seq = calls_fts.rowid "
            "WHERE calls_fts MATCH ? ORDER BY calls_fts.rank, calls.seq DESC LIMIT ?"
        )
        return self._read(sql, (match, limit))

    def prune(self, before: datetime, *, vacuum: bool = False) -> int:
        """Delete the calls logged before ``before`` (and their search index); returns how many.

        ``vacuum`` then rebuilds the file so the space goes back to the disk (slow on a big
        file, and it needs as much free space again while it runs).
        """
        if before.tzinfo is None:
            raise ValueError("prune needs an aware datetime (UTC), e.g. datetime.now(timezone.utc)")
        if not self.path.exists():
            return 0
        cutoff = before.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        with write_transaction(self._write_connection()) as conn:
            conn.execute(
                "DELETE FROM calls_fts WHERE rowid IN (SELECT seq FROM calls WHERE time < ?)",
                (cutoff,),
            )
            removed = conn.execute("DELETE FROM calls WHERE time < ?", (cutoff,)).rowcount
        if vacuum:
            conn.execute("INSERT INTO calls_fts (calls_fts) VALUES ('optimize')")
            conn.execute("VACUUM")
        return int(removed)

    def count(self) -> int:
        """How many calls are logged."""
        if not self.reads_enabled:
            return 0
        conn = self._read_connection()
        if conn is None:
            return 0
        return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
