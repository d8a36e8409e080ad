"""Apache Airflow: :class:`ChatStepBatchOperator` runs rows through the OpenAI Batch API.

Needs the extra: ``pip install "chatstep[airflow]"`` (Airflow 3)::

    from chatstep.integrations.airflow.batch import ChatStepBatchOperator

    triage = ChatStepBatchOperator(
        task_id="triage",
        step="steps/triage.yaml",
        rows="/data/reviews/{{ ds }}.jsonl",       # or a list of dicts
        output_file="/data/triaged/{{ ds }}.jsonl",
    )

``execute`` renders every row through the step (as ``chatstep batch submit`` does), uploads and
creates the batch(es), then **defers**: a :class:`ChatStepBatchTrigger` polls the job on the
triggerer, so no worker slot is held for the hours a batch can take. When the job ends the task
resumes on a worker, downloads the results and joins them to the rows in input order, one JSON
row each (``content``, ``parsed``, ``usage``, ``cost``, ``error``...), written to
``output_file`` (default: ``results.jsonl`` in the job's directory under the chatstep user
directory of that worker).
``deferrable=False`` polls on the worker instead.

XCom ``return_value``: ``{"job_id", "output", "rows", "succeeded", "failed", "cost_usd"}``; the
job id is also pushed under ``chatstep_batch_job`` as soon as it is submitted, so
``chatstep batch status|cancel <job id>`` can reach it from anywhere with the same key.

The task resumes on whichever worker is free, so ``rows`` must be readable there too (shared
storage, or rows given inline). The key comes from the Airflow Connection (``conn_id``, default
``openai_default``: password = key, host = base URL) on the worker and on the triggerer; trigger
arguments, which Airflow stores in its database, hold the job (ids, base URL, the *name* of the
key's secret) and never the key. A batch that ends ``failed``, ``expired`` or ``cancelled``
fails the task, naming the job and the API's errors. When ``wait_timeout`` passes, the task fails
and the batch keeps running (cancel it with ``chatstep batch cancel``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

try:
    from airflow.sdk import BaseHook, BaseOperator
    from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException
    from airflow.triggers.base import BaseTrigger, TriggerEvent
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "chatstep.integrations.airflow.batch needs Apache Airflow 3, which is not installed "
        f'({exc}); install it with: pip install "chatstep[airflow]"'
    ) from exc

from chatstep.batch.api import (
    BatchLimits,
    PollSchedule,
    abatch_results,
    abatch_status,
    apoll_batch,
    asubmit_batch,
)
from chatstep.batch.journal import BatchJob
from chatstep.errors import ChatstepError
from chatstep.integrations.airflow.operators import (
    DEFAULT_CONN_ID,
    connection_secret_store,
    connection_values,
)
from chatstep.secrets import SecretStore, default_secret_store
from chatstep.steps.definitions import Step
from chatstep.steps.loading import load_step

__all__ = ["JOB_XCOM_KEY", "ChatStepBatchOperator", "ChatStepBatchTrigger"]

JOB_XCOM_KEY = "chatstep_batch_job"
_TRIGGER_PATH = f"{__name__}.ChatStepBatchTrigger"


def _summary(job: BatchJob) -> str:
    counts = job.request_counts
    return (
        f"batch job {job.id} is {job.status}: {counts['completed']}/{job.row_count} rows done, "
        f"{counts['failed']} failed"
    )


def _api_errors(job: BatchJob) -> str:
    errors = job.error_messages()
    return f": {'; '.join(errors)}" if errors else ""


class ChatStepBatchTrigger(BaseTrigger):  # type: ignore[misc]
    """Polls a batch job until every part has ended; fires one event with the job."""

    def __init__(
        self,
        job: Mapping[str, Any],
        conn_id: str | None = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__()
        self.job = dict(job)
        self.conn_id = conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Stored in Airflow's database: the job holds ids, the base URL and the key's secret
        # name, never the key (BatchJob.to_dict).
        kwargs = {"job": self.job, "conn_id": self.conn_id, "poll_interval": self.poll_interval}
        return _TRIGGER_PATH, kwargs

    async def _secrets(self) -> SecretStore:
        values: dict[str, str] = {}
        if self.conn_id:
            try:
                values = connection_values(await BaseHook.aget_connection(self.conn_id))
            except AirflowNotFoundException:
                if self.conn_id != DEFAULT_CONN_ID:
                    raise
        return default_secret_store().in_front(values, f"Airflow connection {self.conn_id!r}")

    async def run(self) -> AsyncIterator[TriggerEvent]:
        job = BatchJob.from_dict(self.job)
        try:
            secrets = await self._secrets()
            while True:
                job = await abatch_status(job, secrets=secrets)
                self.log.info("%s", _summary(job))
                if job.done:
                    break
                await asyncio.sleep(self.poll_interval)
        except (ChatstepError, OSError) as exc:
            yield TriggerEvent({"status": "error", "message": str(exc), "job": job.to_dict()})
            return
        yield TriggerEvent({"status": job.status, "job": job.to_dict()})


class ChatStepBatchOperator(BaseOperator):  # type: ignore[misc]
    """Submit rows through a step as a batch job, wait (deferred), join and write the results."""

    template_fields: Sequence[str] = ("rows", "output_file", "conn_id", "metadata")
    ui_color = "#d9e8f2"

    def __init__(
        self,
        *,
        step: Step | Mapping[str, Any] | str | Path | None,
        rows: str | Path | Sequence[Mapping[str, Any]],
        output_file: str | Path | None = None,
        conn_id: str | None = DEFAULT_CONN_ID,
        deferrable: bool = True,
        poll_interval: float = 60.0,
        wait_timeout: timedelta | float | None = None,
        metadata: Mapping[str, str] | None = None,
        limits: BatchLimits | None = None,
        **kwargs: Any,
    ) -> None:
        """``step`` None: the rows are already Batch API request lines. ``poll_interval``:
        seconds between status checks. ``wait_timeout``: give up waiting (the batch keeps
        running) after this long."""
        super().__init__(**kwargs)
        # Loaded when the DAG is parsed, so a broken step is a DAG import error.
        self.step = load_step(step) if step is not None else None
        self.rows: Any = rows
        self.output_file: Any = output_file
        self.conn_id = conn_id
        self.deferrable = deferrable
        if poll_interval <= 0:
            raise ValueError("poll_interval must be a positive number of seconds, e.g. 60")
        self.poll_interval = float(poll_interval)
        if isinstance(wait_timeout, int | float):
            wait_timeout = timedelta(seconds=wait_timeout)
        self.wait_timeout = wait_timeout
        self.metadata: Any = dict(metadata or {})
        self.limits = limits

    def _rows(self) -> Any:
        rows = self.rows
        return Path(rows) if isinstance(rows, str) else rows

    def execute(self, context: Any) -> Any:
        """Submit the job, then defer to the trigger (or poll here when not deferrable)."""
        from chatstep.core.calls import run_sync

        secrets = connection_secret_store(self.conn_id, self.log)
        rows = self._rows()
        job = run_sync(
            asubmit_batch(
                self.step,
                rows,
                secrets=secrets,
                limits=self.limits,
                metadata=self.metadata or None,
                source=str(rows) if isinstance(rows, Path) else None,
            )
        )
        self.log.info(
            "chatstep submitted batch job %s: %d rows in %d batch(es) %s",
            job.id,
            job.row_count,
            len(job.parts),
            [p.batch_id for p in job.parts],
        )
        context["ti"].xcom_push(key=JOB_XCOM_KEY, value=job.id)
        if self.deferrable:
            self.defer(
                trigger=ChatStepBatchTrigger(job.to_dict(), self.conn_id, self.poll_interval),
                method_name="execute_complete",
                timeout=self.wait_timeout,
            )
        timeout = None if self.wait_timeout is None else self.wait_timeout.total_seconds()
        schedule = PollSchedule(initial=min(5.0, self.poll_interval), maximum=self.poll_interval)
        try:
            job = run_sync(apoll_batch(job, poll=schedule, timeout=timeout, secrets=secrets))
        except TimeoutError as exc:
            raise AirflowException(str(exc)) from None
        return self._finish(job, secrets)

    def execute_complete(self, context: Any, event: Mapping[str, Any]) -> Any:
        """Resume after the trigger fired: fail on a failed job, else join the results."""
        job = BatchJob.from_dict(event["job"])
        if event["status"] == "error":
            raise AirflowException(
                f"polling batch job {job.id} failed: {event.get('message')} "
                f"(the batch may still be running: chatstep batch status {job.id})"
            )
        return self._finish(job, connection_secret_store(self.conn_id, self.log))

    def _finish(self, job: BatchJob, secrets: SecretStore) -> dict[str, Any]:
        from chatstep.core.calls import run_sync

        if job.status != "completed":
            raise AirflowException(_summary(job) + _api_errors(job))
        started = time.monotonic()
        results = run_sync(
            abatch_results(job, self.output_file, rows=self._rows(), secrets=secrets)
        )
        cost = "unknown" if results.cost is None else f"{results.cost:.6f}"
        self.log.info(
            "chatstep batch job %s: %d rows, %d succeeded, %d failed, cost_usd=%s (batch "
            "price); results joined in %.1fs to %s",
            job.id,
            results.rows,
            results.succeeded,
            results.failed,
            cost,
            time.monotonic() - started,
            results.path,
        )
        return {
            "job_id": job.id,
            "output": str(results.path),
            "rows": results.rows,
            "succeeded": results.succeeded,
            "failed": results.failed,
            "cost_usd": results.cost,
        }
