"""The batch journal: every submitted batch job, in SQLite, so later commands can find it.

A *job* is one ``submit``: one step over one input file. Inputs over the Batch API's limits are
split into several OpenAI batches, the job's *parts*. The journal keeps each job as a JSON
document (ids, statuses, request counts, where to connect) plus an index from OpenAI batch ids
to jobs, in ``batches.sqlite3`` under ``user_dir()``; each job's files (a copy
of its input rows, downloaded output and error files, joined results) sit in ``batches/<job>/``.

No API key is ever stored: a job remembers the *name* of the secret that holds its key.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.errors import ConfigError, redact
from chatstep.storage.job_journal import ProviderJobJournal

if TYPE_CHECKING:
    from chatstep.core.connection import Connection
    from chatstep.secrets import SecretStore

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "BatchConnection",
    "BatchJob",
    "BatchJournal",
    "BatchPart",
    "JobRef",
    "new_job_id",
]

SCHEMA_VERSION = 1

#: Statuses of a batch that will still change, in the order a batch moves through them.
ACTIVE_STATUSES = ("submitting", "validating", "in_progress", "finalizing", "cancelling")
#: Statuses a batch ends in.
TERMINAL_STATUSES = ("completed", "failed", "expired", "cancelled")

# Header names that carry credentials: never written to the journal.
_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "openai-api-key"})
_SECRET_TEMPLATE = re.compile(
    r"""^\{\{\s*(?:secret\(\s*['"]([^'"]+)['"]\s*\)|secrets\.([A-Za-z0-9_]+)"""
    r"""|secrets\[\s*['"]([^'"]+)['"]\s*\])\s*\}\}$"""
)


def new_job_id() -> str:
    """A job id that sorts by creation time: ``csb_<time><random>``."""
    return f"csb_{int(time.time() * 1000):012x}{secrets.token_hex(3)}"


def key_secret_name(api_key_field: str | None) -> str | None:
    """The secret a step's ``api_key`` names (``{{ secret('X') }}``), the default, or None.

    None means the step held a literal key, which the journal does not keep.
    """
    if api_key_field is None:
        return "OPENAI_API_KEY"
    match = _SECRET_TEMPLATE.match(api_key_field.strip())
    if match is None:
        return None
    return next(group for group in match.groups() if group)


@dataclass(frozen=True)
class BatchConnection:
    """Where a job's batches live, without the key: the key is looked up again by name."""

    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    api_key_secret: str | None = "OPENAI_API_KEY"
    """The secret holding the key; None when the step gave a literal key (not stored)."""
    timeout: float = 60.0
    max_retries: int = 5
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    api_version: str | None = None
    """Azure OpenAI's ``api-version`` (None: not Azure)."""

    @classmethod
    def from_connection(cls, conn: Connection, api_key_secret: str | None) -> BatchConnection:
        """The storable part of a resolved connection."""
        headers = tuple(
            (name, value)
            for name, value in conn.headers
            if name.lower() not in _SECRET_HEADERS and redact(value) == value
        )
        return cls(
            base_url=conn.base_url,
            organization=conn.organization,
            project=conn.project,
            api_key_secret=api_key_secret,
            timeout=conn.timeout,
            max_retries=conn.max_retries,
            headers=headers,
            query=conn.query,
            api_version=conn.api_version,
        )

    def resolve(self, secrets: SecretStore, api_key: str | None = None) -> Connection:
        """A connection to call with: this one plus the key, given or looked up by name."""
        from chatstep.core.connection import NO_KEY_PLACEHOLDER, Connection
        from chatstep.errors import register_secret

        key = api_key
        if key is None and self.api_version and self.api_key_secret == "OPENAI_API_KEY":
            # The SDK's Azure convention, as resolve_connection follows it.
            key = secrets.find("AZURE_OPENAI_API_KEY", "api_key")
        if key is None:
            key = secrets.find(self.api_key_secret or "OPENAI_API_KEY", "api_key")
        if key is None and self.base_url is None:
            name = self.api_key_secret or "OPENAI_API_KEY"
            held = "" if self.api_key_secret else " (the step's literal key is not stored)"
            raise ConfigError(
                "api_key",
                f"no API key for this batch job{held}: the secret {name!r} was not found "
                f"(searched: {secrets.searched})",
                f"set {name} in the environment, .env or the secrets directory, or pass api_key=",
            )
        if key is not None:
            register_secret(key)
        return Connection(
            backend="openai",
            api_key=key or NO_KEY_PLACEHOLDER,
            base_url=self.base_url,
            organization=self.organization,
            project=self.project,
            timeout=self.timeout,
            max_retries=self.max_retries,
            headers=self.headers,
            query=self.query,
            api_version=self.api_version,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["headers"] = [list(pair) for pair in self.headers]
        out["query"] = [list(pair) for pair in self.query]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchConnection:
        values = dict(data)
        values["headers"] = tuple(tuple(pair) for pair in values.get("headers") or ())
        values["query"] = tuple(tuple(pair) for pair in values.get("query") or ())
        return cls(**values)


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {k: int(v) for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


@dataclass
class BatchPart:
    """One OpenAI batch: a slice of the job's rows, ``first_row`` to ``first_row + row_count``."""

    index: int
    batch_id: str
    input_file_id: str
    first_row: int
    row_count: int
    status: str = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def update(self, batch: Mapping[str, Any]) -> None:
        """Take status, files, counts and errors from a retrieved ``batch`` object."""
        status = batch.get("status")
        if isinstance(status, str):
            self.status = status
        for name in ("output_file_id", "error_file_id"):
            value = batch.get(name)
            if isinstance(value, str) and value:
                setattr(self, name, value)
        counts = _counts(batch.get("request_counts"))
        if counts:
            self.request_counts = counts
        errors = batch.get("errors")
        data = errors.get("data") if isinstance(errors, Mapping) else None
        if isinstance(data, list):
            self.errors = [dict(e) for e in data if isinstance(e, Mapping)]
        usage = batch.get("usage")
        if isinstance(usage, Mapping):
            self.usage = dict(usage)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchPart:
        return cls(**dict(data))


def _aggregate_status(statuses: list[str]) -> str:
    active = [s for s in statuses if s not in TERMINAL_STATUSES]
    if active:
        # The least advanced part says where the job is.
        order = {s: i for i, s in enumerate(ACTIVE_STATUSES)}
        return min(active, key=lambda s: order.get(s, -1))
    for status in ("failed", "expired", "cancelled"):
        if status in statuses:
            return status
    return "completed"


@dataclass
class BatchJob:
    """A submitted job: one step over one set of rows, in one or more OpenAI batches."""

    id: str
    endpoint: str
    """``/v1/chat/completions``, ``/v1/embeddings`` or ``/v1/moderations``."""
    model: str
    row_count: int
    connection: BatchConnection
    parts: list[BatchPart] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    step_id: str | None = None
    source: str | None = None
    """Where the rows came from (a file path), for people reading ``list``."""
    custom_ids: str = "row"
    """``row``: custom ids are ``row-<index>``; ``given``: the input rows are Batch request
    lines whose own ``custom_id`` is kept."""
    metadata: dict[str, str] = field(default_factory=dict)
    submit_error: str | None = None
    """Why submitting failed part-way (its created parts were cancelled), else None."""
    response_format: dict[str, Any] | None = None
    """The rows' JSON output format (json_object / json_schema), so results are parsed and
    validated as ``run`` and ``map`` do; None for text, or when rows ask for different ones."""
    directory: Path | None = field(default=None, compare=False)
    """Where the job's files are (set by the journal; not stored)."""

    @property
    def status(self) -> str:
        """The job's status: the least advanced part's while any runs, else how it ended."""
        if not self.parts:
            return "failed" if self.submit_error else "submitting"
        return _aggregate_status([p.status for p in self.parts])

    @property
    def done(self) -> bool:
        if not self.parts:
            return self.submit_error is not None
        return all(p.done for p in self.parts)

    @property
    def batch_ids(self) -> list[str]:
        return [p.batch_id for p in self.parts]

    def error_messages(self, per_part: int = 3) -> list[str]:
        """The API's batch-level errors (a failed input file, say), the first few of each part."""
        return [
            str(e.get("message") or e.get("code")) for p in self.parts for e in p.errors[:per_part]
        ]

    @property
    def request_counts(self) -> dict[str, int]:
        """``total``, ``completed`` and ``failed``, summed over the parts."""
        totals = {"total": 0, "completed": 0, "failed": 0}
        for part in self.parts:
            # The row count is known from the start; the server reports 0 while validating.
            totals["total"] += part.row_count
            totals["completed"] += part.request_counts.get("completed", 0)
            totals["failed"] += part.request_counts.get("failed", 0)
        return totals

    def part_for_row(self, index: int) -> BatchPart | None:
        for part in self.parts:
            if part.first_row <= index < part.first_row + part.row_count:
                return part
        return None

    def custom_id(self, index: int, row: Mapping[str, Any]) -> str:
        """The custom id of row ``index``."""
        if self.custom_ids == "given":
            return str(row.get("custom_id"))
        return f"row-{index}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; holds no secret."""
        return {
            "id": self.id,
            "status": self.status,
            "endpoint": self.endpoint,
            "model": self.model,
            "row_count": self.row_count,
            "request_counts": self.request_counts,
            "created_at": self.created_at,
            "step_id": self.step_id,
            "source": self.source,
            "custom_ids": self.custom_ids,
            "metadata": dict(self.metadata),
            "submit_error": self.submit_error,
            "response_format": self.response_format,
            "connection": self.connection.to_dict(),
            "parts": [asdict(p) for p in self.parts],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchJob:
        return cls(
            id=str(data["id"]),
            endpoint=str(data["endpoint"]),
            model=str(data.get("model") or ""),
            row_count=int(data["row_count"]),
            connection=BatchConnection.from_dict(data.get("connection") or {}),
            parts=[BatchPart.from_dict(p) for p in data.get("parts") or []],
            created_at=float(data.get("created_at") or 0.0),
            step_id=data.get("step_id"),
            source=data.get("source"),
            custom_ids=str(data.get("custom_ids") or "row"),
            metadata=dict(data.get("metadata") or {}),
            submit_error=data.get("submit_error"),
            response_format=data.get("response_format"),
        )


JobRef = BatchJob | str
"""A job, or its id (``csb_...``), or the id of one of its OpenAI batches (``batch_...``)."""


class BatchJournal(ProviderJobJournal[BatchJob]):
    """Batch jobs by id, in SQLite under a directory (default: the chatstep user directory)."""

    filename = "batches.sqlite3"
    job_kind = "batch job"
    ref_hint = "pass a job id (csb_...) or batch id (batch_...) shown by `chatstep batch list`"

    def job_dir(self, job_id: str) -> Path:
        """The job's own directory (created)."""
        path = self.root / "batches" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            with conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, created_at REAL NOT "
                    "NULL, status TEXT NOT NULL, data TEXT NOT NULL)"
                )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS batch_ids (batch_id TEXT PRIMARY KEY, "
                    "job_id TEXT NOT NULL REFERENCES jobs(id))"
                )
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return conn

    def save(self, job: BatchJob) -> None:
        """Insert or update a job."""
        # No redaction pass here: a job holds no key by construction, and redact() would also
        # mask values looked up through the secret store, such as OPENAI_BASE_URL.
        data = json.dumps(job.to_dict(), sort_keys=True)
        with self._lock:
            conn = self._connect()
            try:
                with conn:
                    conn.execute(
                        "INSERT INTO jobs (id, created_at, status, data) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET status = excluded.status, "
                        "data = excluded.data",
                        (job.id, job.created_at, job.status, data),
                    )
                    conn.executemany(
                        "INSERT OR IGNORE INTO batch_ids (batch_id, job_id) VALUES (?, ?)",
                        [(batch_id, job.id) for batch_id in job.batch_ids],
                    )
            finally:
                conn.close()
        job.directory = self.root / "batches" / job.id

    def _load(self, data: str) -> BatchJob:
        job = BatchJob.from_dict(json.loads(data))
        job.directory = self.root / "batches" / job.id
        return job

    def find(self, ref: str) -> BatchJob | None:
        """The job with id ``ref``, or the job holding the OpenAI batch ``ref``; else None."""
        with self._lock:
            if not self.path.exists():
                return None
            conn = self._connect()
            try:
                row = conn.execute("SELECT data FROM jobs WHERE id = ?", (ref,)).fetchone()
                if row is None:
                    row = conn.execute(
                        "SELECT jobs.data FROM batch_ids JOIN jobs ON jobs.id = batch_ids.job_id "
                        "WHERE batch_ids.batch_id = ?",
                        (ref,),
                    ).fetchone()
            finally:
                conn.close()
        return None if row is None else self._load(row[0])
