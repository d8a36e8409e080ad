"""Polling a provider job until it ends: shared by batch jobs and fine-tuning jobs.

:func:`poll_job` refreshes a job, reports it, sleeps the next delay of a schedule (cut short
by a deadline), and repeats until the job is ``done``. Passing the deadline raises
:class:`TimeoutError` (the job keeps running at the provider); cancelling the polling task runs
``on_cancel`` first, when given.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar

__all__ = ["PolledJob", "notify", "poll_job"]


class PolledJob(Protocol):
    """What polling reads of a job: its id, status and whether it has ended."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def done(self) -> bool: ...


J = TypeVar("J", bound=PolledJob)


async def notify(callback: Callable[[J], Any] | None, job: J) -> None:
    """Call ``callback(job)`` (awaiting it when it returns an awaitable); None: nothing."""
    if callback is None:
        return
    outcome = callback(job)
    if inspect.isawaitable(outcome):
        await outcome


async def poll_job(
    job: J,
    refresh: Callable[[], Awaitable[None]],
    *,
    schedule: Iterator[float],
    deadline: float | None,
    timeout: float | None,
    on_progress: Callable[[J], Any] | None,
    on_cancel: Callable[[], Awaitable[None]] | None,
    kind: str,
    keeps: str,
) -> J:
    """Refresh ``job`` until it is done; returns it, however it ended.

    ``deadline`` is a ``time.monotonic()`` value (None: no limit); past it a TimeoutError says
    "<kind> <id> is still <status> after <timeout>s; it keeps <keeps>: ...". ``on_cancel`` runs
    when the polling task is cancelled, before the cancellation goes on.
    """
    try:
        while True:
            await refresh()
            await notify(on_progress, job)
            if job.done:
                return job
            delay = next(schedule)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{kind} {job.id} is still {job.status} after {timeout}s; "
                        f"it keeps {keeps}: wait for it again, or cancel it"
                    )
                delay = min(delay, left)
            await asyncio.sleep(delay)
    except asyncio.CancelledError:
        if on_cancel is not None:
            await on_cancel()
        raise
