"""Conversations kept in the history database: a named message list and how to continue it.

Two tables (history schema version 3): ``conversations`` (id, name, model, settings as JSON,
created/updated times) and ``conversation_messages`` (the messages in order). A summary that
replaces older turns is stored as a message of kind ``summary``; the messages it replaced stay,
marked ``replaced_by`` it, so the transcript is never lost, only left out of later requests.

The file is the history's (``user_dir()/history.sqlite3``, so ``CHATSTEP_HOME`` moves it). With
``CHATSTEP_HISTORY=off`` nothing is written to disk: :meth:`ConversationStore.default` is then
an in-memory store that lives as long as the process. Messages and settings pass through
:func:`chatstep.errors.redact` like the call history, so no known secret is ever stored.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from chatstep.errors import ConfigError, StorageError, redact
from chatstep.storage.history import history_enabled, migrate
from chatstep.storage.paths import user_dir
from chatstep.storage.sqlite_files import open_wal, retry_busy, write_transaction

__all__ = ["ConversationRecord", "ConversationStore", "StoredMessage"]

#: How long a write waits for another process holding the database.
BUSY_SECONDS = 10.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _dumps(value: Any) -> str:
    # A key pasted into a message is still never stored (the history's rule).
    return redact(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


@dataclass
class StoredMessage:
    """One message of a conversation, as the API takes it, with its row id and kind."""

    seq: int
    message: dict[str, Any]
    kind: str = "message"
    """``message``, or ``summary`` for a summary that replaced older turns."""


@dataclass
class ConversationRecord:
    """A conversation's row: id, name, model, settings (JSON-able), times."""

    id: str
    model: str
    name: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    message_count: int = 0


_memory_store: ConversationStore | None = None


class ConversationStore:
    """Reads and writes conversations in one SQLite file (``":memory:"`` keeps them in RAM)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def default(cls) -> ConversationStore:
        """The history database, or an in-memory store when ``CHATSTEP_HISTORY`` is off."""
        global _memory_store
        if history_enabled():
            return cls(user_dir() / "history.sqlite3")
        if _memory_store is None:
            _memory_store = cls(":memory:")
        return _memory_store

    @property
    def persistent(self) -> bool:
        """False for an in-memory store (nothing survives the process)."""
        return self.path != ":memory:"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                if self.persistent:
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                    conn = open_wal(self.path, timeout=BUSY_SECONDS, check_same_thread=False)
                else:
                    conn = sqlite3.connect(
                        ":memory:", isolation_level=None, check_same_thread=False
                    )
                migrate(conn)
            except (sqlite3.Error, OSError) as exc:
                raise self._storage_error(exc) from exc
            conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
        return self._conn

    def _storage_error(self, exc: BaseException) -> StorageError:
        return StorageError(
            self.path,
            f"the conversation could not be read or written: {exc}",
            "check the file's permissions and free space, or set CHATSTEP_HOME elsewhere",
        )

    def _write(self, action: Any) -> Any:
        def attempt() -> Any:
            with self._lock, write_transaction(self._connection()) as conn:
                return action(conn)

        try:
            return retry_busy(attempt, seconds=BUSY_SECONDS)
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from exc

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return list(self._connection().execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from exc

    def create(self, record: ConversationRecord, messages: Sequence[dict[str, Any]]) -> None:
        """Store a new conversation and its first messages (system messages, usually)."""

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO conversations (id, name, created, updated, model, settings) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.created,
                    record.updated,
                    record.model,
                    _dumps(record.settings),
                ),
            )
            _append(conn, record.id, messages, "message")

        self._write(insert)

    def get(self, conversation_id: str) -> ConversationRecord:
        """The conversation with this id (or unique id prefix, compared literally: ``%`` and
        ``_`` are characters, not wildcards); ConfigError when none, or for a blank id."""
        conversation_id = conversation_id.strip()
        if not conversation_id:
            raise ConfigError(
                "cid",
                "is empty, so it names no conversation",
                "give an id (or a prefix of one) from `chatstep chat --list`, or use -c for "
                "the latest",
            )
        rows = self._rows(
            "SELECT id, name, created, updated, model, settings FROM conversations "
            "WHERE substr(id, 1, length(?)) = ? ORDER BY id = ? DESC LIMIT 2",
            (conversation_id, conversation_id, conversation_id),
        )
        if not rows or (len(rows) > 1 and rows[0][0] != conversation_id):
            problem = "is ambiguous" if rows else "names no stored conversation"
            raise ConfigError(
                "cid",
                f"{conversation_id!r} {problem}",
                "list them with `chatstep chat --list`",
            )
        return _record(rows[0])

    def latest(self) -> ConversationRecord | None:
        """The conversation that was used last, or None."""
        rows = self._rows(
            "SELECT id, name, created, updated, model, settings FROM conversations "
            "ORDER BY updated DESC, id DESC LIMIT 1",
            (),
        )
        return _record(rows[0]) if rows else None

    def recent(self, limit: int = 20) -> list[ConversationRecord]:
        """The conversations used last first, with how many messages each holds."""
        rows = self._rows(
            "SELECT c.id, c.name, c.created, c.updated, c.model, c.settings, "
            "(SELECT count(*) FROM conversation_messages m WHERE m.conversation_id = c.id "
            "AND m.replaced_by IS NULL) FROM conversations c "
            "ORDER BY c.updated DESC, c.id DESC LIMIT ?",
            (limit,),
        )
        return [_record(row) for row in rows]

    def messages(self, conversation_id: str) -> list[StoredMessage]:
        """The messages still in the conversation (not replaced by a summary), in order."""
        rows = self._rows(
            "SELECT seq, message, kind FROM conversation_messages "
            "WHERE conversation_id = ? AND replaced_by IS NULL ORDER BY position, seq",
            (conversation_id,),
        )
        return [StoredMessage(seq, json.loads(message), kind) for seq, message, kind in rows]

    def transcript(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every message ever added, summaries and what they replaced included, in order."""
        rows = self._rows(
            "SELECT message FROM conversation_messages WHERE conversation_id = ? ORDER BY seq",
            (conversation_id,),
        )
        return [json.loads(row[0]) for row in rows]

    def append(
        self, conversation_id: str, messages: Sequence[dict[str, Any]], kind: str = "message"
    ) -> None:
        """Add messages at the end (one transaction: a turn is stored whole or not at all).

        ``kind``: ``message``, or ``preamble`` for a step's own messages (always sent).
        """

        def insert(conn: sqlite3.Connection) -> None:
            _append(conn, conversation_id, messages, kind)
            conn.execute(
                "UPDATE conversations SET updated = ? WHERE id = ?", (_now(), conversation_id)
            )

        self._write(insert)

    def update(self, record: ConversationRecord) -> None:
        """Store a conversation's new model and settings."""

        def change(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE conversations SET model = ?, settings = ?, updated = ? WHERE id = ?",
                (record.model, _dumps(record.settings), _now(), record.id),
            )

        self._write(change)

    def replace_with_summary(
        self, conversation_id: str, replaced: Sequence[int], summary: dict[str, Any]
    ) -> None:
        """Put ``summary`` where the first of the ``replaced`` messages (by seq) was."""

        def update(conn: sqlite3.Connection) -> None:
            marks = ",".join("?" * len(replaced))
            (first,) = conn.execute(
                f"SELECT min(position) FROM conversation_messages WHERE seq IN ({marks})",
                tuple(replaced),
            ).fetchone()
            cursor = conn.execute(
                "INSERT INTO conversation_messages "
                "(conversation_id, position, time, message, kind) VALUES (?, ?, ?, ?, 'summary')",
                (conversation_id, first, _now(), _dumps(summary)),
            )
            conn.execute(
                f"UPDATE conversation_messages SET replaced_by = ? WHERE seq IN ({marks})",
                (cursor.lastrowid, *replaced),
            )

        self._write(update)

    def close(self) -> None:
        """Close the connection (an in-memory store forgets everything)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _append(
    conn: sqlite3.Connection, conversation_id: str, messages: Sequence[dict[str, Any]], kind: str
) -> None:
    (last,) = conn.execute(
        "SELECT coalesce(max(position), -1) FROM conversation_messages WHERE conversation_id = ?",
        (conversation_id,),
    ).fetchone()
    time = _now()
    for offset, message in enumerate(messages, start=1):
        conn.execute(
            "INSERT INTO conversation_messages (conversation_id, position, time, message, kind) "
            "VALUES (?, ?, ?, ?, ?)",
            (conversation_id, int(last) + offset, time, _dumps(message), kind),
        )


def _record(row: tuple[Any, ...]) -> ConversationRecord:
    id_, name, created, updated, model, settings = row[:6]
    count = int(row[6]) if len(row) > 6 else 0
    return ConversationRecord(
        id=id_,
        name=name,
        created=created,
        updated=updated,
        model=model,
        settings=json.loads(settings),
        message_count=count,
    )
