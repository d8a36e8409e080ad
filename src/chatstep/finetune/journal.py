"""The fine-tuning journal: every submitted job, in SQLite, so later commands can find it.

A journaled job (``csf_...``) is one ``submit``: a training file (and maybe a validation file)
on one model with one set of hyperparameters. It is keyed by a hash of all of that plus where
it was sent (:func:`content_key`), so submitting the same inputs again returns the job already
created instead of paying for a second one; only a job that failed or was cancelled is
submitted anew. The claim is one SQLite transaction, so two processes submitting the same
inputs at once end up with one job.

The journal sits in ``finetunes.sqlite3`` under ``user_dir()``. No API key is stored: a job
remembers the *name* of the secret that holds its key (as batch jobs do).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatstep.batch.journal import BatchConnection
from chatstep.storage.job_journal import ProviderJobJournal

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "FineTuneJob",
    "FineTuneJournal",
    "FineTuneRef",
    "content_key",
    "new_job_id",
]

SCHEMA_VERSION = 1

#: Statuses of a job that will still change, in the order a job moves through them
#: (``submitting`` is chatstep's own: claimed in the journal, not yet created).
ACTIVE_STATUSES = ("submitting", "validating_files", "queued", "running", "pausing", "paused")
#: Statuses a job ends in.
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
#: Ended jobs whose inputs a new ``submit`` may send again.
_RESUBMITTABLE = ("failed", "cancelled")


def new_job_id() -> str:
    """A job id that sorts by creation time: ``csf_<time><random>``."""
    return f"csf_{int(time.time() * 1000):012x}{secrets.token_hex(3)}"


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """Whether the process that claimed a job (on this host) still runs."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's claim: treat it as abandoned after a crash
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_key(**parts: Any) -> str:
    """The hash a job is known by: its inputs as canonical JSON."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class FineTuneJob:
    """A submitted fine-tuning job, as last seen (``refresh`` with ``finetune_status``)."""

    id: str
    """chatstep's id (``csf_...``); ``job_id`` is the provider's (``ftjob-...``)."""
    content_key: str
    model: str
    """The base model asked for."""
    connection: BatchConnection
    training_file: str
    """The local training file submitted."""
    validation_file: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """``n_epochs``, ``batch_size``, ``learning_rate_multiplier`` as asked (absent: the
    provider's ``auto``); after training starts, as the provider resolved them."""
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    job_id: str | None = None
    training_file_id: str | None = None
    validation_file_id: str | None = None
    status: str = "submitting"
    fine_tuned_model: str | None = None
    """The model to use in later steps, once the job succeeded."""
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    """The provider's ``{code, message, param}`` when the job failed."""
    result_files: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    finished_at: int | None = None
    submit_error: str | None = None
    """Why submitting failed before the provider created the job, else None."""
    owner: str | None = None
    """``host:pid`` of the process submitting it (while ``submitting``)."""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES or (
            self.job_id is None and self.submit_error is not None
        )

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def update(self, remote: Mapping[str, Any]) -> None:
        """Take status, model, tokens, error and resolved hyperparameters from a job object."""
        for name in ("status", "fine_tuned_model"):
            value = remote.get(name)
            if isinstance(value, str) and value:
                setattr(self, name, value)
        job_id = remote.get("id")
        if isinstance(job_id, str) and job_id:
            self.job_id = job_id
        tokens = remote.get("trained_tokens")
        if isinstance(tokens, int) and not isinstance(tokens, bool):
            self.trained_tokens = tokens
        finished = remote.get("finished_at")
        if isinstance(finished, int) and not isinstance(finished, bool):
            self.finished_at = finished
        error = remote.get("error")
        if isinstance(error, Mapping) and (error.get("message") or error.get("code")):
            self.error = dict(error)
        files = remote.get("result_files")
        if isinstance(files, list):
            self.result_files = [str(f) for f in files]
        params = remote.get("hyperparameters")
        if isinstance(params, Mapping) and self.status not in ("submitting", "validating_files"):
            resolved = {k: v for k, v in params.items() if v is not None and v != "auto"}
            if resolved:
                self.hyperparameters = resolved

    def error_message(self) -> str | None:
        """The provider's error, or why submitting failed; None when nothing went wrong."""
        if self.error:
            return str(self.error.get("message") or self.error.get("code"))
        return self.submit_error

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; holds no secret."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["connection"] = self.connection.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FineTuneJob:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["connection"] = BatchConnection.from_dict(data.get("connection") or {})
        return cls(**values)


FineTuneRef = FineTuneJob | str
"""A job, its chatstep id (``csf_...``) or the provider's job id (``ftjob-...``)."""


class FineTuneJournal(ProviderJobJournal[FineTuneJob]):
    """Fine-tuning jobs by id, in SQLite under a directory (default: the user directory)."""

    filename = "finetunes.sqlite3"
    job_kind = "fine-tuning job"
    ref_hint = "pass a job id (csf_... or ftjob-...) shown by `chatstep finetune list`"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created_at REAL NOT NULL, "
                "content_key TEXT NOT NULL, job_id TEXT, status TEXT NOT NULL, data TEXT NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (content_key)")
            conn.execute("CREATE INDEX IF NOT EXISTS jobs_by_job_id ON jobs (job_id)")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        return conn

    @staticmethod
    def _write(conn: sqlite3.Connection, job: FineTuneJob) -> None:
        conn.execute(
            "INSERT INTO jobs (id, created_at, content_key, job_id, status, data) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET job_id = excluded.job_id, "
            "status = excluded.status, data = excluded.data",
            (
                job.id,
                job.created_at,
                job.content_key,
                job.job_id,
                job.status,
                json.dumps(job.to_dict(), sort_keys=True),
            ),
        )

    def claim(self, job: FineTuneJob, *, force: bool = False) -> tuple[FineTuneJob, bool]:
        """(the job to use, whether it is ``job`` itself, newly claimed).

        Returns the newest journaled job with the same content key unless it failed or was
        cancelled (or ``force``), else journals ``job`` (owned by this process), atomically.
        """
        job.owner = _owner()
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    row = conn.execute(
                        "SELECT data FROM jobs WHERE content_key = ? "
                        "ORDER BY created_at DESC, id DESC LIMIT 1",
                        (job.content_key,),
                    ).fetchone()
                    existing = None if row is None else FineTuneJob.from_dict(json.loads(row[0]))
                    if (
                        existing is not None
                        and not force
                        and existing.status not in _RESUBMITTABLE
                        and not (existing.job_id is None and existing.submit_error)
                    ):
                        if existing.job_id is None and not _owner_alive(existing.owner):
                            # Its submitter died before creating it: this process takes it over.
                            existing.owner = job.owner
                            self._write(conn, existing)
                            conn.execute("COMMIT")
                            return existing, True
                        conn.execute("COMMIT")
                        return existing, False
                    self._write(conn, job)
                    conn.execute("COMMIT")
                    return job, True
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            finally:
                conn.close()

    def _load(self, data: str) -> FineTuneJob:
        return FineTuneJob.from_dict(json.loads(data))

    def save(self, job: FineTuneJob) -> None:
        """Insert or update a job."""
        with self._lock:
            conn = self._connect()
            try:
                self._write(conn, job)
            finally:
                conn.close()

    def find(self, ref: str) -> FineTuneJob | None:
        """The job with chatstep id or provider job id ``ref``; else None."""
        with self._lock:
            if not self.path.exists():
                return None
            conn = self._connect()
            try:
                row = conn.execute(
                    "SELECT data FROM jobs WHERE id = ? OR job_id = ? "
                    "ORDER BY created_at DESC LIMIT 1",
                    (ref, ref),
                ).fetchone()
            finally:
                conn.close()
        return None if row is None else self._load(row[0])
