"""Apache Airflow: :class:`ChatStepBatchTrigger` polls a batch job on the triggerer.

:class:`~chatstep.integrations.airflow.operators.ChatStepBatchOperator` defers to it, so no
worker slot is held for the hours a batch can take. Its arguments, which Airflow stores in its
database, hold the job (ids, base URL, the *name* of the key's secret) and never the key: the
triggerer reads the key from the Airflow Connection (:class:`ChatStepHook`) when it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

try:
    from airflow.triggers.base import BaseTrigger, TriggerEvent
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "chatstep.integrations.airflow.triggers needs Apache Airflow 3, which is not installed "
        f'({exc}); install it with: pip install "chatstep[airflow]"'
    ) from exc

from chatstep.batch.api import abatch_status
from chatstep.batch.journal import BatchJob
from chatstep.durations import parse_duration
from chatstep.errors import ChatstepError
from chatstep.integrations.airflow.hook import DEFAULT_CONN_ID, ChatStepHook

__all__ = ["ChatStepBatchTrigger", "job_summary"]

_TRIGGER_PATH = f"{__name__}.ChatStepBatchTrigger"
"""What ``serialize`` stores. Triggers stored before the package was split name
``chatstep.integrations.airflow.batch.ChatStepBatchTrigger``; that module re-exports this class."""


def job_summary(job: BatchJob) -> str:
    """One line: the job's id, status and row counts."""
    counts = job.request_counts
    return (
        f"batch job {job.id} is {job.status}: {counts['completed']}/{job.row_count} rows done, "
        f"{counts['failed']} failed"
    )


class ChatStepBatchTrigger(BaseTrigger):  # type: ignore[misc]
    """Polls a batch job until every part has ended; fires one event with the job.

    ``poll_interval``: seconds between polls (or any duration ``parse_duration`` reads). The
    event is ``{"status": <the job's status>, "job": <job dict>}``, or ``{"status": "error",
    "message": ..., "job": ...}`` when polling failed (the batch may still be running).
    """

    def __init__(
        self,
        job: Mapping[str, Any],
        conn_id: str | None = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__()
        self.job = dict(job)
        self.conn_id = conn_id
        self.poll_interval = parse_duration(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Stored in Airflow's database: the job holds ids, the base URL and the key's secret
        # name, never the key (BatchJob.to_dict).
        kwargs = {"job": self.job, "conn_id": self.conn_id, "poll_interval": self.poll_interval}
        return _TRIGGER_PATH, kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        job = BatchJob.from_dict(self.job)
        try:
            secrets = await ChatStepHook(self.conn_id).asecret_store()
            while True:
                job = await abatch_status(job, secrets=secrets)
                self.log.info("%s", job_summary(job))
                if job.done:
                    break
                await asyncio.sleep(self.poll_interval)
        except (ChatstepError, OSError) as exc:
            yield TriggerEvent({"status": "error", "message": str(exc), "job": job.to_dict()})
            return
        yield TriggerEvent({"status": job.status, "job": job.to_dict()})
