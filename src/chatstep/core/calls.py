"""One-call entry points: :func:`run_step`, :func:`arun_step` and :func:`astream_step`.

Each runs a step through a throwaway runner unless one is given: reuse a
:class:`~chatstep.core.sync_runner.Runner` (sync) or an :class:`~chatstep.core.runner.AsyncRunner`
for many calls (it pools connections and keeps the cache open).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from chatstep.core.blocking import run_sync
from chatstep.core.result import AnyResult
from chatstep.core.runner import AsyncRunner, DeltaCallback, StepSource
from chatstep.core.streaming import Delta

if TYPE_CHECKING:
    from chatstep.core.sync_runner import Runner

__all__ = ["StepStream", "arun_step", "astream_step", "run_step", "run_sync"]

T = TypeVar("T")


async def arun_step(
    step: StepSource,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    *,
    stream: bool | None = None,
    on_delta: DeltaCallback | None = None,
    runner: AsyncRunner | None = None,
    max_cost: float | None = None,
) -> AnyResult:
    """Run one step (a step object, a YAML/JSON path, or a dict) and return its result.

    ``max_cost`` (USD) refuses the call with BudgetExceededError when its worst case is more
    (see :class:`Runner`); with a ``runner``, the runner's own ``max_cost`` applies instead.
    """
    if runner is not None:
        return await runner.run(step, inputs, outputs, stream=stream, on_delta=on_delta)
    async with AsyncRunner(max_cost=max_cost) as own:
        return await own.run(step, inputs, outputs, stream=stream, on_delta=on_delta)


def run_step(
    step: StepSource,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    *,
    stream: bool | None = None,
    on_delta: DeltaCallback | None = None,
    runner: Runner | None = None,
    max_cost: float | None = None,
) -> AnyResult:
    """Synchronous :func:`arun_step`; pass a :class:`~chatstep.Runner` to reuse its connections
    (its own ``max_cost`` then applies)."""
    if runner is not None:
        return runner.run(step, inputs, outputs, stream=stream, on_delta=on_delta)
    return run_sync(
        arun_step(step, inputs, outputs, stream=stream, on_delta=on_delta, max_cost=max_cost)
    )


class StepStream:
    """Async iterator over a streamed step's deltas; ``result`` holds the assembled result."""

    def __init__(self, task_factory: Callable[[DeltaCallback], Awaitable[AnyResult]]) -> None:
        self._queue: asyncio.Queue[Delta | None] = asyncio.Queue()
        self._factory = task_factory
        self._task: asyncio.Task[AnyResult] | None = None
        self.result: AnyResult | None = None

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delta]:
        async def run() -> AnyResult:
            try:
                return await self._factory(self._queue.put_nowait)
            finally:
                self._queue.put_nowait(None)

        self._task = asyncio.ensure_future(run())
        try:
            while (delta := await self._queue.get()) is not None:
                yield delta
            self.result = await self._task
        finally:
            if not self._task.done():
                self._task.cancel()


def astream_step(
    step: StepSource,
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    *,
    runner: AsyncRunner | None = None,
) -> StepStream:
    """Stream a chat step: ``async for delta in stream``, then ``stream.result``."""

    async def factory(callback: DeltaCallback) -> AnyResult:
        return await arun_step(step, inputs, outputs, stream=True, on_delta=callback, runner=runner)

    return StepStream(factory)
