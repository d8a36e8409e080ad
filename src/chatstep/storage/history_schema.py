"""The history database's schema: versioned with ``PRAGMA user_version``, brought up to date by
:func:`migrate` (the ``calls`` log with its FTS5 index, and the conversation tables)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from chatstep.errors import ChatstepError
from chatstep.storage.sqlite_files import write_transaction

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

SCHEMA_VERSION = 3


def _migration_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE calls (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            time TEXT NOT NULL,
            step TEXT,
            endpoint TEXT NOT NULL,
            model TEXT,
            base_url TEXT,
            request TEXT NOT NULL,
            response TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            latency_ms REAL,
            cost_usd REAL,
            error TEXT,
            cached INTEGER NOT NULL DEFAULT 0,
            run_id TEXT
        )
        """
    )
    conn.execute("CREATE INDEX calls_time ON calls(time)")
    conn.execute("CREATE INDEX calls_model_time ON calls(model, time)")
    conn.execute("CREATE INDEX calls_step_time ON calls(step, time)")
    conn.execute("CREATE INDEX calls_run_id ON calls(run_id)")
    # rowid = calls.seq; a separate copy of the text, so rows can be deleted from both later.
    conn.execute("CREATE VIRTUAL TABLE calls_fts USING fts5(prompt, response)")


def _migration_2(conn: sqlite3.Connection) -> None:
    # What a call cost by token class (input, cached, output, audio; batch), as JSON, and
    # whether its usage was counted locally rather than reported by the server.
    conn.execute("ALTER TABLE calls ADD COLUMN cost_breakdown TEXT")
    conn.execute("ALTER TABLE calls ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0")


def _migration_3(conn: sqlite3.Connection) -> None:
    # Conversations (chatstep.storage.conversations): a named message list and its settings.
    conn.execute(
        """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            name TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL,
            model TEXT NOT NULL,
            settings TEXT NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX conversations_updated ON conversations(updated)")
    # position orders the messages; a summary takes the position of the first message it
    # replaced, and the replaced ones stay, marked, so nothing said is lost.
    conn.execute(
        """
        CREATE TABLE conversation_messages (
            seq INTEGER PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            time TEXT NOT NULL,
            message TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'message',
            replaced_by INTEGER
        )
        """
    )
    conn.execute(
        "CREATE INDEX conversation_messages_order "
        "ON conversation_messages(conversation_id, position, seq)"
    )


#: Migration n takes a file from user_version n-1 to n. Append, never edit.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_2, _migration_3]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; returns the version found before."""
    with write_transaction(conn):  # one process migrates, the others wait and then see it done
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found > len(MIGRATIONS):
            raise ChatstepError(
                f"the history database has schema version {found}, newer than this chatstep "
                f"knows ({len(MIGRATIONS)}): upgrade chatstep, or set CHATSTEP_HISTORY=off"
            )
        for version in range(found + 1, len(MIGRATIONS) + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute(f"PRAGMA user_version = {version}")
    return found
