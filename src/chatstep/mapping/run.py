"""Mapping a step over a dataset: a scheduler above the request pipeline.

::

    rows --> [journal: finished already? take it] --> render (AsyncRunner.prepare)
         --> [--max-cost: room for its worst case?] --> workers (concurrency)
         --> AsyncRunner.execute: cache? --> RateLimiter (a hook: rpm/tpm, learned from headers,
             pool-wide pause on 429) --> retries --> backend; history, cost
         --> journal.record --> reorder buffer --> output rows, in input order

Each row becomes the step's ``inputs``. Rows finish out of order and are handed out in input
order; a row is admitted only while it is fewer than ``window`` rows ahead of the next row to
hand out, so memory stays bounded however large the dataset. Every finished row is committed
to the :class:`RunJournal` at once, so a crashed run resumes without sending a
finished row again.

Resuming costs what is left to do, not what is done: when the rows can be read twice (a
dataset file, a list), the producer skips the journal's finished rows by index without
parsing or rendering them and sends the first unfinished row at once, while the hand-out reads
the input a second time beside the journal (both in index order) to write the finished rows'
records. A finished row whose input changed is then found by the hand-out (a
:class:`JournalMismatchError`), after at most ``window`` unfinished rows were sent.

A row that fails for good keeps its error (in the output and the journal); errors that would
fail every row (a bad key, an unknown model, no quota) stop the run instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatstep.accounting.budget import CostBudget, worst_case_cost
from chatstep.core.runner import AsyncRunner
from chatstep.errors import (
    APIError,
    BudgetExceededError,
    ChatstepError,
    ConfigError,
    StorageError,
)
from chatstep.mapping.columns import OutputShape, error_record, result_record
from chatstep.mapping.datasets import DatasetFile
from chatstep.mapping.journal import (
    FinishedRanges,
    JournalCursor,
    RowStatus,
    RunJournal,
    row_hash,
)
from chatstep.mapping.options import (
    MapOptions,
    RowSource,
    StepSource,
    as_step,
    iterate_rows,
    step_definition,
)
from chatstep.mapping.progress import MapProgress, MapStats
from chatstep.mapping.ratelimit import RateLimiter, observe_failures
from chatstep.mapping.resume import JournaledRows, input_changed, read_again, resumed_rows
from chatstep.mapping.row_jobs import ReadySlot, RowJob, RunContext, is_fatal
from chatstep.mapping.shared_budget import RedisBudget, SharedRateLimiter

if TYPE_CHECKING:
    from chatstep.accounting.pricing import PriceTable
    from chatstep.core.result import AnyResult

__all__ = ["MapOptions", "MapRun", "MapStats", "MappedRows", "amap_step", "map_step"]

_PROGRESS_TICK = 0.25
# Journal rows handed out between two turns of the event loop (so that sending goes on).
_HAND_OUT_TURN = 256


class MapRun:
    """One run of a step over rows; iterate it (``async for row in run``) to get output rows.

    ``stats`` is kept up to date while it runs; ``stats.stop_reason`` says why it stopped
    early (``--max-cost``), if it did.
    """

    def __init__(
        self,
        step: StepSource,
        rows: RowSource,
        options: MapOptions | None = None,
        *,
        runner: AsyncRunner | None = None,
        progress: MapProgress | None = None,
        total: int | None = None,
        price_table: PriceTable | None = None,
    ) -> None:
        self.options = options or MapOptions()
        self.options.check()
        self.step = as_step(step)
        if self.options.cache is False and self.step.cache:
            self.step = self.step.model_copy(update={"cache": False})
        self.rows: RowSource = DatasetFile(Path(rows)) if isinstance(rows, str | Path) else rows
        self.shape = OutputShape(
            self.step,
            self.options.select,
            flatten=self.options.flatten,
            fixed_columns=self.options.fixed_columns,
            prefix=self.options.prefix,
        )
        self.stats = MapStats(total=total)
        self.limiter = _make_limiter(self.options)
        self._runner = runner
        self._progress = progress
        self._price_table = price_table
        self._ready: dict[int, ReadySlot] = {}
        self._changed = asyncio.Event()
        self._failure: BaseException | None = None
        self._produced: int | None = None
        self._own_journal: RunJournal | None = None
        # Resuming from rows read twice: indexes the producer has decided on, and those of
        # them it admitted (not yet handed out: at most ``window``); the rest are journal rows.
        self._scanned = 0
        self._admitted: set[int] = set()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    # -- resources -------------------------------------------------------------------------

    def open_journal(self) -> RunJournal | None:
        """Open (and lock) the run's journal now, before anything is sent; None without one.

        Iterating calls this; call it first to find a locked or unwritable journal
        (:class:`~chatstep.errors.StorageError`) before opening the output. A journal
        opened from a path is closed when the iteration ends, or by :meth:`close`.
        """
        spec = self.options.journal
        if spec is None or isinstance(spec, RunJournal):
            return spec
        if self._own_journal is None:
            definition = step_definition(self.step)
            if self.options.inputs:
                definition["inputs"] = dict(self.options.inputs)
            self._own_journal = RunJournal(
                spec, definition=definition, restart=self.options.restart
            )
        return self._own_journal

    def close(self) -> None:
        """Close the journal this run opened (idempotent)."""
        if self._own_journal is not None:
            self._own_journal.close()
            self._own_journal = None

    # -- the run ---------------------------------------------------------------------------

    def _make_runner(self, journal: RunJournal | None) -> AsyncRunner:
        return AsyncRunner(
            retry=self.options.retry,
            price_table=self._price_table,
            cache=self.options.runner_cache(),
            cache_ttl=self.options.cache_ttl,
            history=self.options.history,
        )

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        journal = self.open_journal()
        own_runner = self._runner is None
        runner = self._runner or self._make_runner(journal)
        saved = (runner.hooks, runner.retry, runner.run_id)
        runner.hooks = [*runner.hooks, self.limiter]
        runner.retry = observe_failures(runner.retry, self.limiter)
        if journal is not None and runner.run_id is None:
            runner.run_id = journal.run_id
        tasks: list[asyncio.Task[None]] = []
        try:
            if isinstance(self.limiter, SharedRateLimiter):
                await self.limiter.check()  # fail closed before anything is sent
            retrieve = getattr(self.step, "retrieve", None)
            if retrieve is not None:  # a missing or empty index fails the run, not every row
                runner.indexes.get(retrieve.index, "retrieve.index")
            if journal is not None:
                self.stats.journaled = journal.count()
                self.stats.journal_cost = journal.spent()
            budget = CostBudget(self.options.max_cost, spent=self.stats.journal_cost)
            queue: asyncio.Queue[RowJob | None] = asyncio.Queue(maxsize=self.options.concurrency)
            window = asyncio.Semaphore(self.options.window)
            ctx = RunContext(runner, journal, budget, JournalCursor(journal))
            journaled = self._resume_from(ctx)
            tasks.append(asyncio.ensure_future(self._guard(self._produce(ctx, queue, window))))
            for _ in range(self.options.concurrency):
                tasks.append(asyncio.ensure_future(self._guard(self._work(ctx, queue))))
            if self._progress is not None:
                self._progress.start(self.stats)
                tasks.append(asyncio.ensure_future(self._tick()))
            async for row in self._hand_out(window, journaled):
                yield row
            if self._failure is not None:
                raise self._failure
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.stats.finished = self.stats.started + self.stats.elapsed
            self._sync_limiter_stats()
            if self._progress is not None:
                self._progress.finish(self.stats)
            runner.hooks, runner.retry, runner.run_id = saved
            try:
                if own_runner:
                    await runner.aclose()
                if isinstance(self.limiter, SharedRateLimiter):
                    await self.limiter.aclose()
            finally:
                self.close()

    def _resume_from(self, ctx: RunContext) -> JournaledRows | None:
        """Skip the journal's finished rows unread, if the rows can be read twice."""
        journal = ctx.journal
        again = read_again(self.rows) if journal is not None and self.stats.journaled else None
        if journal is None or again is None:
            return None
        ctx.skip = FinishedRanges(journal, include_failed=not self.options.retry_failed)
        # Every row the producer admits now is new, or a failed one to send again.
        ctx.finished = JournalCursor(None)
        return JournaledRows(again, JournalCursor(journal))

    def _sync_limiter_stats(self) -> None:
        self.stats.requests = self.limiter.stats.requests
        self.stats.rate_limited = self.limiter.stats.rate_limited
        self.stats.token_factor = self.limiter.token_factor

    async def _guard(self, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._failure is None:
                self._failure = exc
            self._changed.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_PROGRESS_TICK)
            self._sync_limiter_stats()
            if self._progress is not None:
                self._progress.refresh(self.stats)

    async def _hand_out(
        self, window: asyncio.Semaphore, journaled: JournaledRows | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Output rows in input order, as soon as each one's turn comes."""
        index = 0
        while True:
            slot = self._ready.pop(index, None)
            if slot is None:
                if self._failure is not None:
                    return
                if journaled is not None and index < self._scanned and index not in self._admitted:
                    yield self._journal_row(journaled, index)
                    index += 1
                    if index % _HAND_OUT_TURN == 0:
                        await asyncio.sleep(0)
                    continue
                if self._produced is not None and index >= self._produced:
                    return
                self._changed.clear()
                await self._changed.wait()
                continue
            self._admitted.discard(index)
            if slot.stop:
                return
            record = slot.record
            if record is None and slot.journal_json is not None:
                record = json.loads(slot.journal_json)
            yield self.shape.row(slot.row, record or {})
            index += 1
            window.release()

    def _journal_row(self, journaled: JournaledRows, index: int) -> dict[str, Any]:
        """The output row of a row the producer skipped as finished (checked against input)."""
        row, entry = journaled.at(index)
        if entry.input_hash != row_hash(row):
            raise input_changed(index)
        self.stats.from_journal += 1
        if entry.status == "ok":
            self.stats.done += 1
        else:
            self.stats.failed += 1
        return self.shape.row(row, entry.record())

    def _put(self, index: int, slot: ReadySlot) -> None:
        self._ready[index] = slot
        self._changed.set()

    async def _produce(
        self, ctx: RunContext, queue: asyncio.Queue[RowJob | None], window: asyncio.Semaphore
    ) -> None:
        index = -1
        rows = (
            resumed_rows(self.rows, ctx.skip) if ctx.skip is not None else iterate_rows(self.rows)
        )
        try:
            async for row in rows:
                if isinstance(row, int):  # finished: the hand-out takes them from the journal
                    index += row
                    self._scanned = index + 1
                    continue
                index += 1
                if ctx.skip is not None:
                    self._admitted.add(index)
                    self._scanned = index + 1
                    self._changed.set()
                await window.acquire()
                if ctx.abort is not None:
                    self._put(index, ReadySlot(row, stop=True))
                    break
                if not isinstance(row, Mapping):
                    raise ConfigError("rows", f"row {index} is a {type(row).__name__}, not a dict")
                job = await self._admit(ctx, index, row)
                if job is None:
                    continue
                if isinstance(job, str):
                    self.stats.stop_reason = job
                    self._put(index, ReadySlot(row, stop=True))
                    break
                await queue.put(job)
            self._produced = index + 1
        finally:
            if self._produced is None:
                self._produced = index + 1
            for _ in range(self.options.concurrency):
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)
            self._changed.set()

    async def _admit(
        self, ctx: RunContext, index: int, row: Mapping[str, Any]
    ) -> RowJob | str | None:
        """A job to send; None when the row finished without a request; a reason to stop."""
        input_hash = row_hash(row)
        earlier = ctx.finished.lookup(index)
        if earlier is not None:
            status = earlier.status
            if earlier.input_hash != input_hash:
                raise input_changed(index)
            if status == "ok" or not self.options.retry_failed:
                self.stats.from_journal += 1
                if status == "ok":
                    self.stats.done += 1
                else:
                    self.stats.failed += 1
                self._put(index, ReadySlot(row, journal_json=earlier.record_json))
                return None
        try:
            inputs = {**self.options.inputs, **row} if self.options.inputs else row
            rendered, request, conn = await ctx.runner.prepare_async(self.step, inputs)
        except ChatstepError as exc:
            self._finish(ctx, index, row, input_hash, None, exc, None)
            return None
        job = RowJob(index, row, input_hash, rendered, request, conn)
        if ctx.budget.limit is not None:
            estimate = worst_case_cost(ctx.runner.price_table, request, conn)
            if not await ctx.budget.reserve(estimate):
                return (
                    f"--max-cost ${ctx.budget.limit:.4f} reached: ${ctx.budget.spent:.4f} "
                    f"spent, and row {index} may cost up to ${estimate:.4f}; "
                    "re-run with a higher --max-cost to continue"
                )
            job.reserved = estimate
        return job

    async def _work(self, ctx: RunContext, queue: asyncio.Queue[RowJob | None]) -> None:
        while (job := await queue.get()) is not None:
            if ctx.abort is not None:
                self._put(job.index, ReadySlot(job.row, stop=True))
                continue
            result: AnyResult | None = None
            error: Exception | None = None
            try:
                result = await ctx.runner.execute(job.step, job.request, job.conn)
            except APIError as exc:
                error = exc
                if is_fatal(exc):
                    ctx.abort = exc
                    if self._failure is None:
                        self._failure = exc
            except BudgetExceededError as exc:
                # A Runner given with its own max_cost refused the row: stop as --max-cost does.
                error = ctx.abort = exc
                self.stats.stop_reason = self.stats.stop_reason or str(exc)
            except StorageError as exc:
                # A store every row needs (the shared rate budget, the cache) is down: stop
                # rather than fail (or send unlimited) every other row.
                error = ctx.abort = exc
                if self._failure is None:
                    self._failure = exc
            except ChatstepError as exc:
                error = exc
            if ctx.abort is error and error is not None:
                if ctx.budget.limit is not None:
                    ctx.budget.settle(job.reserved, 0.0)
                self._put(job.index, ReadySlot(job.row, stop=True))
                continue
            self._finish(ctx, job.index, job.row, job.input_hash, result, error, job)

    def _finish(
        self,
        ctx: RunContext,
        index: int,
        row: Mapping[str, Any],
        input_hash: str,
        result: AnyResult | None,
        error: Exception | None,
        job: RowJob | None,
    ) -> None:
        """Record a finished row (journal first), then make it ready to hand out."""
        if result is not None:
            if result.cached:
                self.stats.cache_hits += 1
            record = result_record(result)
            status: RowStatus = "ok"
        else:
            assert error is not None
            record = error_record(error)
            status = "failed"
        cost = float(record.get("cost") or 0.0)
        if ctx.journal is not None:
            ctx.journal.record(index, input_hash, status, record, cost)
        if status == "ok":
            self.stats.done += 1
        else:
            self.stats.failed += 1
        self.stats.cost += cost
        usage = record.get("usage") or {}
        if not record.get("cached"):
            self.stats.tokens += int(usage.get("total_tokens") or 0)
        if job is not None and ctx.budget.limit is not None:
            ctx.budget.settle(job.reserved, cost)
        self._put(index, ReadySlot(row, record=record))


def _make_limiter(options: MapOptions) -> RateLimiter:
    """This run's own limiter, or one drawing from the shared ``budget``."""
    rpm, tpm, learn = options.rpm, options.tpm, options.learn_limits
    if options.budget is None:
        return RateLimiter(rpm=rpm, tpm=tpm, learn=learn)
    return SharedRateLimiter(
        RedisBudget(options.budget), fallback=options.budget_fallback, rpm=rpm, tpm=tpm, learn=learn
    )


def amap_step(
    step: StepSource,
    rows: RowSource,
    *,
    runner: AsyncRunner | None = None,
    progress: MapProgress | None = None,
    price_table: PriceTable | None = None,
    **options: Any,
) -> MapRun:
    """Map a step over rows: ``async for out in amap_step(step, rows, concurrency=32)``.

    ``rows`` is an iterable or async iterable of dicts, or a .jsonl/.csv/.parquet path.
    ``options`` are the fields of :class:`MapOptions`. Output rows come in input order.
    A given ``runner`` keeps its own cache, history and price settings.
    """
    return MapRun(
        step,
        rows,
        MapOptions(**options),
        runner=runner,
        progress=progress,
        price_table=price_table,
    )


class MappedRows(list[dict[str, Any]]):
    """The output rows of :func:`map_step`, with the run's ``stats``."""

    stats: MapStats


def map_step(step: StepSource, rows: RowSource, **options: Any) -> MappedRows:
    """Synchronous :func:`amap_step`: all output rows as a list (``.stats`` has the counters).

    For datasets too big for memory, use :func:`chatstep.mapping.files.map_file`, or iterate
    :func:`amap_step`.
    """
    from chatstep.core.calls import run_sync

    async def collect() -> MappedRows:
        run = amap_step(step, rows, **options)
        out = MappedRows([row async for row in run])
        out.stats = run.stats
        return out

    return run_sync(collect())
