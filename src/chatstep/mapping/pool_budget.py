"""The shared rate budget's arithmetic in Python, for a pool without Redis.

:class:`PoolBudget` has the methods of :class:`~chatstep.mapping.shared_budget.RedisBudget`
(``acquire`` returns the wait and the pool's reserved totals, ``observe`` only lowers,
``pause`` empties the buckets) and keeps
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
    reserved: float = 0.0
    """Everything ever reserved from this bucket: answers subtract what came after them."""


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

    def take(
        self, scope: str, tokens: float, rpm: float | None, tpm: float | None
    ) -> tuple[float, tuple[float, float]]:
        """Reserve one request and ``tokens`` now.

        Returns the seconds to wait before sending, and the reserved totals (requests, tokens;
        -1 while a limit is unknown) to hand back to :meth:`learn` with the answer's headers.
        """
        state, now = self._scope(scope), self._clock()
        wait = max(0.0, state.pause - now)
        totals = [-1.0, -1.0]
        for i, (kind, cost, configured) in enumerate(
            (("r", 1.0, rpm or 0.0), ("t", tokens, tpm or 0.0))
        ):
            bucket = self._load(state, kind, configured, now)
            if bucket is not None and bucket.level is not None:
                bucket.level -= cost
                bucket.reserved += cost
                totals[i] = bucket.reserved
                if bucket.level < 0:
                    wait = max(wait, -bucket.level * _WINDOW / bucket.limit)
        return wait, (totals[0], totals[1])

    def learn(
        self,
        scope: str,
        values: list[float],
        age: float = 0.0,
        reserved: tuple[float, float] = (-1.0, -1.0),
    ) -> None:
        """Learn unknown (or lower) limits from header values; lower (only) the levels.

        As the Redis script: the provider's level now is ``remaining`` plus its refill in the
        ``age`` seconds since the request went, minus what the pool reserved after it (the
        totals :meth:`take` returned for it); without them, just ``remaining``.
        """
        state, now = self._scope(scope), self._clock()
        pairs = (("r", values[0:2], reserved[0]), ("t", values[2:4], reserved[1]))
        for kind, (limit, remaining), total in pairs:
            bucket = state.buckets[kind]
            limit /= self._divide
            if limit > 0 and (bucket.limit <= 0 or limit < bucket.limit):
                bucket.limit = limit
            loaded = self._load(state, kind, 0.0, now)
            if loaded is None or loaded.level is None or remaining < 0:
                continue
            level = remaining
            if total >= 0:
                level += max(0.0, age) * loaded.limit / _WINDOW - (loaded.reserved - total)
            loaded.level = min(loaded.level, level)

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
    ) -> tuple[float, tuple[float, float]]:
        return self.take(scope, tokens, rpm, tpm)

    async def observe(
        self,
        scope: str,
        headers: Mapping[str, str],
        age: float = 0.0,
        reserved: tuple[float, float] = (-1.0, -1.0),
    ) -> None:
        values = header_values(headers)
        if any(v >= 0 for v in values):
            self.learn(scope, values, age, reserved)

    async def pause(self, scope: str, seconds: float) -> None:
        self.hold(scope, seconds)

    async def aclose(self) -> None:
        """Nothing to close."""
