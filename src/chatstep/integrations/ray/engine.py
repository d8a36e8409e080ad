"""``chatstep map --engine ray``: a dataset file mapped by shards on Ray workers.

::

    driver: lock the output --> claim the shard journal --> create the budget actor
        --> read the input, cut it into shards of shard_rows rows --> a Ray task per shard
            (at most ``workers`` at a time, results handed out in shard order)
        --> write the output rows in input order --> rename over the output
    task:   take the shard's lease --> run_shard (journal, shared budget) --> release

A task killed with its worker is retried by Ray; the retry waits for the dead worker's lease
to expire and resumes the shard from its journal. The same command run again resumes too:
finished rows come from the journals, at most the rows in flight at a kill are sent twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ray

from chatstep.errors import ChatstepError, ConfigError, ShardLeaseError
from chatstep.integrations.ray.budget import DEFAULT_BUDGET, budget_actor, open_budget
from chatstep.mapping.columns import OutputShape
from chatstep.mapping.datasets import dataset_format, read_rows
from chatstep.mapping.leases import DEFAULT_LEASE_TTL
from chatstep.mapping.options import as_step
from chatstep.mapping.progress import MapStats
from chatstep.mapping.shard_run import ShardOutcome, run_definition, run_shard
from chatstep.mapping.shards import DEFAULT_SHARD_ROWS, Shard, open_shard_journal
from chatstep.mapping.writers import open_writer
from chatstep.steps.definitions import Step
from chatstep.steps.loading import StepSource
from chatstep.storage.files import ExclusiveLock

__all__ = ["DEFAULT_WORKERS", "TASK_CPUS", "default_shard_journal", "map_file_ray"]

#: Shard tasks running at once unless told otherwise.
DEFAULT_WORKERS = 4
#: CPUs a shard task asks for: it waits on the network, and Ray's own tasks need the rest.
TASK_CPUS = 0.25
# Finished shards waiting for an earlier one, per worker (bounds the driver's memory).
_AHEAD = 4


def default_shard_journal(output: str | Path) -> Path:
    """Where ``--engine ray`` keeps its shard journals unless told: ``OUTPUT.shards/``."""
    path = Path(output)
    return path.with_name(path.name + ".shards")


def _shard_task(
    step: Step,
    rows: list[dict[str, Any]],
    shard: str,
    run_id: str,
    journal: str,
    journal_run: str,
    budget: str | None,
    split: int | None,
    lease_ttl: float,
    options: dict[str, Any],
) -> ShardOutcome:
    store = open_shard_journal(journal, journal_run)

    async def go() -> ShardOutcome:
        shared = await open_budget(budget, split=split)
        try:
            return await run_shard(
                step, rows, store=store, shard=shard, run_id=run_id, budget=shared,
                lease_ttl=lease_ttl, **options,
            )  # fmt: skip
        finally:
            await shared.aclose()

    try:
        return asyncio.run(go())
    finally:
        store.close()


# Ray retries a task whose worker died (kill -9, a lost node), and one whose shard was still
# leased by a dying worker (a killed driver's workers take a moment to go); other errors of the
# run are the user's to see, so they are not retried.
_remote: Any = ray.remote  # its overloads do not cover keyword options with a function
_remote_shard: Any = _remote(num_cpus=TASK_CPUS, max_retries=3, retry_exceptions=[ShardLeaseError])(
    _shard_task
)


def _chunks(
    rows: Iterator[dict[str, Any]], size: int
) -> Iterator[tuple[Shard, list[dict[str, Any]]]]:
    for index in itertools.count():
        chunk = list(itertools.islice(rows, size))
        if not chunk:
            return
        yield Shard(index, index * size, index * size + len(chunk)), chunk


def _cause(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, ChatstepError) else exc


def map_file_ray(
    step: StepSource,
    input: str | Path,
    output: str | Path,
    *,
    address: str | None = None,
    workers: int = DEFAULT_WORKERS,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    budget: str | None = None,
    budget_fallback: int | None = None,
    journal: str | Path | None = None,
    restart: bool = False,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> MapStats:
    """Map ``step`` over ``input`` into ``output`` on Ray; returns the summed counters.

    ``address``: a running cluster (``auto``, ``ray://...``, host:port; None: the one this
    process is connected to, else a local one); ``workers``: shard tasks at a time;
    ``budget``: ``redis://...`` or ``ray://NAME`` (default: a detached actor); ``budget_fallback``:
    when the budget cannot be reached, each worker goes on alone with ``1/budget_fallback`` of
    the limits instead of failing (the same option as the local engine's); ``journal``: a
    directory (default ``OUTPUT.shards/``, workers on one machine) or
    ``redis://...`` (several machines); ``options``: :class:`~chatstep.mapping.run.MapOptions`
    fields. Raises :class:`~chatstep.errors.StorageError` when the output, journal, lease or
    budget cannot be used, and what a shard's run raises.
    """
    if workers < 1:
        raise ConfigError("--workers", f"must be at least 1, got {workers}")
    if options.get("max_cost") is not None:
        raise ConfigError(
            "--max-cost",
            "is not supported with --engine ray yet (each shard would get the whole cap)",
            "run without --max-cost, or with --engine local",
        )
    in_kind = dataset_format(input, options.pop("input_format", None), option="--rows")
    out_kind = dataset_format(output, options.pop("output_format", None), option="--output")
    if Path(input).resolve() == Path(output).resolve():
        raise ConfigError("--output", "is the input file", "write the output to another file")
    loaded = as_step(step)
    options["fixed_columns"] = out_kind != "jsonl"
    if inputs:
        options["inputs"] = dict(inputs)
    shape = OutputShape(
        loaded,
        options.get("select"),
        flatten=bool(options.get("flatten", False)),
        fixed_columns=options["fixed_columns"],
        prefix=str(options.get("prefix", "")),
    )
    spec = str(journal if journal is not None else default_shard_journal(output))
    if not spec.startswith(("redis://", "rediss://", "unix://")):
        spec = str(Path(spec).resolve())  # workers may run in another directory
    journal_run = hashlib.sha256(str(Path(output).resolve()).encode()).hexdigest()[:16]
    output_lock = ExclusiveLock(
        output, what="the output", fix="wait for the other run to finish, or write another --output"
    ).acquire()
    stats = MapStats()
    try:
        store = open_shard_journal(spec, journal_run)
        try:
            run_id = store.claim(run_definition(loaded, inputs), shard_rows, restart)
        finally:
            store.close()
        if not ray.is_initialized():
            ray.init(address=address, namespace="chatstep", log_to_driver=False)
        if budget is None or budget.startswith("ray://"):
            budget_actor(budget or DEFAULT_BUDGET)
        split = budget_fallback
        asyncio.run(_check_budget(budget, split))  # fail closed before anything is sent
        writer = open_writer(output, out_kind, types=shape.column_types)
        try:
            shards = _chunks(read_rows(input, in_kind), shard_rows)
            task_args = (run_id, spec, journal_run, budget, split, lease_ttl, options)
            for outcome in _run_shards(loaded, shards, task_args, workers):
                for row in outcome.rows:
                    writer.write(row)
                _add(stats, outcome.counts)
        except BaseException:
            writer.abort()
            raise
        writer.commit()
    finally:
        output_lock.release()
    return stats


async def _check_budget(budget: str | None, split: int | None) -> None:
    opened = await open_budget(budget, split=split)
    await opened.aclose()


def _run_shards(
    step: Step,
    shards: Iterator[tuple[Shard, list[dict[str, Any]]]],
    task_args: tuple[Any, ...],
    workers: int,
) -> Iterator[ShardOutcome]:
    """Each shard's outcome in shard order; at most ``workers`` tasks run at a time."""
    pending: dict[int, Any] = {}
    finished: dict[int, ShardOutcome] = {}
    next_out = 0
    more = True
    while True:
        while more and len(pending) < workers and len(pending) + len(finished) < _AHEAD * workers:
            item = next(shards, None)
            if item is None:
                more = False
                break
            shard, rows = item
            pending[shard.index] = _remote_shard.remote(step, rows, shard.name, *task_args)
        if next_out in finished:
            yield finished.pop(next_out)
            next_out += 1
            continue
        if not pending:
            return
        by_ref = {ref: index for index, ref in pending.items()}
        ready, _ = ray.wait(list(by_ref), num_returns=1)
        for ref in ready:
            index = by_ref[ref]
            del pending[index]
            try:
                finished[index] = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                for other in pending.values():
                    ray.cancel(other)
                raise _cause(exc) from None


def _add(stats: MapStats, counts: Mapping[str, float]) -> None:
    stats.done += int(counts.get("done", 0))
    stats.failed += int(counts.get("failed", 0))
    stats.from_journal += int(counts.get("from_journal", 0))
    stats.requests += int(counts.get("requests", 0))
    stats.rate_limited += int(counts.get("rate_limited", 0))
    stats.cost += float(counts.get("cost", 0.0))
    if counts.get("stopped"):
        stats.stop_reason = stats.stop_reason or "a shard stopped early (--max-cost)"
