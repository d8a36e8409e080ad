"""The dollar budget of a run (``max_cost`` / ``--max-cost``): requests go only while they fit.

One mechanism for every entry point: a :class:`~chatstep.Runner` (so ``run_step``, flows and
conversations) holds one :class:`CostBudget` and refuses a request that does not fit with
:class:`~chatstep.errors.BudgetExceededError`; a map run holds one too and waits for rows in
flight before it stops; a Batch API submission checks its whole estimate up front.

Before a row is sent, its worst case is reserved: its prompt's tokens at the input price plus
its whole completion budget (``max_tokens`` x ``n``, or the default) at the output price, as
:meth:`chatstep.accounting.pricing.PriceTable.estimate_cost` prices it. When the row finishes, the
reservation is released and its real cost (from the answer's usage) is spent. A row that does
not fit waits while rows in flight may still release room, and the run stops when none are.
So the spend never passes the budget, and stops within one row's worst case of it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatstep.errors import BudgetExceededError, ConfigError

if TYPE_CHECKING:
    from chatstep.accounting.pricing import PriceTable
    from chatstep.core.connection import Connection
    from chatstep.core.request import Request

__all__ = ["CostBudget", "check_max_cost", "worst_case_cost"]


def check_max_cost(value: float | None, field: str = "max_cost") -> float | None:
    """``value`` when it is None or a non-negative number of USD; else a ConfigError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(field, f"must be a non-negative number of USD, got {value!r}", "e.g. 5")
    return float(value)


def worst_case_cost(
    prices: PriceTable,
    request: Request,
    conn: Connection | None,
    *,
    field: str = "--max-cost",
    batch: bool = False,
) -> float:
    """The most a request can cost, USD: no cached input, every completion token used
    (``max_completion_tokens`` / ``max_tokens``, or the default, times ``n``)."""
    from chatstep.accounting.tokens import completion_budget, estimate_prompt_tokens

    endpoint = request.endpoint
    prompt = estimate_prompt_tokens(request.body, endpoint)
    completes = endpoint in ("chat.completions", "completions")
    completion = completion_budget(request.body) if completes else 0
    local = conn is not None and conn.backend == "local"
    cost = prices.estimate_cost(request.model, prompt, completion, batch=batch, local=local)
    if cost is None:
        raise ConfigError(
            field,
            f"the model {request.model!r} has no price, so its cost cannot be bounded",
            f"add it to prices.toml in the chatstep user directory, or drop {field}",
        )
    return cost.total_usd


@dataclass
class CostBudget:
    """Dollars: the limit, what finished rows spent, and the worst case of rows in flight."""

    limit: float | None
    spent: float = 0.0
    reserved: float = 0.0
    holders: int = 0
    """Rows in flight holding a reservation."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def try_reserve(self, amount: float) -> bool:
        """Hold ``amount`` now if it fits (always, without a limit); never waits."""
        if self.limit is not None and self.spent + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        self.holders += 1
        return True

    def exceeded(
        self,
        next_cost: float,
        what: str,
        option: str = "max_cost",
        held_by: str = "requests in flight",
    ) -> BudgetExceededError:
        """The error for a request of worst case ``next_cost`` that does not fit."""
        assert self.limit is not None
        return BudgetExceededError(
            f"{option} ${self.limit:.4f} reached: ${self.spent:.4f} spent"
            + (f", ${self.reserved:.4f} held by {held_by}" if self.reserved else "")
            + f", and {what} may cost up to ${next_cost:.4f}; "
            f"raise {option} to continue",
            spent=self.spent,
            limit=self.limit,
            next_cost=next_cost,
        )

    async def reserve(self, amount: float) -> bool:
        """Hold ``amount`` for a row once it fits; False when it never will (stop the run)."""
        assert self.limit is not None
        while self.spent + self.reserved + amount > self.limit:
            if self.holders == 0:
                return False
            # Rows in flight hold their worst case; wait for their real cost.
            self.changed.clear()
            await self.changed.wait()
        self.reserved += amount
        self.holders += 1
        return True

    def settle(self, held: float, spent: float) -> None:
        """A row in flight finished: its worst case is released, its real cost spent."""
        self.holders -= 1
        # Counted, not compared to zero: float sums of releases leave crumbs like 1e-17.
        self.reserved = self.reserved - held if self.holders > 0 else 0.0
        self.spent += spent
        self.changed.set()
