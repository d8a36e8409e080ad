"""Spend from the call history: dollars and tokens grouped by day, model, step and run.

What ``chatstep history --cost`` prints. Days are UTC dates (the history stores UTC times).
A call the history holds without a cost (a model missing from the price table) is counted in
``unpriced``, so a total that leaves calls out says so instead of looking complete. Answers
served from the cache cost nothing and are counted in ``cached``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from chatstep.storage.history import History

__all__ = ["SPEND_KEYS", "SpendGroup", "SpendKey", "SpendReport", "spend"]

SpendKey = Literal["day", "model", "step", "run"]
#: What spend can be grouped by, in the order columns are shown.
SPEND_KEYS: tuple[SpendKey, ...] = ("day", "model", "step", "run")

_KEY_SQL: dict[str, str] = {
    "day": "substr(time, 1, 10)",
    "model": "model",
    "step": "step",
    "run": "run_id",
}

_SUMS = (
    "count(*) AS calls, "
    "coalesce(sum(cached), 0), "
    "coalesce(sum(error IS NOT NULL), 0), "
    "coalesce(sum(CASE WHEN cached THEN 0 ELSE prompt_tokens END), 0), "
    "coalesce(sum(CASE WHEN cached THEN 0 ELSE completion_tokens END), 0), "
    "coalesce(sum(CASE WHEN cached THEN 0 ELSE cost_usd END), 0.0) AS cost, "
    "coalesce(sum(cost_usd IS NULL AND NOT cached AND coalesce(total_tokens, 0) > 0), 0)"
)


@dataclass
class SpendGroup:
    """One group's totals. Keys not grouped by are None; so is a call's missing step or run."""

    day: str | None = None
    model: str | None = None
    step: str | None = None
    run: str | None = None
    calls: int = 0
    """Calls logged (answered, failed and cached)."""
    cached: int = 0
    """Calls answered from the cache (no request, no cost, tokens not counted)."""
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    """Dollars of the priced calls."""
    unpriced: int = 0
    """Calls that used tokens but have no cost (not in the price table): not in ``cost_usd``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SpendReport:
    """Groups (most recent day first, then most expensive), the total, and what was asked."""

    by: tuple[SpendKey, ...]
    groups: list[SpendGroup] = field(default_factory=list)
    total: SpendGroup = field(default_factory=SpendGroup)
    more_groups: int = 0
    """Groups left out by ``limit``; the total still counts them."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": list(self.by),
            "groups": [
                {k: v for k, v in g.to_dict().items() if k in self.by or k not in SPEND_KEYS}
                for g in self.groups
            ],
            "total": {k: v for k, v in self.total.to_dict().items() if k not in SPEND_KEYS},
            "more_groups": self.more_groups,
        }


def _group(keys: Sequence[str], row: Sequence[Any]) -> SpendGroup:
    named = dict(zip(keys, row[: len(keys)], strict=True))
    calls, cached, errors, prompt, completion, cost, unpriced = row[len(keys) :]
    return SpendGroup(
        **named,
        calls=int(calls),
        cached=int(cached),
        errors=int(errors),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        cost_usd=float(cost),
        unpriced=int(unpriced),
    )


def spend(
    history: History | None = None,
    by: Sequence[SpendKey] = SPEND_KEYS,
    *,
    since: datetime | None = None,
    model: str | None = None,
    step: str | None = None,
    run_id: str | None = None,
    limit: int = 100,
) -> SpendReport:
    """Spend in ``history`` (default: the user's) grouped by ``by``; at most ``limit`` groups.

    ``since`` (an aware datetime) keeps calls logged at or after it; ``model``, ``step`` and
    ``run_id`` keep only those calls. Raises ValueError for an unknown key or a naive ``since``.
    """
    keys = list(dict.fromkeys(by))
    unknown = [k for k in keys if k not in _KEY_SQL]
    if unknown:
        raise ValueError(f"cannot group spend by {unknown[0]!r}; use {', '.join(SPEND_KEYS)}")
    if since is not None and since.tzinfo is None:
        raise ValueError("since needs an aware datetime (UTC)")
    report = SpendReport(by=tuple(keys))
    history = history or History()
    conn = history._read_connection() if history.reads_enabled else None
    if conn is None:
        return report
    where: list[str] = []
    params: list[Any] = []
    if since is not None:
        where.append("time >= ?")
        params.append(since.astimezone(timezone.utc).isoformat(timespec="milliseconds"))
    for column, value in (("model", model), ("step", step), ("run_id", run_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    total_row = conn.execute(f"SELECT {_SUMS} FROM calls{clause}", params).fetchone()
    report.total = _group([], total_row)
    if not keys:
        return report
    columns = ", ".join(_KEY_SQL[k] for k in keys)
    order = (f"{_KEY_SQL['day']} DESC, " if "day" in keys else "") + "cost DESC, calls DESC"
    sql = (
        f"SELECT {columns}, {_SUMS} FROM calls{clause} GROUP BY {columns} ORDER BY {order} LIMIT ?"
    )
    rows = conn.execute(sql, (*params, limit + 1)).fetchall()
    report.groups = [_group(keys, row) for row in rows[:limit]]
    if len(rows) > limit:
        count_sql = f"SELECT count(*) FROM (SELECT 1 FROM calls{clause} GROUP BY {columns})"
        report.more_groups = int(conn.execute(count_sql, params).fetchone()[0]) - limit
    return report
