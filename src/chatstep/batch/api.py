"""The OpenAI Batch API: one request per row, at half the price, in its own rate-limit pool.

::

    job = submit_batch("classify.yaml", "rows.jsonl")   # render, split, upload, create, journal
    job = poll_batch(job, on_progress=print)             # poll with backoff until it ends
    results = batch_results(job)                         # download, join by custom_id, in order
    for row in results:                                  # one joined row per input row
        print(row["index"], row["ok"], row["content"], row["error"])

A job is one step over one set of rows. Each row renders to one request through the same
pipeline as :func:`chatstep.run_step` (``AsyncRunner.prepare``), so a step behaves the same in a
batch. Inputs over 50,000 requests or 200 MB (:class:`BatchLimits`) are split into several
batches and reassembled: the caller sees one job. Jobs are kept in the :class:`BatchJournal`, so
``status``, ``wait``, ``results`` and ``cancel`` work from another process, days later. The API
key is never stored; it is looked up again by the name of its secret.

Cancelling the task that polls (``apoll_batch``) cancels the batch; ``cancel_on_cancel=False``
leaves it running. Costs are priced at the Batch API's discount.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatstep.batch.client import cancel_parts, client_for, job_for, refresh_job
from chatstep.batch.files import BatchLimits
from chatstep.batch.journal import BatchJob, BatchJournal, JobRef
from chatstep.batch.polling import poll_job
from chatstep.batch.results import BatchResults, abatch_results
from chatstep.batch.submit import asubmit_batch
from chatstep.core.blocking import sync_twin

if TYPE_CHECKING:
    from chatstep.secrets import SecretStore

__all__ = [
    "BatchJob",
    "BatchJournal",
    "BatchLimits",
    "BatchResults",
    "PollSchedule",
    "abatch_results",
    "abatch_status",
    "acancel_batch",
    "apoll_batch",
    "asubmit_batch",
    "batch_results",
    "batch_status",
    "cancel_batch",
    "list_batches",
    "poll_batch",
    "submit_batch",
]

ProgressCallback = Callable[[BatchJob], Any]


@dataclass(frozen=True)
class PollSchedule:
    """How often ``wait`` asks: ``initial`` seconds, growing by ``factor`` up to ``maximum``."""

    initial: float = 5.0
    factor: float = 1.5
    maximum: float = 60.0

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum)


submit_batch = sync_twin(asubmit_batch)


# --- status, wait, cancel ----------------------------------------------------------------------


async def abatch_status(
    job: JobRef,
    *,
    secrets: SecretStore | None = None,
    journal: BatchJournal | None = None,
    api_key: str | None = None,
) -> BatchJob:
    """The job, refreshed from the API (and saved in the journal)."""
    journal = journal or BatchJournal()
    current = job_for(job, journal)
    if current.done:
        return current
    async with client_for(current, secrets, api_key) as client:
        await refresh_job(client, current, journal)
    return current


batch_status = sync_twin(abatch_status)


async def apoll_batch(
    job: JobRef,
    *,
    poll: PollSchedule | None = None,
    timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
    cancel_on_cancel: bool = True,
    secrets: SecretStore | None = None,
    journal: BatchJournal | None = None,
    api_key: str | None = None,
) -> BatchJob:
    """Poll until every part of the job has ended; returns the job, however it ended.

    ``on_progress(job)`` is called after each poll. Cancelling this task cancels the batch
    unless ``cancel_on_cancel`` is False. After ``timeout`` seconds a :class:`TimeoutError` is
    raised and the batch keeps running.
    """
    journal = journal or BatchJournal()
    current = job_for(job, journal)
    schedule = (poll or PollSchedule()).delays()
    deadline = None if timeout is None else time.monotonic() + timeout
    async with client_for(current, secrets, api_key) as client:

        async def refresh() -> None:
            await refresh_job(client, current, journal)

        async def cancel() -> None:
            await cancel_parts(client, current, journal)

        return await poll_job(
            current,
            refresh,
            schedule=schedule,
            deadline=deadline,
            timeout=timeout,
            on_progress=on_progress,
            on_cancel=cancel if cancel_on_cancel else None,
            kind="batch job",
            keeps="running",
        )


poll_batch = sync_twin(
    apoll_batch,
    "Synchronous :func:`apoll_batch` (Ctrl-C cancels the batch unless ``cancel_on_cancel``).",
)


async def acancel_batch(
    job: JobRef,
    *,
    secrets: SecretStore | None = None,
    journal: BatchJournal | None = None,
    api_key: str | None = None,
) -> BatchJob:
    """Ask the API to cancel every part still running; returns the job (``cancelling``)."""
    journal = journal or BatchJournal()
    current = job_for(job, journal)
    async with client_for(current, secrets, api_key) as client:
        await cancel_parts(client, current, journal)
    return current


cancel_batch = sync_twin(acancel_batch)


def list_batches(journal: BatchJournal | None = None, limit: int | None = 50) -> list[BatchJob]:
    """Journaled jobs, newest first, as last seen (no API call)."""
    return (journal or BatchJournal()).list(limit)


batch_results = sync_twin(abatch_results)
