"""Fine-tuning: prepare a training file from rows, submit a job, wait, use the model.

::

    data = prepare_finetune("triage.yaml", "labelled.jsonl", "train.jsonl", target="label")
    job = submit_finetune(data.training_file, model="gpt-4o-mini", n_epochs=3, suffix="triage")
    job = poll_finetune(job, on_progress=print)       # validating_files, queued, running...
    run_step("triage.yaml", inputs, ...)               # with model=job.fine_tuned_model

A job is checked locally first (every line, the minimum of 10 examples), then its files are
uploaded (``purpose="fine-tune"``) and the job created. Jobs are kept in the
:class:`FineTuneJournal`, keyed by a hash of their inputs: submitting the same files with the
same settings again returns the job already created (unless it failed or was cancelled, or
``force=True``), from any process. ``status``, ``wait``, ``cancel`` and ``events`` work from
another process, days later. The API key is never stored; it is looked up again by the name of
its secret.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.batch.api import PollSchedule
from chatstep.batch.journal import BatchConnection
from chatstep.batch.polling import poll_job
from chatstep.core.blocking import sync_twin
from chatstep.errors import APIError, ConfigError
from chatstep.finetune.client import FineTuneClient, client_for
from chatstep.finetune.journal import (
    FineTuneJob,
    FineTuneJournal,
    FineTuneRef,
    content_key,
    file_digest,
    new_job_id,
)
from chatstep.finetune.prepare import FineTuneData, check_training_file, prepare_finetune

if TYPE_CHECKING:
    from chatstep.core.retry import RetryPolicy
    from chatstep.secrets import SecretStore

__all__ = [
    "FineTuneData",
    "FineTuneJob",
    "FineTuneJournal",
    "acancel_finetune",
    "afinetune_events",
    "afinetune_status",
    "apoll_finetune",
    "asubmit_finetune",
    "cancel_finetune",
    "finetune_events",
    "finetune_status",
    "list_finetunes",
    "poll_finetune",
    "prepare_finetune",
    "submit_finetune",
]

ProgressCallback = Callable[[FineTuneJob], Any]
_MAX_USER_METADATA = 15  # a job takes 16 keys; chatstep uses one


def _hyperparameters(
    n_epochs: int | None, batch_size: int | None, learning_rate_multiplier: float | None
) -> dict[str, Any]:
    given = {
        "n_epochs": (n_epochs, 1, 50),
        "batch_size": (batch_size, 1, 256),
        "learning_rate_multiplier": (learning_rate_multiplier, None, None),
    }
    out: dict[str, Any] = {}
    for name, (value, low, high) in given.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(name, f"is {value!r}", "give a positive number, or leave it out")
        if low is not None and high is not None and not (low <= value <= high):
            raise ConfigError(
                name, f"is {value}", f"give a whole number from {low} to {high} (or leave it out)"
            )
        out[name] = value
    return out


def finetune_connection(secrets: SecretStore, model: str) -> tuple[Any, BatchConnection]:
    """The default connection (environment, .env, secrets) and its storable part."""
    from chatstep.core.connection import resolve_connection
    from chatstep.steps.definitions import ChatCompletion

    conn = resolve_connection(ChatCompletion(model=model, prompt="-", backend="openai"), secrets)
    if conn.backend != "openai":
        raise ConfigError(
            "backend",
            "fine-tuning needs an OpenAI-compatible endpoint, and none is configured",
            "set OPENAI_API_KEY (or OPENAI_BASE_URL)",
        )
    return conn, BatchConnection.from_connection(conn, "OPENAI_API_KEY")


async def asubmit_finetune(
    training_file: str | Path | FineTuneData,
    *,
    model: str,
    validation_file: str | Path | None = None,
    n_epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate_multiplier: float | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    metadata: Mapping[str, str] | None = None,
    force: bool = False,
    check: bool = True,
    secrets: SecretStore | None = None,
    journal: FineTuneJournal | None = None,
    retry: RetryPolicy | None = None,
) -> FineTuneJob:
    """Check the files, upload them, create the job, journal it; returns the job.

    Hyperparameters left None are the provider's ``auto``. The same inputs submitted again
    return the journaled job (no second job) unless it failed or was cancelled, or ``force``.
    ``check=False`` skips the local line checks (the provider still checks). Raises
    :class:`TrainingDataError` for a bad file, :class:`ConfigError` for bad settings, and the
    API's errors (the job is then journaled with ``submit_error``).
    """
    from chatstep.secrets import default_secret_store

    if isinstance(training_file, FineTuneData):
        validation_file = validation_file or training_file.validation_file
        training_file = training_file.training_file
    train_path = Path(training_file)
    valid_path = Path(validation_file) if validation_file is not None else None
    params = _hyperparameters(n_epochs, batch_size, learning_rate_multiplier)
    if suffix is not None and not 1 <= len(suffix) <= 64:
        raise ConfigError("suffix", f"is {len(suffix)} characters", "use 1 to 64 characters")
    if metadata is not None and len(metadata) > _MAX_USER_METADATA:
        raise ConfigError(
            "metadata", f"has {len(metadata)} keys", f"keep at most {_MAX_USER_METADATA} keys"
        )
    if check:
        check_training_file(train_path, model)
        if valid_path is not None:
            check_training_file(valid_path, model, minimum=1)
    store = secrets if secrets is not None else default_secret_store()
    conn, stored_conn = finetune_connection(store, model)
    journal = journal or FineTuneJournal()
    key = content_key(
        training=file_digest(train_path),
        validation=None if valid_path is None else file_digest(valid_path),
        model=model,
        hyperparameters=params,
        suffix=suffix,
        seed=seed,
        metadata=dict(metadata or {}),
        endpoint=[conn.base_url, conn.organization, conn.project],
    )
    fresh = FineTuneJob(
        id=new_job_id(),
        content_key=key,
        model=model,
        connection=stored_conn,
        training_file=str(train_path),
        validation_file=None if valid_path is None else str(valid_path),
        hyperparameters=params,
        suffix=suffix,
        seed=seed,
        metadata=dict(metadata or {}),
    )
    job, ours = journal.claim(fresh, force=force)
    if not ours:
        return job
    async with FineTuneClient(conn, retry=retry) as client:
        try:
            await _create(client, job, journal, train_path, valid_path)
        except BaseException as exc:
            job.submit_error = f"{type(exc).__name__}: {exc}"
            job.owner = None
            journal.save(job)
            raise
    return job


async def _create(
    client: FineTuneClient,
    job: FineTuneJob,
    journal: FineTuneJournal,
    train_path: Path,
    valid_path: Path | None,
) -> None:
    tags = {**job.metadata, "chatstep_job": job.id}
    # A submitter that died after creating the job (before journaling it) left it findable.
    found = await client.find(tags) if job.training_file_id else None
    if found is None:
        if job.training_file_id is None:
            job.training_file_id = str((await client.upload(train_path))["id"])
        if valid_path is not None and job.validation_file_id is None:
            job.validation_file_id = str((await client.upload(valid_path))["id"])
        journal.save(job)
        body: dict[str, Any] = {
            "model": job.model,
            "training_file": job.training_file_id,
            "method": {
                "type": "supervised",
                "supervised": {"hyperparameters": job.hyperparameters},
            },
        }
        for name, value in (
            ("validation_file", job.validation_file_id),
            ("suffix", job.suffix),
            ("seed", job.seed),
        ):
            if value is not None:
                body[name] = value
        found = await client.create(body, tags)
    job.update(found)
    job.owner = None
    journal.save(job)


def _current(job: FineTuneRef, journal: FineTuneJournal) -> FineTuneJob:
    return job if isinstance(job, FineTuneJob) else journal.get(job)


async def _refresh(client: FineTuneClient, job: FineTuneJob, journal: FineTuneJournal) -> None:
    if job.job_id is None:
        # Another process is still creating it: take what it journaled since.
        latest = journal.find(job.id)
        if latest is not None:
            job.__dict__.update(latest.__dict__)
        return
    job.update(await client.retrieve(job.job_id))
    journal.save(job)


async def afinetune_status(
    job: FineTuneRef,
    *,
    secrets: SecretStore | None = None,
    journal: FineTuneJournal | None = None,
    api_key: str | None = None,
) -> FineTuneJob:
    """The job, refreshed from the API (and saved in the journal)."""
    journal = journal or FineTuneJournal()
    current = _current(job, journal)
    if current.done:
        return current
    async with client_for(current, secrets, api_key) as client:
        await _refresh(client, current, journal)
    return current


async def apoll_finetune(
    job: FineTuneRef,
    *,
    poll: PollSchedule | None = None,
    timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
    cancel_on_cancel: bool = False,
    secrets: SecretStore | None = None,
    journal: FineTuneJournal | None = None,
    api_key: str | None = None,
) -> FineTuneJob:
    """Poll with backoff until the job ends; returns it however it ended (check ``.succeeded``
    and ``.fine_tuned_model``).

    ``on_progress(job)`` is called after each poll. After ``timeout`` seconds a
    :class:`TimeoutError` is raised and the job keeps training. Cancelling this task leaves the
    job running unless ``cancel_on_cancel`` (training is paid per token, so stopping the wait
    should not throw the work away by default).
    """
    journal = journal or FineTuneJournal()
    current = _current(job, journal)
    schedule = (poll or PollSchedule(initial=10.0, maximum=120.0)).delays()
    deadline = None if timeout is None else time.monotonic() + timeout
    async with client_for(current, secrets, api_key) as client:

        async def refresh() -> None:
            await _refresh(client, current, journal)

        async def cancel() -> None:
            if current.job_id is not None:
                with contextlib.suppress(APIError):
                    current.update(await client.cancel(current.job_id))
                    journal.save(current)

        return await poll_job(
            current,
            refresh,
            schedule=schedule,
            deadline=deadline,
            timeout=timeout,
            on_progress=on_progress,
            on_cancel=cancel if cancel_on_cancel else None,
            kind="fine-tuning job",
            keeps="training",
        )


async def acancel_finetune(
    job: FineTuneRef,
    *,
    secrets: SecretStore | None = None,
    journal: FineTuneJournal | None = None,
    api_key: str | None = None,
) -> FineTuneJob:
    """Ask the API to cancel the job; returns it (``cancelled``, or how it had already ended)."""
    journal = journal or FineTuneJournal()
    current = _current(job, journal)
    if current.job_id is None:
        raise ConfigError(
            "job",
            f"fine-tuning job {current.id} was never created at the provider "
            f"({current.submit_error or 'it is still being submitted'})",
            "nothing to cancel; submit it again if needed",
        )
    if current.done:
        return current
    async with client_for(current, secrets, api_key) as client:
        current.update(await client.cancel(current.job_id))
    journal.save(current)
    return current


async def afinetune_events(
    job: FineTuneRef,
    *,
    limit: int = 20,
    secrets: SecretStore | None = None,
    journal: FineTuneJournal | None = None,
    api_key: str | None = None,
) -> list[dict[str, Any]]:
    """The job's newest ``limit`` events (1-100), oldest first: ``created_at``, ``level``,
    ``message``, ``type`` (``message`` or ``metrics``, whose ``data`` holds step and loss)."""
    if not 1 <= limit <= 100:
        raise ConfigError("limit", f"is {limit}", "give 1 to 100")
    journal = journal or FineTuneJournal()
    current = _current(job, journal)
    if current.job_id is None:
        return []
    async with client_for(current, secrets, api_key) as client:
        events = await client.events(current.job_id, limit=limit)
    return list(reversed(events))


def list_finetunes(
    journal: FineTuneJournal | None = None, limit: int | None = 50
) -> list[FineTuneJob]:
    """Journaled jobs, newest first, as last seen (no API call)."""
    return (journal or FineTuneJournal()).list(limit)


submit_finetune = sync_twin(asubmit_finetune)
finetune_status = sync_twin(afinetune_status)
poll_finetune = sync_twin(apoll_finetune)
cancel_finetune = sync_twin(acancel_finetune)
finetune_events = sync_twin(afinetune_events)
