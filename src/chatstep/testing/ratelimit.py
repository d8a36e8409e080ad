"""Server-side rate limits, as OpenAI enforces them: requests and tokens per minute.

Two continuously refilled buckets, each holding a minute's worth. A request costs one request
and its prompt tokens plus its completion budget (``max_completion_tokens`` or ``max_tokens``,
else a default, times ``n``), charged up front as OpenAI does. Prompt tokens are counted as
words (``token_charge="words"``), or as OpenAI's own up-front estimate does, message characters
divided by 4 (``token_charge="characters"``), which is well above an exact BPE count. Every
answer carries the ``x-ratelimit-*`` headers; a request that does not fit gets a 429
``rate_limit_exceeded`` with ``Retry-After`` / ``retry-after-ms``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chatstep.testing.synth import message_text, prompt_tokens
from chatstep.testing.synth import request_input_words as input_words

__all__ = [
    "TOKEN_CHARGES",
    "RateDecision",
    "RateLimits",
    "format_duration",
    "prompt_characters",
    "request_cost",
]

DEFAULT_COMPLETION_TOKENS = 1024
"""Completion budget charged when a chat request sets no token limit (as chatstep's limiter)."""
_WINDOW = 60.0


def format_duration(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*``: ``120ms``, ``1.5s``, ``6m0s``."""
    milliseconds = max(0, math.ceil(seconds * 1000 - 1e-6))
    if milliseconds == 0:
        return "0s"
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


#: How the prompt of a chat request is charged to ``tpm``.
TOKEN_CHARGES = ("words", "characters")


def prompt_characters(body: Mapping[str, Any]) -> int:
    """Characters over all message texts of a chat request."""
    messages = body.get("messages") or []
    return sum(len(message_text(m)) for m in messages if isinstance(m, Mapping))


def request_cost(
    path: str, body: Any, default_completion_tokens: int, token_charge: str = "words"
) -> int:
    """Tokens a request is charged: prompt plus completion budget (chat), or input (others).

    ``token_charge="characters"`` counts the prompt as characters / 4 (rounded up), as
    OpenAI's rate limiter estimates it before tokenizing.
    """
    if not isinstance(body, Mapping):
        return 0
    if path.endswith("/chat/completions"):
        limit = body.get("max_completion_tokens")
        if limit is None:
            limit = body.get("max_tokens")
        if not isinstance(limit, int):
            limit = default_completion_tokens
        choices = body.get("n")
        if token_charge == "characters":
            prompt = math.ceil(prompt_characters(body) / 4)
        else:
            prompt = prompt_tokens(body)
        return prompt + limit * (choices if isinstance(choices, int) else 1)
    if path.endswith("/v1/completions"):  # legacy: max_tokens (16 by default) x max(n, best_of)
        limit, n, best_of = body.get("max_tokens"), body.get("n"), body.get("best_of")
        per_prompt = max(n if isinstance(n, int) else 1, best_of if isinstance(best_of, int) else 1)
        budget = (limit if isinstance(limit, int) else 16) * per_prompt
        return input_words(body.get("prompt")) + budget
    return input_words(body.get("input"))


@dataclass
class _Bucket:
    limit: int
    level: float
    updated: float

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(
                float(self.limit), self.level + (now - self.updated) * self.limit / _WINDOW
            )
            self.updated = now

    def wait_for(self, cost: float) -> float:
        return 0.0 if self.level >= cost else (cost - self.level) * _WINDOW / self.limit

    def until_full(self) -> float:
        return (self.limit - self.level) * _WINDOW / self.limit


@dataclass(frozen=True)
class RateDecision:
    """Whether a request fits, and the headers its answer carries."""

    allowed: bool
    headers: dict[str, str]
    kind: str | None = None
    """``"requests"`` or ``"tokens"``: the limit a refused request hit."""
    wait: float = 0.0
    """Seconds until the refused request would fit (0 when it never can)."""
    message: str = ""


class RateLimits:
    """Requests-per-minute and tokens-per-minute buckets (either may be None: unlimited)."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        default_completion_tokens: int = DEFAULT_COMPLETION_TOKENS,
        token_charge: str = "words",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if token_charge not in TOKEN_CHARGES:
            raise ValueError(f"token_charge: {token_charge!r} is not one of {TOKEN_CHARGES}")
        self.token_charge = token_charge
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(
                    f"{name}: must be a positive number per minute or None, got {value}"
                )
        now = clock()
        self._clock = clock
        self.default_completion_tokens = default_completion_tokens
        self._buckets: dict[str, _Bucket] = {}
        if rpm is not None:
            self._buckets["requests"] = _Bucket(rpm, float(rpm), now)
        if tpm is not None:
            self._buckets["tokens"] = _Bucket(tpm, float(tpm), now)
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self._buckets)

    def _headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for kind, bucket in self._buckets.items():
            out[f"x-ratelimit-limit-{kind}"] = str(bucket.limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
            out[f"x-ratelimit-reset-{kind}"] = format_duration(bucket.until_full())
        return out

    def charge(self, path: str, body: Any, model: str = "") -> RateDecision:
        """Take a request's cost from the buckets if it fits; otherwise refuse it."""
        costs = {
            "requests": 1.0,
            "tokens": float(
                request_cost(path, body, self.default_completion_tokens, self.token_charge)
            ),
        }
        with self._lock:
            now = self._clock()
            for bucket in self._buckets.values():
                bucket.refill(now)
            for kind, bucket in self._buckets.items():
                cost = costs[kind]
                if cost > bucket.limit:
                    return RateDecision(
                        False,
                        self._headers(),
                        kind,
                        0.0,
                        f"Request too large for {model or 'this model'} on {_label(kind)}: "
                        f"Limit {bucket.limit}, Requested {int(cost)}. "
                        "The input or output tokens must be reduced in order to run successfully.",
                    )
                wait = bucket.wait_for(cost)
                if wait > 0:
                    used = bucket.limit - max(0, math.floor(bucket.level))
                    return RateDecision(
                        False,
                        self._headers(),
                        kind,
                        wait,
                        f"Rate limit reached for {model or 'this model'} on {_label(kind)}: "
                        f"Limit {bucket.limit}, Used {used}, Requested {int(cost)}. "
                        f"Please try again in {format_duration(wait)}.",
                    )
            for kind, bucket in self._buckets.items():
                bucket.level -= costs[kind]
            return RateDecision(True, self._headers())

    def headers(self) -> dict[str, str]:
        """The current ``x-ratelimit-*`` headers."""
        with self._lock:
            now = self._clock()
            for bucket in self._buckets.values():
                bucket.refill(now)
            return self._headers()


def _label(kind: str) -> str:
    return "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
