"""Client-side rate limits: requests and tokens per minute, configured or learned from headers.

:class:`RateLimiter` keeps two continuously refilled buckets (requests, tokens), the way
OpenAI's own limiter works. A request takes one request and its token estimate
(``estimate_request_tokens``: prompt plus ``max_tokens`` x ``n``) before it
is sent; when a bucket is short, the request waits, in arrival order.

Limits come from the caller (``rpm``/``tpm``) or, when not given, from the answers:
``x-ratelimit-limit-*`` sets a bucket's size and refill rate (a minute's worth, unless
``x-ratelimit-reset-*`` shows a longer window, such as a per-day request limit), and
``x-ratelimit-remaining-*`` re-syncs its level with the server's. Until the first answer tells
the limits and what is left of them, only one request is in flight, so a burst cannot hit the
wall before we know where it is (configured limits are checked this way too: another process
may be using the same key). A 429 pauses the whole pool for its ``Retry-After`` (else
``default_pause``), instead of letting every worker find the wall on its own, and its own
``x-ratelimit-*`` headers are read like an answer's (a probe that meets a 429 learns the limits).

Providers charge tokens by an estimate of their own (OpenAI: prompt characters / 4 plus
``max_tokens`` x ``n``), not by an exact count. The limiter learns the ratio between what the
server charged and what it estimated, from the drop of ``x-ratelimit-remaining-tokens`` between
two answers (plus the refill in between) against its own estimates of the requests sent in
between, and budgets every request at its estimate times that ratio (:attr:`token_factor`).

It plugs into :class:`~chatstep.core.runner.AsyncRunner` as a
:class:`~chatstep.core.runner.CallHooks` (``before_send`` waits for budget, ``after_reply`` learns
from headers). The runner's hooks do not see failed attempts, so 429s reach the limiter through
the retry policy, which sees every failure anyway: :func:`observe_failures` wraps a
:class:`RetryPolicy` to report them.
"""

from __future__ import annotations

import asyncio
import collections
import re
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from chatstep.core.deadlines import within
from chatstep.core.retry import RetryPolicy
from chatstep.errors import APIError, ConfigError

if TYPE_CHECKING:
    from chatstep.backends.base import Reply
    from chatstep.core.connection import Connection
    from chatstep.core.request import Request
    from chatstep.core.result import AnyResult
    from chatstep.steps.definitions import Step

__all__ = ["LimiterStats", "RateLimiter", "observe_failures", "parse_reset"]

#: How long the pool pauses after a 429 that names no wait (seconds).
DEFAULT_PAUSE = 1.0
#: How long other requests wait for the first answer to reveal the limits before going anyway.
PROBE_TIMEOUT = 30.0
_WINDOW = 60.0  # OpenAI's limits are per minute
# Waits shorter than this count as none: per-minute budgets need no finer precision, and
# float rounding must not leave a request sleeping for ever-smaller slivers of time.
_MIN_WAIT = 1e-3

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_reset(value: str | None) -> float | None:
    """Seconds in an ``x-ratelimit-reset-*`` value (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"0.5"``)."""
    if not value:
        return None
    text = value.strip().lower()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


@dataclass
class _Bucket:
    """A continuously refilled budget; the level may go negative (a debt) for a big request."""

    limit: float
    """Units per window (also the bucket's size)."""
    level: float
    updated: float
    learned: bool
    window: float = _WINDOW
    """Seconds in which the bucket refills from empty: a minute, unless the server shows more."""
    follows: bool | None = None
    """Whether answers may raise the level too (None: when ``learned``)."""

    @property
    def rate(self) -> float:
        return self.limit / self.window

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.limit, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, cost: float) -> float:
        """Seconds until ``cost`` fits (a cost above the size waits for a full bucket)."""
        need = min(cost, self.limit)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


@dataclass
class LimiterStats:
    """What the limiter saw: requests and tokens let through, 429s, time spent waiting."""

    requests: int = 0
    tokens: int = 0
    rate_limited: int = 0
    """429 answers (each pauses the pool)."""
    waited_seconds: float = 0.0
    """Time requests spent waiting for budget or a pause, summed over requests."""
    learned_rpm: float | None = None
    learned_tpm: float | None = None
    token_factor: float = 1.0
    """Tokens the server charges per token estimated here (learned; 1.0 until known)."""


@dataclass
class _Sent:
    at: float
    requests_through: float
    """Requests let through up to and including this one (a running total)."""
    tokens_through: float
    raw_through: float = 0.0
    """Tokens estimated (uncorrected) up to and including this request."""
    tokens: float = 0.0
    """Tokens budgeted for this request."""


@dataclass
class _Anchor:
    """The latest answer's ``remaining-tokens``, and where our counts stood when it was sent."""

    at: float
    raw_through: float
    remaining: float


# The learned charge ratio: the median over the last intervals between answers (an answer
# admitted out of order makes one interval look cheap and the next dear: the median ignores
# both), used once a few intervals are in, and kept within bounds a real provider stays inside.
_FACTOR_INTERVALS = 31
_FACTOR_MIN_INTERVALS = 3
_FACTOR_BOUNDS = (0.5, 4.0)
# Timing noise between two clocks leaves the learned ratio a little low or high; a little low
# sends a request a few tokens early, and a refused request (estimated, not charged) drags the
# ratio lower still. A small margin keeps the run on the safe side of that loop.
_FACTOR_MARGIN = 1.03


class RateLimiter:
    """Requests-per-minute and tokens-per-minute budgets shared by every call of a run.

    ``rpm``/``tpm`` None and ``learn`` True: learn that limit from response headers. Configured
    limits are never raised by headers, only lowered to what the server says is left.
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        learn: bool = True,
        default_pause: float = DEFAULT_PAUSE,
        estimate: Callable[[Request], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ConfigError(name, f"must be positive, got {value}", "omit it for no limit")
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._estimate = estimate or _estimate_tokens
        now = clock()
        # A configured limit is two buckets: one that follows the server's count both ways
        # (as a learned one does: only lowering it drifts low, as answers come out of order),
        # and the caller's own cap, which answers never touch (to stay below the server).
        self._requests = _Bucket(rpm, rpm, now, False, follows=learn) if rpm else None
        self._tokens = _Bucket(tpm, tpm, now, False, follows=learn) if tpm else None
        self._caps = [
            (kind, _Bucket(limit, limit, now, False))
            for kind, limit in (("requests", rpm), ("tokens", tpm))
            if limit
        ]
        self._caps_synced: set[str] = set()
        self.learn = learn
        self.default_pause = default_pause
        self.stats = LimiterStats()
        self._lock = asyncio.Lock()
        self._pause_until = 0.0
        # Until the first answer tells the limits (and how much of them is left: a key may
        # be in use elsewhere), one request at a time; configured limits are probed too.
        self._probing = learn
        self._probe_sent = False
        self._probe_done = asyncio.Event()
        self._probes = 1
        self._sent: dict[int, _Sent] = {}
        self._total_requests = 0.0
        self._total_tokens = 0.0
        self._raw_tokens = 0.0
        self._synced_at = 0.0
        self._factor = 1.0
        self._anchor: _Anchor | None = None
        self._ratios: collections.deque[float] = collections.deque(maxlen=_FACTOR_INTERVALS)
        self._clean_after = 0.0
        # A pool sharing one budget sees other processes' charges in ``remaining``: no ratio.
        self._learn_factor = True
        # The part of a limit learned from headers this limiter may use (1/N of a pool's).
        self._share = 1.0

    # -- the budget ------------------------------------------------------------------------

    @property
    def rpm(self) -> float | None:
        """The requests-per-minute limit in force (configured or learned), None if unknown."""
        return self._requests.limit if self._requests else None

    @property
    def tpm(self) -> float | None:
        """The tokens-per-minute limit in force (configured or learned), None if unknown."""
        return self._tokens.limit if self._tokens else None

    @property
    def paused_for(self) -> float:
        """Seconds left in a pool-wide pause after a 429 (0 when not paused)."""
        return max(0.0, self._pause_until - self._clock())

    @property
    def token_factor(self) -> float:
        """Tokens the server charges per token estimated here (learned from headers; 1.0)."""
        return self._factor

    def estimate(self, request: Request) -> int:
        """The tokens this request is budgeted at."""
        return self._estimate(request)

    async def acquire(self, request: Request) -> None:
        """Wait until the request fits the budgets (and any pause is over), then take it."""
        started = self._clock()
        async with self._lock:
            await self._wait_for_probe()
            # No token limit known (none configured, none learned): counting tokens would only
            # load a tokenizer vocabulary (~70 MB) for nothing.
            raw = float(self._estimate(request)) if self._tokens is not None else 0.0
            cost = raw * self._factor
            while True:
                now = self._clock()
                wait = self._pause_until - now
                for bucket, amount in self._charges(cost):
                    if bucket is not None:
                        bucket.refill(now)
                        wait = max(wait, bucket.wait(amount))
                if wait < _MIN_WAIT:
                    break
                await self._sleep(wait)
            for bucket, amount in self._charges(cost):
                if bucket is not None:
                    bucket.level -= amount
            self._record_sent(request, raw, cost, now)
        self.stats.requests += 1
        self.stats.tokens += int(cost)
        self.stats.waited_seconds += max(0.0, now - started)

    def _charges(self, cost: float) -> list[tuple[_Bucket | None, float]]:
        """Each bucket a request draws from, with what it takes from it."""
        caps = [(cap, 1.0 if kind == "requests" else cost) for kind, cap in self._caps]
        return [(self._requests, 1.0), (self._tokens, cost), *caps]

    def _record_sent(self, request: Request, raw: float, cost: float, now: float) -> None:
        """Count a request let through (``raw`` tokens estimated, ``cost`` budgeted)."""
        self._total_requests += 1.0
        self._total_tokens += cost
        self._raw_tokens += raw
        self._sent[id(request)] = _Sent(
            now, self._total_requests, self._total_tokens, self._raw_tokens, cost
        )
        if self._probing:
            self._probe_sent = True

    async def _wait_for_probe(self) -> None:
        while self._probing and self._probe_sent:
            try:
                await within(PROBE_TIMEOUT, self._probe_done.wait())
            except asyncio.TimeoutError:
                self._end_probe()

    def _next_probe(self) -> None:
        """Let one more request go alone (the next in line), the others still waiting."""
        self._probe_sent = False
        done, self._probe_done = self._probe_done, asyncio.Event()
        done.set()

    def _end_probe(self) -> None:
        self._probing = False
        self._probe_done.set()

    # -- feedback --------------------------------------------------------------------------

    def observe_headers(self, headers: Mapping[str, str], request: Request | None = None) -> None:
        """Learn limits and re-sync levels from an answer's ``x-ratelimit-*`` headers."""
        lower = {k.lower(): v for k, v in headers.items()} if headers else {}
        now = self._clock()
        sent = self._sent.pop(id(request), None) if request is not None else None
        for kind in ("requests", "tokens"):
            limit = _header_number(lower, f"x-ratelimit-limit-{kind}")
            remaining = _header_number(lower, f"x-ratelimit-remaining-{kind}")
            reset = parse_reset(lower.get(f"x-ratelimit-reset-{kind}"))
            self._observe(kind, limit, remaining, reset, sent, now)
        if sent is not None and (self._synced_at < sent.at):
            self._synced_at = sent.at
        if self._probing:
            # With a token limit, a few more requests go one at a time: each interval between
            # two of them shows the server's charge cleanly, so the burst that follows is
            # budgeted at the learned ratio instead of meeting the wall.
            if (
                self._tokens is not None
                and self._learn_factor
                and sent is not None
                and len(self._ratios) < _FACTOR_MIN_INTERVALS
                and self._probes < _FACTOR_MIN_INTERVALS + 1
            ):
                self._probes += 1
                self._next_probe()
            else:
                self._end_probe()

    def _observe(
        self,
        kind: str,
        limit: float | None,
        remaining: float | None,
        reset: float | None,
        sent: _Sent | None,
        now: float,
    ) -> None:
        bucket = self._requests if kind == "requests" else self._tokens
        if limit is not None and limit > 0 and self.learn:
            if bucket is None:
                limit *= self._share
                level = min(limit, remaining if remaining is not None else limit)
                # A share of a pool's limit is kept like a configured one: only lowered.
                bucket = _Bucket(limit, level, now, self._share == 1.0)
                if kind == "requests":
                    self._requests = bucket
                else:
                    self._tokens = bucket
            elif bucket.learned:
                bucket.refill(now)
                bucket.limit = limit
            if bucket.learned:
                bucket.window = _window(limit, remaining, reset, bucket.window)
            if kind == "requests":
                self.stats.learned_rpm = bucket.limit if bucket.learned else None
            else:
                self.stats.learned_tpm = bucket.limit if bucket.learned else None
        if bucket is None or remaining is None or sent is None:
            return
        if kind == "tokens" and self._learn_factor:
            self._calibrate(bucket, remaining, sent)
        if sent.at <= self._synced_at:
            return
        bucket.refill(now)
        # The server counted ``remaining`` right after admitting this request; since then it
        # refilled, and the requests we sent after this one were (or will be) taken from it.
        if kind == "requests":
            later = self._total_requests - sent.requests_through
        else:
            later = self._total_tokens - sent.tokens_through
        server_now = min(bucket.limit, remaining + (now - sent.at) * bucket.rate - later)
        # Learned budgets follow the server both ways (its count is the truth); configured
        # ones are only lowered (the caller may want to stay below the server's limit). A
        # request sent before this one and still unanswered may reach the server after it (a
        # new connection is slower): its cost is missing from ``remaining``, so raise the
        # level only as far as it would stand if every earlier unanswered request was not
        # counted there yet.
        earlier = [other for other in self._sent.values() if other.at < sent.at]
        lowered = min(bucket.level, server_now)
        if kind not in self._caps_synced:
            # The caller's cap starts at what the first answer shows is left, not full: a key
            # already in use (other processes on a fixed split) leaves no minute's burst.
            self._caps_synced.add(kind)
            for cap_kind, cap in self._caps:
                if cap_kind == kind:
                    cap.refill(now)
                    cap.level = min(cap.level, server_now)
        if bucket.learned if bucket.follows is None else bucket.follows:
            unseen = sum(1.0 if kind == "requests" else o.tokens for o in earlier)
            bucket.level = max(lowered, server_now - unseen)
        else:
            bucket.level = lowered

    def _calibrate(self, bucket: _Bucket, remaining: float, sent: _Sent) -> None:
        """Learn :attr:`token_factor` from ``remaining`` against the previous answer's."""
        if sent.raw_through <= self._clean_after:
            return
        anchor = self._anchor
        if anchor is not None and sent.at > anchor.at:
            refill = (sent.at - anchor.at) * bucket.rate
            estimated = sent.raw_through - anchor.raw_through
            # A full bucket in between would have lost refill: the drop would not be the charge.
            if anchor.remaining + refill < bucket.limit and estimated > 0:
                charged = anchor.remaining + refill - remaining
                self._ratios.append(charged / estimated)
                if len(self._ratios) >= _FACTOR_MIN_INTERVALS:
                    low, high = _FACTOR_BOUNDS
                    ratio = statistics.median(self._ratios) * _FACTOR_MARGIN
                    self._factor = min(high, max(low, ratio))
                    self.stats.token_factor = self._factor
        if anchor is None or sent.at > anchor.at:
            self._anchor = _Anchor(sent.at, sent.raw_through, remaining)

    def observe_failure(self, error: APIError) -> None:
        """Pause the whole pool on a 429 (for its Retry-After); end a probe on any failure.

        A failure's own ``x-ratelimit-*`` headers are read as an answer's are.
        """
        if error.rate_limits:
            self.observe_headers(error.rate_limits)
        if self._probing and self._probe_sent:
            self._end_probe()
        if error.status_code != 429 or error.code == "insufficient_quota":
            return
        self.stats.rate_limited += 1
        # Refused requests were estimated here but not charged there: intervals holding them
        # would understate the ratio, so only requests sent after this one count.
        self._anchor = None
        self._clean_after = self._raw_tokens
        now = self._clock()
        pause = error.retry_after if error.retry_after is not None else self.default_pause
        self._pause_until = max(self._pause_until, now + pause)
        # The server says a budget is empty: do not spend what we think is left right after.
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)
                bucket.level = min(bucket.level, 0.0)

    def forget(self, request: Request) -> None:
        """Drop the bookkeeping of a request that will get no answer."""
        self._sent.pop(id(request), None)
        if self._probing and self._probe_sent:
            self._end_probe()

    # -- CallHooks -------------------------------------------------------------------------

    async def before_send(self, request: Request, conn: Connection) -> None:
        await self.acquire(request)

    async def after_reply(self, request: Request, conn: Connection, reply: Reply) -> None:
        self.observe_headers(reply.headers, request)

    async def after_result(
        self, step: Step, request: Request, result: AnyResult | None, error: Exception | None
    ) -> None:
        self.forget(request)


def _window(limit: float, remaining: float | None, reset: float | None, current: float) -> float:
    """The refill window the headers show: ``reset`` refills ``limit - remaining``.

    OpenAI's limits are per minute, and near a minute the headers' rounding is noise, so only
    a clearly longer window (a per-day request limit) replaces the minute, and only from a
    deficit big enough to measure.
    """
    if remaining is None or reset is None or reset <= 0:
        return current
    deficit = limit - remaining
    if deficit < max(2.0, 0.05 * limit):
        return current
    seen = reset * limit / deficit
    return seen if seen > 1.5 * _WINDOW else _WINDOW


def _estimate_tokens(request: Request) -> int:
    from chatstep.accounting.tokens import estimate_request_tokens

    return estimate_request_tokens(request.body, request.endpoint)


@dataclass(frozen=True)
class _ObservedRetryPolicy(RetryPolicy):
    """A retry policy that reports every failure it decides on to an observer."""

    observer: Callable[[APIError], None] | None = field(default=None, compare=False, repr=False)

    def delay_for(self, error: APIError, attempt: int) -> float | None:
        if self.observer is not None:
            self.observer(error)
        return super().delay_for(error, attempt)


def observe_failures(policy: RetryPolicy, limiter: RateLimiter) -> RetryPolicy:
    """``policy``, also telling ``limiter`` about every failed attempt (so 429s pause the pool)."""
    base: dict[str, Any] = {f.name: getattr(policy, f.name) for f in fields(RetryPolicy)}
    return _ObservedRetryPolicy(**base, observer=limiter.observe_failure)
