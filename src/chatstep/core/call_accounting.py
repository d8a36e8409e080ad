"""What a call leaves behind: its worst case held against the runner's budget and settled at
its actual cost, and its entry in the history log (paid answers that failed checks included)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatstep.core.connection import Connection
from chatstep.core.request import Request
from chatstep.core.result import AnyResult, EmbeddingResult, ModerationResult, StepResult
from chatstep.steps.definitions import Step
from chatstep.storage.history import HistoryEntry

if TYPE_CHECKING:
    from chatstep.accounting.budget import CostBudget

__all__ = ["history_entry", "reserve_worst_case", "settle_cost"]


def reserve_worst_case(
    budget: CostBudget, price_table: Any, step: Step, request: Request, conn: Connection
) -> float:
    """Hold the request's worst case (USD) in the budget, or refuse it (BudgetExceededError)."""
    if budget.limit is None:
        return 0.0
    from chatstep.accounting.budget import worst_case_cost

    estimate = worst_case_cost(price_table, request, conn, field="max_cost")
    if not budget.try_reserve(estimate):
        what = f"the next request (step {step.id!r})" if step.id else "the next request"
        raise budget.exceeded(estimate, what)
    return estimate


def settle_cost(
    budget: CostBudget, held: list[float], result: AnyResult | None, error: Exception | None
) -> None:
    """Release a held worst case and spend the call's actual cost (paid answers included)."""
    if result is None and error is not None:
        result = getattr(error, "result", None)
    cost = getattr(result, "cost", None) if result is not None else None
    spent = (
        float(cost) if isinstance(cost, int | float) and not getattr(result, "cached", 0) else 0.0
    )
    if held:
        budget.settle(held[0], spent)
    else:
        budget.spent += spent


def history_entry(
    step: Step,
    request: Request,
    conn: Connection,
    result: AnyResult | None,
    error: Exception | None,
    latency_ms: float,
    run_id: str | None,
) -> HistoryEntry:
    """The history row of one call (``latency_ms`` when no result measured its own)."""
    if result is None and error is not None:
        # An answer that failed chatstep's checks (or a cut stream) was still paid for.
        received = getattr(error, "result", None)
        if isinstance(received, StepResult | EmbeddingResult | ModerationResult):
            result = received
    breakdown = result.cost_breakdown if result is not None else None
    return HistoryEntry.from_exchange(
        request.endpoint,
        request.body,
        result.response if result is not None else None,
        step=step.id,
        base_url=conn.base_url or ("local" if conn.backend == "local" else None),
        latency_ms=result.latency_ms if result is not None else latency_ms,
        cost_usd=result.cost if result is not None else None,
        cached=bool(result is not None and result.cached),
        error=f"{type(error).__name__}: {error}" if error is not None else None,
        run_id=run_id,
        cost_breakdown=breakdown.to_dict() if breakdown is not None else None,
        usage_estimated=bool(result is not None and result.usage_estimated),
    )
