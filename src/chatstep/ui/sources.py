"""Which SQLite files the UI shows: the call history, the batch journal and map run journals.

Each file is recognised by its tables, never by its name, and opened read-only
(``?mode=ro``: a run may be writing it in WAL mode at the same time; ``immutable=1`` would read
a live WAL file wrong). Nothing here imports Datasette.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from chatstep.errors import ConfigError

__all__ = [
    "JOURNAL_SUFFIX",
    "MAX_JOURNALS",
    "Source",
    "SourceKind",
    "collect_sources",
    "read_only_uri",
    "sniff_kind",
]

SourceKind = Literal["history", "map_journal", "batch_journal"]

#: How ``chatstep map`` names a journal by default: ``OUTPUT.journal.sqlite3``.
JOURNAL_SUFFIX = ".journal.sqlite3"
#: More databases than this make the page a list nobody reads (and each is a file handle).
MAX_JOURNALS = 50

# Tables (and columns) that identify each kind of file.
_SIGNATURES: tuple[tuple[SourceKind, dict[str, set[str]]], ...] = (
    ("history", {"calls": {"id", "run_id", "request", "response", "error"}, "calls_fts": set()}),
    ("map_journal", {"meta": {"key", "value"}, "rows": {"idx", "status", "record", "finished"}}),
    ("batch_journal", {"jobs": {"id", "status", "data"}, "batch_ids": {"batch_id", "job_id"}}),
)


@dataclass(frozen=True)
class Source:
    """One database the UI serves: its Datasette name, file and kind."""

    name: str
    path: Path
    kind: SourceKind


def read_only_uri(path: Path) -> str:
    """A SQLite URI that opens ``path`` read-only (safe while another process writes in WAL)."""
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def sniff_kind(path: Path) -> SourceKind | None:
    """What kind of chatstep file ``path`` is, or None (not SQLite, or another schema)."""
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, timeout=5.0)
    except sqlite3.Error:
        return None
    try:
        tables = {
            name: {row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')}
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.Error:  # not a database, or a locked/corrupt file
        return None
    finally:
        conn.close()
    for kind, wanted in _SIGNATURES:
        if all(table in tables and columns <= tables[table] for table, columns in wanted.items()):
            return kind
    return None


def _name_for(path: Path, kind: SourceKind, taken: set[str]) -> str:
    if kind == "history":
        base = "history"
    elif kind == "batch_journal":
        base = "batches"
    else:
        stem = path.name.removesuffix(JOURNAL_SUFFIX).removesuffix(".sqlite3")
        base = "journal_" + (re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_") or "run")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _journal_files(spec: Path) -> Iterable[Path]:
    if spec.is_dir():
        return sorted(spec.glob(f"*{JOURNAL_SUFFIX}"))
    if spec.is_file():
        return [spec]
    raise ConfigError(
        "--journal",
        f"{str(spec)!r} is neither a file nor a directory",
        "pass a map journal (OUTPUT.journal.sqlite3) or a directory holding some",
    )


def collect_sources(
    history: Path | None,
    batch_journal: Path | None,
    journals: Sequence[Path] = (),
) -> tuple[list[Source], list[str]]:
    """The databases to serve, and notes on what was left out (missing default files).

    ``history`` and ``batch_journal`` are skipped with a note when they do not exist yet;
    every ``journals`` entry (a journal file, or a directory searched for ``*.journal.sqlite3``)
    must be a map journal. Raises :class:`ConfigError` naming the option and the file otherwise,
    and when nothing at all is left to show.
    """
    sources: list[Source] = []
    notes: list[str] = []
    taken: set[str] = set()
    seen: set[Path] = set()

    def add(path: Path, kind: SourceKind) -> None:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            sources.append(Source(_name_for(path, kind, taken), resolved, kind))

    for option, path, kind in (
        ("--history", history, "history"),
        ("--batch-journal", batch_journal, "batch_journal"),
    ):
        if path is None:
            continue
        if not path.is_file():
            notes.append(f"no {kind.replace('_', ' ')} at {path} yet")
            continue
        found = sniff_kind(path)
        if found != kind:
            raise ConfigError(
                option,
                f"{str(path)!r} is not a chatstep {kind.replace('_', ' ')} "
                f"(found: {found or 'not a chatstep SQLite file'})",
                f"point {option} at the file chatstep wrote",
            )
        add(path, kind)
    journal_paths = [p for spec in journals for p in _journal_files(spec)]
    if len(journal_paths) > MAX_JOURNALS:
        raise ConfigError(
            "--journal",
            f"{len(journal_paths)} journals found; the UI serves at most {MAX_JOURNALS}",
            "pass fewer files or a narrower directory",
        )
    for path in journal_paths:
        found = sniff_kind(path)
        if found != "map_journal":
            raise ConfigError(
                "--journal",
                f"{str(path)!r} is not a map journal "
                f"(found: {(found or 'not a chatstep SQLite file').replace('_', ' ')})",
                "pass the OUTPUT.journal.sqlite3 file `chatstep map` wrote",
            )
        add(path, "map_journal")
    if not sources:
        raise ConfigError(
            "history",
            "there is nothing to show: " + ("; ".join(notes) or "no database was given"),
            "run a step first (every call is logged), or pass --history / --journal",
        )
    return sources, notes
