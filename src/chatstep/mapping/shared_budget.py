"""One rate budget shared by several processes (on one or more machines) through Redis.

Every process of a pool reserves from the same two buckets (requests and tokens per minute,
the algorithm of :class:`~chatstep.mapping.ratelimit.RateLimiter`), kept in one Redis hash per
*scope*: base URL, organization, project, a SHA-256 fingerprint of the API key (never the key)
and model. Each operation is one Lua script reading Redis ``TIME``, so the pool has one clock:

- ``acquire`` takes one request and the request's tokens *now* (the level may go negative, a
  debt) and returns how long to wait before sending: reservations queue fairly across
  processes, in one round trip;
- a 429 sets a pool-wide pause (its Retry-After) and empties both buckets;
- answers' ``x-ratelimit-*`` headers tell the limits when none is configured, and may only
  LOWER the shared level: a request reserved earlier by one process can reach the provider
  after a later one from another, so ``remaining`` never raises it.

Why not a library: ``limits`` counts hits in fixed or moving windows, with no refill rate, no
wait to return and no way to set a level from the provider's headers; ``throttled-py`` has a
Redis token bucket (Lua) returning a retry time, but one bucket per call, so requests and
tokens cannot be taken atomically together, and no pause or header-lowering. The script below
is the existing limiter's arithmetic, ~40 lines of Lua.

An unreachable Redis fails closed: :class:`~chatstep.errors.StorageError` naming the URL
(without its password), which stops the run, never an unlimited run. With ``fallback=N`` (the
pool's size; ``--budget-fallback N``) a process goes on alone instead, with 1/N of the limits
(configured, or learned from headers, which then only lower them), starting from an empty
bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from chatstep.errors import APIError, ConfigError, StorageError
from chatstep.mapping.ratelimit import RateLimiter

if TYPE_CHECKING:
    from chatstep.core.connection import Connection
    from chatstep.core.request import Request

__all__ = ["RateBudget", "RedisBudget", "SharedRateLimiter", "budget_scope"]

_KEY_PREFIX = "chatstep:budget:"
_TTL_MS = 15 * 60 * 1000  # a scope nobody used for 15 minutes is forgotten (refilled anyway)

_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key = KEYS[1]
local op = ARGV[1]
local pause = tonumber(redis.call('HGET', key, 'pause') or '0')
local function load(kind, configured)
  local limit = tonumber(redis.call('HGET', key, kind .. ':limit') or '0')
  if configured > 0 and (limit <= 0 or configured < limit) then limit = configured end
  if limit <= 0 then return nil end
  local level = tonumber(redis.call('HGET', key, kind .. ':level') or tostring(limit))
  local at = tonumber(redis.call('HGET', key, kind .. ':at') or tostring(now))
  if now > at then level = math.min(limit, level + (now - at) * limit / 60) end
  return {limit, level}
end
local function store(kind, b)
  redis.call('HSET', key, kind .. ':limit', tostring(b[1]), kind .. ':level', tostring(b[2]),
             kind .. ':at', tostring(now))
end
local wait = 0
local totals = {r = -1, t = -1}
if op == 'acquire' then
  local costs = {r = 1, t = tonumber(ARGV[4])}
  local configured = {r = tonumber(ARGV[2]), t = tonumber(ARGV[3])}
  wait = math.max(0, pause - now)
  for _, kind in ipairs({'r', 't'}) do
    local b = load(kind, configured[kind])
    if b then
      b[2] = b[2] - costs[kind]
      if b[2] < 0 then wait = math.max(wait, -b[2] * 60 / b[1]) end
      store(kind, b)
      -- Everything reserved so far, this request included: its answer's headers show the
      -- server's count before whatever the pool reserved after it.
      totals[kind] = tonumber(redis.call('HINCRBYFLOAT', key, kind .. ':total', costs[kind]))
    end
  end
elseif op == 'observe' then
  local headers = {r = {tonumber(ARGV[2]), tonumber(ARGV[3])},
                   t = {tonumber(ARGV[4]), tonumber(ARGV[5])}}
  local age = tonumber(ARGV[6])
  local reserved = {r = tonumber(ARGV[7]), t = tonumber(ARGV[8])}
  for _, kind in ipairs({'r', 't'}) do
    local limit, remaining = headers[kind][1], headers[kind][2]
    local stored = tonumber(redis.call('HGET', key, kind .. ':limit') or '0')
    if limit > 0 and (stored <= 0 or limit < stored) then
      redis.call('HSET', key, kind .. ':limit', tostring(limit))
    end
    local b = load(kind, 0)
    if b then
      -- remaining was counted when the server admitted the request, age seconds ago at most:
      -- the server has refilled since (without it, every answer would lower the level a
      -- little too far, and the pool would drift below the ceiling).
      -- and the pool reserved more since: that is not in remaining yet.
      local server = remaining
      if reserved[kind] >= 0 then
        local total = tonumber(redis.call('HGET', key, kind .. ':total') or '0')
        server = remaining + age * b[1] / 60 - math.max(0, total - reserved[kind])
      end
      if remaining >= 0 and server < b[2] then b[2] = server end
      store(kind, b)
    end
  end
elseif op == 'pause' then
  pause = math.max(pause, now + tonumber(ARGV[2]))
  redis.call('HSET', key, 'pause', tostring(pause))
  for _, kind in ipairs({'r', 't'}) do
    local b = load(kind, 0)
    if b then b[2] = math.min(b[2], 0); store(kind, b) end
  end
end
redis.call('PEXPIRE', key, ARGV[#ARGV])
return tostring(wait) .. ' ' .. tostring(totals.r) .. ' ' .. tostring(totals.t)
"""


def budget_scope(conn: Connection, model: str) -> str:
    """The shared budget's scope of a call: endpoint, org, project, key fingerprint, model."""
    key = hashlib.sha256((conn.api_key or "").encode()).hexdigest()
    parts = [conn.base_url or "https://api.openai.com/v1", conn.organization or ""]
    parts += [conn.project or "", key, model]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _shown(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"//[^@/]*@", "//***@", url)


def _number(headers: Mapping[str, str], name: str) -> float:
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return -1.0


class RateBudget(Protocol):
    """What a pool's shared budget offers: :class:`RedisBudget`, or the Ray engine's
    :class:`~chatstep.mapping.pool_budget.PoolBudget` and budget actor."""

    async def check(self) -> None:
        """Raise :class:`StorageError` unless the budget answers."""

    async def acquire(
        self, scope: str, tokens: float, *, rpm: float | None, tpm: float | None
    ) -> tuple[float, tuple[float, float]]:
        """Reserve one request and ``tokens``: seconds to wait, and the pool's reserved totals."""
        ...

    async def observe(
        self,
        scope: str,
        headers: Mapping[str, str],
        age: float = 0.0,
        reserved: tuple[float, float] = (-1.0, -1.0),
    ) -> None:
        """Lower (only) the shared levels from an answer's ``x-ratelimit-*`` headers."""

    async def pause(self, scope: str, seconds: float) -> None:
        """Pause the whole pool for ``seconds`` after a 429."""

    async def aclose(self) -> None:
        """Release the connection (if any)."""


class RedisBudget:
    """Requests- and tokens-per-minute buckets in Redis, shared by every process using ``url``.

    Raises :class:`~chatstep.errors.StorageError` (naming the URL) when Redis cannot be
    reached, and :class:`~chatstep.errors.ConfigError` when the ``redis`` package is missing.
    """

    def __init__(self, url: str) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError:
            raise ConfigError(
                "--budget",
                "a redis:// budget needs the redis package",
                'pip install "chatstep[redis]"',
            ) from None
        self.url = url
        self._client: Any = aioredis.Redis.from_url(
            url, socket_timeout=10.0, socket_connect_timeout=10.0
        )
        self._script: Any = self._client.register_script(_SCRIPT)

    def _unreachable(self, exc: Exception) -> StorageError:
        return StorageError(
            _shown(self.url),
            f"the shared rate budget cannot be reached ({type(exc).__name__}: {exc})",
            "start Redis there, or run without --budget; chatstep does not run unlimited "
            "when its shared budget is down",
        )

    async def _run(self, scope: str, *args: object) -> tuple[float, float, float]:
        """The script's answer: seconds to wait, and the pool's reserved totals (or -1)."""
        import redis

        try:
            answer = await self._script(keys=[_KEY_PREFIX + scope], args=[*args, _TTL_MS])
        except (redis.RedisError, OSError) as exc:
            raise self._unreachable(exc) from None
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        wait, requests, tokens = (float(part) for part in text.split())
        return wait, requests, tokens

    async def check(self) -> None:
        """Raise :class:`StorageError` unless Redis answers."""
        import redis

        try:
            await self._client.ping()
        except (redis.RedisError, OSError) as exc:
            raise self._unreachable(exc) from None

    async def acquire(
        self, scope: str, tokens: float, *, rpm: float | None, tpm: float | None
    ) -> tuple[float, tuple[float, float]]:
        """Reserve one request and ``tokens`` now.

        Returns the seconds to wait before sending, and the pool's reserved totals (requests,
        tokens; -1 while a limit is unknown) to give back to :meth:`observe` with its answer.
        """
        wait, requests, tokens = await self._run(scope, "acquire", rpm or 0, tpm or 0, tokens)
        return wait, (requests, tokens)

    async def observe(
        self,
        scope: str,
        headers: Mapping[str, str],
        age: float = 0.0,
        reserved: tuple[float, float] = (-1.0, -1.0),
    ) -> None:
        """Learn unknown limits from ``x-ratelimit-*`` headers; lower (only) the levels.

        ``age``: seconds since the answered request was let through, ``reserved``: the totals
        its :meth:`acquire` returned. The server's level now is ``remaining``, plus its refill
        since, minus what the pool reserved since; without ``reserved``, just ``remaining``.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        values = [
            _number(lower, f"x-ratelimit-{part}-{kind}")
            for kind in ("requests", "tokens")
            for part in ("limit", "remaining")
        ]
        if any(v >= 0 for v in values):
            await self._run(scope, "observe", *values, max(0.0, age), *reserved)

    async def pause(self, scope: str, seconds: float) -> None:
        """Pause the whole pool for ``seconds`` (after a 429) and empty its buckets."""
        await self._run(scope, "pause", seconds)  # ARGV[2] only

    async def aclose(self) -> None:
        await self._client.aclose()


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose buckets live in a :class:`RedisBudget` shared by a pool.

    The process keeps its own probe (one request until the first answer) and its learned
    token charge ratio; the waiting is decided by the shared buckets.
    """

    def __init__(self, budget: RateBudget, *, fallback: int | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.budget = budget
        self.fallback = fallback
        """Pool size: when Redis cannot be reached, go on alone with 1/N of the limits."""
        self.alone = False
        """Whether this process lost the shared budget and runs on its share alone."""
        self._configured = (self.rpm, self.tpm)
        self._scope: str | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._reserved: dict[int, tuple[float, float]] = {}
        # Other processes' requests show in the headers' remaining counts: no ratio from them.
        self._learn_factor = False

    async def check(self) -> None:
        """Before the run: fail closed if Redis does not answer (or go alone, by option)."""
        try:
            await self.budget.check()
        except StorageError:
            if self.fallback is None:
                raise
            self._go_alone()

    def _go_alone(self) -> None:
        """Use 1/N of the limits known (configured or learned), from empty buckets."""
        assert self.fallback is not None
        self.alone = True
        self._share = 1.0 / self.fallback
        now = self._clock()
        for name in ("_requests", "_tokens"):
            bucket = getattr(self, name)
            if bucket is not None:
                bucket.refill(now)
                limit = bucket.limit * self._share
                setattr(self, name, type(bucket)(limit, min(0.0, bucket.level), now, False))

    async def before_send(self, request: Request, conn: Connection) -> None:
        if self.alone:
            await self.acquire(request)
            return
        scope = budget_scope(conn, str(request.body.get("model", "")))
        self._scope = scope
        started = self._clock()
        async with self._lock:
            await self._wait_for_probe()
            raw = float(self._estimate(request))
            cost = raw * self._factor
            self._record_sent(request, raw, cost, self._clock())
        try:
            wait, reserved = await self.budget.acquire(
                scope, cost, rpm=self._configured[0], tpm=self._configured[1]
            )
        except StorageError:
            if self.fallback is None:
                raise
            if not self.alone:
                self._go_alone()
            self._sent.pop(id(request), None)
            await self.acquire(request)
            return
        if wait > 0:
            await self._sleep(wait)
        sent = self._sent.get(id(request))
        if sent is not None:
            sent.at = self._clock()  # when it really goes (the age of its answer's headers)
            self._reserved[id(request)] = reserved
        self.stats.requests += 1
        self.stats.tokens += int(cost)
        self.stats.waited_seconds += max(0.0, self._clock() - started)

    async def after_reply(self, request: Request, conn: Connection, reply: Any) -> None:
        sent = self._sent.get(id(request))
        age = self._clock() - sent.at if sent is not None else 0.0
        reserved = self._reserved.pop(id(request), (-1.0, -1.0))
        self.observe_headers(reply.headers, request)
        if reply.headers and not self.alone:
            scope = budget_scope(conn, str(request.body.get("model", "")))
            await self.budget.observe(scope, reply.headers, age, reserved)

    def forget(self, request: Request) -> None:
        self._reserved.pop(id(request), None)
        super().forget(request)

    def observe_failure(self, error: APIError) -> None:
        """As :meth:`RateLimiter.observe_failure`, and a 429 pauses the whole pool."""
        rate_limited = self.stats.rate_limited
        super().observe_failure(error)
        scope = self._scope
        if scope is None or self.alone:
            return
        pause: float | None = None
        if self.stats.rate_limited > rate_limited:
            pause = error.retry_after if error.retry_after is not None else self.default_pause
        if pause is None and not error.rate_limits:
            return
        task = asyncio.get_running_loop().create_task(
            self._tell_pool(scope, error.rate_limits, pause)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _tell_pool(
        self, scope: str, headers: Mapping[str, str] | None, pause: float | None
    ) -> None:
        # A failure here resurfaces at the next acquire (the same Redis), which fails the run.
        with contextlib.suppress(StorageError):
            if headers:
                await self.budget.observe(scope, headers)
            if pause is not None:
                await self.budget.pause(scope, pause)

    async def aclose(self) -> None:
        """Wait for pending pool updates and close the Redis connection."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.budget.aclose()
