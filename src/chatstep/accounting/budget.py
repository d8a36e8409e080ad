"""The dollar budget of a map run (``--max-cost``): rows are admitted only while they fit.

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

from chatstep.errors import ConfigError

if TYPE_CHECKING:
    from chatstep.accounting.pricing import PriceTable
    from chatstep.core.connection import Connection
    from chatstep.core.request import Request

__all__ = ["CostBudget", "worst_case_cost"]


def worst_case_cost(prices: PriceTable, request: Request, conn: Connection) -> float:
    """The most a request can cost (no cached input, every completion token used)."""
    from chatstep.accounting.tokens import completion_budget, estimate_prompt_tokens

    endpoint = request.endpoint
    prompt = estimate_prompt_tokens(request.body, endpoint)
    completion = completion_budget(request.body) if endpoint == "chat.completions" else 0
    cost = prices.estimate_cost(request.model, prompt, completion, local=conn.backend == "local")
    if cost is None:
        raise ConfigError(
            "--max-cost",
            f"the model {request.model!r} has no price, so its cost cannot be bounded",
            "add it to prices.toml in the chatstep user directory, or drop --max-cost",
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
