"""A journal of provider jobs: jobs submitted to a provider, kept as JSON in one SQLite file.

The batch journal (:class:`chatstep.batch.journal.BatchJournal`) and the fine-tuning journal
(:class:`chatstep.finetune.journal.FineTuneJournal`) share this: where the database sits,
one lock per journal, looking a job up by reference (``get``, a ConfigError when unknown)
and listing jobs newest first. Each subclass owns its schema (``_connect``), how a stored
row becomes a job (``_load``) and which ids ``find`` accepts.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from chatstep.errors import ConfigError

__all__ = ["ProviderJobJournal"]

J = TypeVar("J")


class ProviderJobJournal(Generic[J]):
    """Jobs of type ``J`` by id, in ``<directory>/<filename>`` (default: the user directory).

    Subclasses set ``filename`` (the SQLite file), ``job_kind`` and ``ref_hint`` (the
    "no <job_kind> ..." message of :meth:`get` and its fix), and implement ``_connect``,
    ``_load`` and ``find``.
    """

    filename: ClassVar[str]
    job_kind: ClassVar[str]
    ref_hint: ClassVar[str]

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._directory = Path(directory) if directory is not None else None
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The directory holding the database (and any files of the jobs)."""
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)
            return self._directory
        from chatstep.storage.paths import user_dir

        return user_dir()

    @property
    def path(self) -> Path:
        return self.root / self.filename

    def _connect(self) -> sqlite3.Connection:
        """An open connection to the database, its schema created."""
        raise NotImplementedError

    def _load(self, data: str) -> J:
        """The job stored as the JSON text ``data``."""
        raise NotImplementedError

    def find(self, ref: str) -> J | None:
        """The job known by ``ref``; else None."""
        raise NotImplementedError

    def get(self, ref: str) -> J:
        """Like :meth:`find`, but an unknown ``ref`` is a ConfigError."""
        job = self.find(ref)
        if job is None:
            raise ConfigError(
                "job",
                f"no {self.job_kind} {ref!r} in the journal {str(self.path)!r}",
                self.ref_hint,
            )
        return job

    def list(self, limit: int | None = 50) -> list[J]:
        """Jobs, newest first (at most ``limit``; None: all)."""
        with self._lock:
            if not self.path.exists():
                return []
            conn = self._connect()
            try:
                sql = "SELECT data FROM jobs ORDER BY created_at DESC, id DESC"
                params: tuple[Any, ...] = ()
                if limit is not None:
                    sql += " LIMIT ?"
                    params = (limit,)
                rows = conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        return [self._load(r[0]) for r in rows]
