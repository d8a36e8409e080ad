"""The shared rate budget's arithmetic in Python, for a pool without Redis.

:class:`PoolBudget` has the methods of :class:`~chatstep.mapping.shared_budget.RedisBudget`
(``acquire`` returns the wait, ``observe`` only lowers, ``pause`` empties the buckets) and keeps
the same per-scope state the Redis script keeps, on one clock (this process's). The Ray
engine runs one inside a detached, named actor that every worker calls
(:mod:`chatstep.integrations.ray.budget`); alone in a process it is also the "1/N of the
budget" fallback when the shared store cannot be reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["PoolBudget", "header_values"]

_WINDOW = 60.0


@dataclass
class _Bucket:
    limit: float = 0.0
    level: float | None = None
    at: float | None = None


@dataclass
class _Scope:
    pause: float = 0.0
    buckets: dict[str, _Bucket] = field(default_factory=lambda: {"r": _Bucket(), "t": _Bucket()})


def header_values(headers: Mapping[str, str]) -> list[float]:
    """[limit, remaining] of requests then tokens from ``x-ratelimit-*`` headers (-1: absent)."""
    lower = {k.lower(): v for k, v in headers.items()}
    values = []
    for kind in ("requests", "tokens"):
        for part in ("limit", "remaining"):
            try:
                values.append(float(lower[f"x-ratelimit-{part}-{kind}"]))
            except (KeyError, ValueError):
                values.append(-1.0)
    return values


class PoolBudget:
    """Requests- and tokens-per-minute buckets per scope, shared by whoever calls this object.

    ``divide``: give each bucket ``1/divide`` of the limits (a worker's share when the pool's
    store is down and the user chose to split rather than stop).
    """

    def __init__(self, *, divide: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self._scopes: dict[str, _Scope] = {}
        self._clock = clock
        self._divide = max(1, divide)

    def _load(self, scope: _Scope, kind: str, configured: float, now: float) -> _Bucket | None:
        bucket = scope.buckets[kind]
        configured /= self._divide
        if configured > 0 and (bucket.limit <= 0 or configured < bucket.limit):
            bucket.limit = configured
        if bucket.limit <= 0:
            return None
        if bucket.level is None or bucket.at is None:
            bucket.level, bucket.at = bucket.limit, now
        elif now > bucket.at:
            bucket.level = min(
                bucket.limit, bucket.level + (now - bucket.at) * bucket.limit / _WINDOW
            )
            bucket.at = now
        return bucket

    def _scope(self, name: str) -> _Scope:
        return self._scopes.setdefault(name, _Scope())

    def take(self, scope: str, tokens: float, rpm: float | None, tpm: float | None) -> float:
        """Reserve one request and ``tokens`` now; the seconds to wait before sending."""
        state, now = self._scope(scope), self._clock()
        wait = max(0.0, state.pause - now)
        for kind, cost, configured in (("r", 1.0, rpm or 0.0), ("t", tokens, tpm or 0.0)):
            bucket = self._load(state, kind, configured, now)
            if bucket is not None and bucket.level is not None:
                bucket.level -= cost
                if bucket.level < 0:
                    wait = max(wait, -bucket.level * _WINDOW / bucket.limit)
        return wait

    def learn(self, scope: str, values: list[float]) -> None:
        """Learn unknown (or lower) limits from header values; lower (only) the levels."""
        state, now = self._scope(scope), self._clock()
        for kind, (limit, remaining) in (("r", values[0:2]), ("t", values[2:4])):
            bucket = state.buckets[kind]
            limit /= self._divide
            if limit > 0 and (bucket.limit <= 0 or limit < bucket.limit):
                bucket.limit = limit
            loaded = self._load(state, kind, 0.0, now)
            if loaded is not None and loaded.level is not None and 0 <= remaining < loaded.level:
                loaded.level = remaining

    def hold(self, scope: str, seconds: float) -> None:
        """Pause the scope for ``seconds`` and empty its buckets (after a 429)."""
        state, now = self._scope(scope), self._clock()
        state.pause = max(state.pause, now + seconds)
        for kind in ("r", "t"):
            bucket = self._load(state, kind, 0.0, now)
            if bucket is not None and bucket.level is not None:
                bucket.level = min(bucket.level, 0.0)

    # -- the RedisBudget interface (what SharedRateLimiter calls) ---------------------------

    async def check(self) -> None:
        """Always reachable (it lives in this process)."""

    async def acquire(
        self, scope: str, tokens: float, *, rpm: float | None, tpm: float | None
    ) -> float:
        return self.take(scope, tokens, rpm, tpm)

    async def observe(self, scope: str, headers: Mapping[str, str]) -> None:
        values = header_values(headers)
        if any(v >= 0 for v in values):
            self.learn(scope, values)

    async def pause(self, scope: str, seconds: float) -> None:
        self.hold(scope, seconds)

    async def aclose(self) -> None:
        """Nothing to close."""
