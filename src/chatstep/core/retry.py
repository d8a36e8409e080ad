"""Retry decisions as data: a failure record in, a delay (or "give up") out.

chatstep owns retries, so the SDK's own are off (``max_retries=0``) and nothing retries twice.
Retried: connection errors, timeouts, 408, 409, 429 and 5xx, and a success status whose body is not
an answer (:class:`~chatstep.errors.InvalidResponseError`; an error object in a 2xx body or a stream
counts as the status its code names). Not retried: other 4xx, 501, and a 429 whose code is
``insufficient_quota`` (waiting does not refill a quota). The server has the last word: an
``x-should-retry: true`` header makes any failure retryable, ``false`` makes it final. A server's
``retry-after-ms`` / ``retry-after`` is honoured, up to ``max_retry_after`` seconds.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from time import time

from chatstep.errors import APIError, InvalidResponseError

__all__ = ["RetryPolicy", "parse_retry_after"]

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
