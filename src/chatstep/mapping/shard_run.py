"""Running one shard of a scaled-out map: lease, journal, the ordinary map scheduler, budget.

::

    take the shard's lease (wait for a dead holder's to expire) --> keep renewing it
      --> MapRun over the shard's rows, its journal the shard's (a commit per row),
          its limiter drawing from the pool's shared budget and checking the lease before
          every send --> release the lease --> the shard's output rows, in order

Nothing here imports Ray: a Ray task or actor calls :func:`run_shard`, and so can tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatstep.mapping.journal import row_hash
from chatstep.mapping.leases import DEFAULT_LEASE_TTL, Lease
from chatstep.mapping.options import MapOptions, step_definition
from chatstep.mapping.pool_budget import PoolBudget
from chatstep.mapping.run import MapRun
from chatstep.mapping.shards import ShardJournalStore, ShardRunJournal
from chatstep.mapping.shared_budget import RateBudget, SharedRateLimiter

if TYPE_CHECKING:
    from chatstep.core.connection import Connection
    from chatstep.core.request import Request
    from chatstep.core.runner import AsyncRunner
    from chatstep.steps.definitions import Step

__all__ = ["BudgetClient", "LeasedRateLimiter", "ShardOutcome", "run_definition", "run_shard"]

#: What a shared budget offers the limiter: RedisBudget, PoolBudget, the Ray budget actor.
BudgetClient = RateBudget


class LeasedRateLimiter(SharedRateLimiter):
    """A :class:`SharedRateLimiter` that checks the shard's lease right before each send.

    The check comes after the budget's wait, so a worker whose lease ended while it waited
    sends nothing (:class:`~chatstep.errors.ShardLeaseError`).
    """

    def __init__(self, budget: BudgetClient, lease: Lease | None, **options: Any) -> None:
        super().__init__(budget, **options)
        self.lease = lease

    async def before_send(self, request: Request, conn: Connection) -> None:
        await super().before_send(request, conn)
        if self.lease is not None:
            self.lease.check()


class _KeptOpen:
    """A budget client shared by many runs: closing one run does not close it."""

    def __init__(self, budget: BudgetClient) -> None:
        self.budget = budget

    async def check(self) -> None:
        await self.budget.check()

    async def acquire(
        self, scope: str, tokens: float, *, rpm: float | None, tpm: float | None
    ) -> tuple[float, tuple[float, float]]:
        return await self.budget.acquire(scope, tokens, rpm=rpm, tpm=tpm)

    async def observe(
        self,
        scope: str,
        headers: Mapping[str, str],
        age: float = 0.0,
        reserved: tuple[float, float] = (-1.0, -1.0),
    ) -> None:
        await self.budget.observe(scope, headers, age, reserved)

    async def pause(self, scope: str, seconds: float) -> None:
        await self.budget.pause(scope, seconds)

    async def aclose(self) -> None:
        """Left open for the next run."""


def shared(budget: BudgetClient) -> BudgetClient:
    """``budget`` wrapped so that a run's end does not close it (reuse across runs)."""
    return _KeptOpen(budget)


@dataclass
class ShardOutcome:
    """A shard's output rows (input order) and its counters."""

    rows: list[dict[str, Any]]
    counts: dict[str, float] = field(default_factory=dict)


def run_definition(step: Step, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the shard journals fingerprint: the step, plus the inputs every row gets."""
    definition = step_definition(step)
    if inputs:
        definition["inputs"] = dict(inputs)
    return definition


async def run_shard(
    step: Step,
    rows: Sequence[Mapping[str, Any]],
    *,
    store: ShardJournalStore | None,
    shard: str,
    run_id: str,
    keys: Sequence[str] | None = None,
    budget: BudgetClient | None = None,
    lease: bool = True,
    lease_ttl: float = DEFAULT_LEASE_TTL,
    runner: AsyncRunner | None = None,
    **options: Any,
) -> ShardOutcome:
    """Map ``step`` over one shard's ``rows``; its finished rows are taken from its journal.

    ``keys``: each row's journal key (default: its position in the shard); ``budget``: the
    pool's shared budget (default: this shard's own); ``lease``: hold the shard's lease while
    sending (raises :class:`~chatstep.errors.ShardLeaseError` when another live worker holds
    it, or when this one loses it); ``store`` None: no journal, no lease; ``options``:
    :class:`MapOptions` fields (not ``journal``, ``budget``). Raises what :class:`MapRun` raises.
    """
    held = None
    if lease and store is not None:
        held = Lease(store.leases(), f"{run_id}:{shard}", ttl=lease_ttl)
    keeper: asyncio.Task[None] | None = None
    if held is not None:
        await held.acquire()
        keeper = asyncio.ensure_future(held.keep())
    try:
        keys = list(keys) if keys is not None else [str(i) for i in range(len(rows))]
        journal = None
        if store is not None:
            journal = ShardRunJournal(store, shard, keys, run_id=run_id, lease=held)
        run = MapRun(step, rows, MapOptions(journal=journal, **options), runner=runner)
        own = PoolBudget() if budget is None else budget
        run.limiter = LeasedRateLimiter(
            own, held, rpm=run.options.rpm, tpm=run.options.tpm, learn=run.options.learn_limits
        )
        out = [row async for row in run]
        stats = run.stats
        counts = {
            "rows": len(out),
            "done": stats.done,
            "failed": stats.failed,
            "from_journal": stats.from_journal,
            "requests": stats.requests,
            "rate_limited": stats.rate_limited,
            "cost": stats.cost,
        }
        if stats.stop_reason:
            counts["stopped"] = 1
        return ShardOutcome(out, counts)
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if held is not None:
            await held.release()


def row_keys(rows: Sequence[Mapping[str, Any]], id_column: str | None) -> list[str]:
    """Journal keys of rows: their ``id_column`` values, else a hash of each row."""
    if id_column is None:
        return [row_hash(row) for row in rows]
    return [str(row.get(id_column)) for row in rows]
