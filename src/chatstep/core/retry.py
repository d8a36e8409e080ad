"""Retry decisions as data: a failure record in, a delay (or "give up") out.

chatstep owns retries, so the SDK's own are off (``max_retries=0``) and nothing retries twice.
Retried: connection errors, timeouts, 408, 409, 429 and 5xx, and a success status whose body is not
an answer (:class:`~chatstep.errors.InvalidResponseError`; an error object in a 2xx body or a stream
counts as the status its code names). Not retried: other 4xx, 501, and a 429 whose code is
``insufficient_quota`` (waiting does not refill a quota). The server has the last word: an
``x-should-retry: true`` header makes any failure retryable, ``false`` makes it final. A server's
``retry-after-ms`` / ``retry-after`` is honoured, up to ``max_retry_after`` seconds.

:class:`RetryLoop` is the one loop that applies a policy: the request pipeline, the batch client
and flow tasks all retry through it, and differ only in the hooks they pass.
"""

from __future__ import annotations

import asyncio
import random
import time as _time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from time import time
from typing import Generic, TypeVar

from chatstep.errors import APIError, InvalidResponseError

__all__ = ["RetryLoop", "RetryPolicy", "parse_retry_after"]

T = TypeVar("T")

_RETRY_STATUSES = frozenset({408, 409, 429})


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(when - (time() if now is None else now), 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, honouring the server's Retry-After."""

    max_retries: int = 5
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.25
    """Each computed delay is scaled by a random factor in [1 - jitter, 1 + jitter]."""
    max_retry_after: float = 120.0
    """A Retry-After longer than this is not waited for: the error is raised."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def is_retryable(self, error: APIError) -> bool:
        # The server's x-should-retry header overrides the status, as the openai SDK does.
        if error.should_retry is not None:
            return error.should_retry
        if isinstance(error, InvalidResponseError):
            return True
        if error.is_timeout or error.is_connection:
            return True
        status = error.status_code
        if status is None:
            return False
        if status == 429 and error.code == "insufficient_quota":
            return False
        # 501 Not Implemented says the server cannot do this at all: waiting will not help.
        return status in _RETRY_STATUSES or (status >= 500 and status != 501)

    def delay_for(self, error: APIError, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based), or None to give up."""
        if attempt > self.max_retries or not self.is_retryable(error):
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return error.retry_after
        base = min(self.initial_delay * self.multiplier ** (attempt - 1), self.max_delay)
        spread = self.rng.uniform(1 - self.jitter, 1 + self.jitter)
        return max(0.0, min(base * spread, self.max_delay))


class RetryLoop(Generic[T]):
    """Calls ``send`` until it succeeds or ``policy`` gives up; ``attempts`` counts the calls.

    ``may_retry()`` can veto a retry the policy would allow (a stream whose deltas a caller has
    already seen). ``deadline`` (a :func:`time.monotonic` value) vetoes a retry whose wait would
    end past it. ``on_retry(error, attempt, delay)`` is told before each wait. ``after_wait()``
    runs after each wait, before the next attempt: a non-None value ends the loop as its result
    (the batch client finds a batch that a failed create made anyway). Only
    :class:`~chatstep.errors.APIError` is retried; the last one is raised as it is.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        deadline: float | None = None,
        may_retry: Callable[[], bool] | None = None,
        on_retry: Callable[[APIError, int, float], None] | None = None,
        after_wait: Callable[[], Awaitable[T | None]] | None = None,
    ) -> None:
        self.policy = policy
        self.attempts = 0
        self._sleep = sleep
        self._deadline = deadline
        self._may_retry = may_retry
        self._on_retry = on_retry
        self._after_wait = after_wait

    def _delay(self, error: APIError) -> float | None:
        if self._may_retry is not None and not self._may_retry():
            return None
        delay = self.policy.delay_for(error, self.attempts)
        if delay is None:
            return None
        if self._deadline is not None and _time.monotonic() + delay > self._deadline:
            return None  # the wait would end past the deadline
        return delay

    async def run(self, send: Callable[[], Awaitable[T]]) -> T:
        while True:
            self.attempts += 1
            try:
                return await send()
            except APIError as exc:
                delay = self._delay(exc)
                if delay is None:
                    raise
                if self._on_retry is not None:
                    self._on_retry(exc, self.attempts, delay)
            await self._sleep(delay)
            if self._after_wait is not None:
                done = await self._after_wait()
                if done is not None:
                    return done
