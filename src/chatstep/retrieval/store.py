"""The index file: chunks, their sources and vectors in one SQLite database with sqlite-vec.

Tables: ``meta`` (format, embedding step, model, dimensions, chunk settings), ``files``
(source, content digest, chunk count), ``chunks`` (text, position, first line) and ``vectors``,
a sqlite-vec ``vec0`` table of float32 vectors with cosine distance whose rowid is the chunk's
id. A query returns the ``top_k`` nearest chunks with ``score`` = 1 - cosine distance.

Python's own ``sqlite3`` is used when it can load extensions; builds that cannot (pyenv's
default, some macOS Pythons) use ``sqlean`` (``sqlean-py``), a drop-in ``sqlite3`` that can.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from chatstep.errors import BackendUnavailableError, ConfigError, StorageError
from chatstep.retrieval.chunking import Chunk

__all__ = ["FORMAT", "IndexedFile", "VectorIndex", "index_path", "indexes_dir"]

FORMAT = "chatstep-index/1"
MAX_TOP_K = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    source TEXT PRIMARY KEY, digest TEXT NOT NULL, chunks INTEGER NOT NULL, indexed_at REAL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL REFERENCES files(source),
    chunk INTEGER NOT NULL, start INTEGER NOT NULL, line INTEGER NOT NULL, text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
"""


def indexes_dir() -> Path:
    """``$CHATSTEP_HOME/indexes``, beside the history (created)."""
    from chatstep.storage.paths import user_dir

    path = user_dir() / "indexes"
    path.mkdir(parents=True, exist_ok=True)
    return path


def index_path(name_or_path: str | Path, *, field: str = "index") -> Path:
    """A name (``handbook``) is ``$CHATSTEP_HOME/indexes/handbook.db``; a path stays a path.

    A value with a ``/`` or ending in ``.db`` is a path (relative to the working directory).
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or "\\" in text or text.endswith(".db"):
        return Path(text).expanduser()
    if not _NAME.fullmatch(text):
        raise ConfigError(
            field,
            f"{text!r} is neither an index name nor a path",
            "use letters, digits, '.', '_' and '-' for a name, or give a path ending in .db",
        )
    return indexes_dir() / f"{text}.db"


def _sqlite() -> ModuleType:
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        import sqlean
    except ImportError:
        raise BackendUnavailableError(
            "this Python's sqlite3 cannot load extensions (sqlite-vec is one); "
            'install the [rag] extra, which brings sqlean-py: pip install "chatstep[rag]"'
        ) from None
    module: ModuleType = sqlean
    return module


def _connect(path: Path, *, create: bool) -> Any:
    """A connection with sqlite-vec loaded. ``create``: make the tables of a new index;
    otherwise (reading) nothing is written. Either way a database that holds other tables
    (the history, any other SQLite file) is refused, never turned into an index."""
    try:
        import sqlite_vec
    except ImportError:
        raise BackendUnavailableError(
            'indexes need sqlite-vec: pip install "chatstep[rag]"'
        ) from None
    module = _sqlite()
    try:
        conn = module.connect(str(path))
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if tables and "meta" not in tables:
            conn.close()
            raise ConfigError(
                str(path),
                "is a SQLite database but not a chatstep index (left untouched)",
                "give the name or .db path of an index",
            )
        if create:
            conn.executescript(_SCHEMA)
        elif not tables:
            conn.close()
            raise ConfigError(
                str(path), "is not a chatstep index (an empty file)", "build it first"
            )
    except module.Error as exc:
        raise StorageError(
            str(path), f"is not a usable index file ({exc})", "give another --index path"
        ) from None
    return conn


@dataclass(frozen=True)
class IndexedFile:
    """A file in the index: its source name, content digest and chunk count."""

    source: str
    digest: str
    chunks: int


class VectorIndex:
    """One index file; open with :meth:`open` (existing) or :meth:`create` (may be new)."""

    def __init__(self, path: Path, conn: Any) -> None:
        self.path = path
        self._conn = conn
        self.meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM meta").fetchall())

    @classmethod
    def create(cls, path: Path) -> VectorIndex:
        """Open ``path`` for building, creating it (and its folder) when missing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        index = cls(path, _connect(path, create=True))
        if not index.meta:
            index.set_meta(format=FORMAT, created_at=str(time.time()))
        elif index.meta.get("format") != FORMAT:
            index.close()
            raise ConfigError(
                str(path),
                f"is not a chatstep index (format {index.meta.get('format')!r})",
                "give another --index path",
            )
        return index

    @classmethod
    def open(cls, path: Path, *, field: str = "index") -> VectorIndex:
        """An existing, non-empty index; ConfigError naming ``field`` otherwise."""
        if not path.is_file():
            raise ConfigError(
                field,
                f"no index at {path}",
                "build it first: chatstep index build DOCS --step embed.yaml "
                f"--index {path.stem if path.parent.name == 'indexes' else path}",
            )
        index = cls(path, _connect(path, create=False))
        if index.meta.get("format") != FORMAT or not index.dimensions:
            index.close()
            raise ConfigError(
                field,
                f"{path} is empty: no chunk was ever embedded into it",
                "build it from documents with text: chatstep index build DOCS --step embed.yaml",
            )
        return index

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._conn:
            yield

    def set_meta(self, **values: str) -> None:
        with self._transaction():
            for key, value in values.items():
                self._conn.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
        self.meta.update(values)

    @property
    def dimensions(self) -> int | None:
        value = self.meta.get("dimensions")
        return int(value) if value else None

    @property
    def model(self) -> str | None:
        return self.meta.get("model")

    @property
    def embedding_step(self) -> dict[str, Any]:
        """The embedding step the index was built with (no ``input``, no literal key)."""
        return dict(json.loads(self.meta.get("embedding_step") or "{}"))

    def files(self) -> list[IndexedFile]:
        rows = self._conn.execute("SELECT source, digest, chunks FROM files ORDER BY source")
        return [IndexedFile(*row) for row in rows.fetchall()]

    def chunk_count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def _ensure_vectors(self, dimensions: int) -> None:
        if self.dimensions is None:
            self._conn.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS vectors USING "
                f"vec0(embedding float[{int(dimensions)}] distance_metric=cosine)"
            )
            self.set_meta(dimensions=str(dimensions))

    def _delete(self, source: str) -> None:
        ids = [
            row[0]
            for row in self._conn.execute("SELECT id FROM chunks WHERE source = ?", (source,))
        ]
        if ids and self.dimensions is not None:
            self._conn.executemany("DELETE FROM vectors WHERE rowid = ?", [(i,) for i in ids])
        self._conn.execute("DELETE FROM chunks WHERE source = ?", (source,))
        self._conn.execute("DELETE FROM files WHERE source = ?", (source,))

    def remove(self, sources: Sequence[str]) -> None:
        """Drop these files and their chunks."""
        with self._transaction():
            for source in sources:
                self._delete(source)

    def replace(self, files: Sequence[tuple[str, str, Sequence[Chunk]]]) -> None:
        """Store files' chunks (with vectors), replacing what the index held for them; one
        transaction (a commit waits for the disk: one per file would dominate a build)."""
        import sqlite_vec

        for _, _, chunks in files:
            if chunks:
                self._ensure_vectors(len(chunks[0].vector))
        with self._transaction():
            for source, digest, chunks in files:
                self._delete(source)
                self._conn.execute(
                    "INSERT INTO files(source, digest, chunks, indexed_at) VALUES (?, ?, ?, ?)",
                    (source, digest, len(chunks), time.time()),
                )
                self._insert_chunks(source, chunks, sqlite_vec.serialize_float32)

    def _insert_chunks(self, source: str, chunks: Sequence[Chunk], pack: Any) -> None:
        for chunk in chunks:
            cursor = self._conn.execute(
                "INSERT INTO chunks(source, chunk, start, line, text) VALUES (?, ?, ?, ?, ?)",
                (source, chunk.chunk, chunk.start, chunk.line, chunk.text),
            )
            self._conn.execute(
                "INSERT INTO vectors(rowid, embedding) VALUES (?, ?)",
                (cursor.lastrowid, pack(chunk.vector)),
            )

    def search(self, vector: Sequence[float], top_k: int) -> list[dict[str, Any]]:
        """The ``top_k`` nearest chunks: ``{text, source, score, chunk, line}``, best first."""
        import sqlite_vec

        rows = self._conn.execute(
            "SELECT c.text, c.source, v.distance, c.chunk, c.line "
            "FROM (SELECT rowid, distance FROM vectors WHERE embedding MATCH ? AND k = ?) v "
            "JOIN chunks c ON c.id = v.rowid ORDER BY v.distance, c.source, c.chunk",
            (sqlite_vec.serialize_float32(list(vector)), int(top_k)),
        ).fetchall()
        return [
            {
                "text": text,
                "source": source,
                "score": round(1.0 - float(distance), 6),
                "chunk": chunk,
                "line": line,
            }
            for text, source, distance, chunk, line in rows
        ]
