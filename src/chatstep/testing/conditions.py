"""Service conditions: rate limits, latency and injected faults, as a busy real endpoint has.

Faults and latency jitter are drawn from a RNG seeded with ``seed``, the request body and how
many times that exact body was seen before. So the same dataset row meets the same fate on the
same attempt whatever the concurrency or arrival order: runs are reproducible.

Fault kinds:

- ``"429"``: a ``rate_limit_exceeded`` error with ``Retry-After`` / ``retry-after-ms``;
- ``"500"``, ``"503"``: server errors;
- ``"reset"``: the connection is aborted without an answer;
- ``"timeout"``: the answer comes after ``fault_timeout`` seconds (past the client's timeout);
- ``"malformed"``: a 200 whose body is not valid JSON;
- ``"truncated_stream"`` (streaming requests only): the SSE stream ends before its last chunk
  and ``[DONE]``;
- ``"error_200"``: ``200 {"error": {"type": "server_error", "code": "overloaded", ...}}``, as
  OpenRouter and proxies send;
- ``"empty_answer"``: a 200 whose ``choices`` (``data``, ``results``) is empty; a stream with no
  choice at all;
- ``"stream_error"`` (streaming requests only): the first chunks, then an error event.
- ``"echo_key"``: a 200 whose answer quotes the request's API key (a careless proxy or
  gateway), to test that no key is stored;
- ``"masked_key_401"``: a 401 whose message quotes the key masked as OpenAI does
  (``sk-abc1************6789``).

The last two (:data:`KEY_FAULT_KINDS`) are not in :data:`FAULT_KINDS` and never drawn unless
named in ``faults``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatstep.testing.ratelimit import DEFAULT_COMPLETION_TOKENS, RateLimits
from chatstep.testing.script import Delay, Drop, Fail

__all__ = [
    "DEFAULT_FAULTS",
    "FAULT_KINDS",
    "KEY_FAULT_KINDS",
    "Conditions",
    "ConditionsState",
    "EchoKey",
    "Latency",
    "MalformedBody",
    "MaskedKey401",
    "TruncatedStream",
    "WireFault",
]

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "503",
    "reset",
    "timeout",
    "malformed",
    "truncated_stream",
    "error_200",
    "empty_answer",
    "stream_error",
)
"""Faults a busy endpoint or network produces; each is retryable."""
KEY_FAULT_KINDS: tuple[str, ...] = ("echo_key", "masked_key_401")
"""Faults that put key material in an answer (to test redaction); never drawn unless named."""
DEFAULT_FAULTS: tuple[str, ...] = ("429", "500", "503", "reset")
"""Kinds injected when ``faults`` is not given: quick, retryable failures."""

Latency = None | float | tuple[float, float] | Callable[[str, Any], float]
"""Seconds before each answer: a number, ``(mean, jitter)`` (uniform in mean +/- jitter), or
``f(path, body) -> seconds``."""


@dataclass(frozen=True)
class MalformedBody:
    """Internal item: a 200 whose body is cut in the middle of its JSON."""


@dataclass(frozen=True)
class EchoKey:
    """Internal item: a 200 answer whose content quotes the request's API key."""


@dataclass(frozen=True)
class MaskedKey401:
    """Internal item: a 401 quoting the request's key masked as OpenAI does."""


@dataclass(frozen=True)
class TruncatedStream:
    """Internal item: an SSE stream that stops before its final chunk and ``[DONE]``."""


@dataclass(frozen=True)
class WireFault:
    """Internal item: a success status without an answer (``error_200``, ``empty_answer``,
    ``stream_error``)."""

    kind: str


@dataclass(frozen=True)
class Conditions:
    """How the server behaves under load; the defaults are a perfect, instant endpoint."""

    rpm: int | None = None
    """Requests per minute (None: unlimited)."""
    tpm: int | None = None
    """Tokens per minute (None: unlimited)."""
    latency: Latency = None
    fault_rate: float = 0.0
    """Probability that a request (chat, embeddings, moderations) gets an injected fault."""
    faults: tuple[str, ...] = DEFAULT_FAULTS
    seed: int = 0
    fault_timeout: float = 30.0
    """How long a ``"timeout"`` fault holds the answer (make it longer than the client timeout)."""
    fault_retry_after: float = 0.1
    """Seconds an injected 429 asks the client to wait."""
    default_completion_tokens: int = DEFAULT_COMPLETION_TOKENS
    """Completion budget charged to ``tpm`` when a chat request sets no token limit."""
    token_charge: str = "words"
    """How a chat prompt is charged to ``tpm``: ``"words"``, or ``"characters"`` (chars / 4)."""
    batch_progress: str = "time"
    """``"time"``: batches run by themselves; ``"polls"``: each retrieve moves one status on."""
    batch_step_seconds: float = 0.02
    """With ``batch_progress="time"``: how long a batch stays validating, and finalizing."""
    batch_expire_after_lines: int | None = None
    """Batches expire after running this many lines (the rest get ``batch_expired`` errors)."""
    fine_tune_progress: str = "time"
    """``"time"``: fine-tuning jobs run by themselves; ``"polls"``: each retrieve moves one
    status on (``validating_files -> queued -> running -> succeeded``)."""
    fine_tune_step_seconds: float = 0.02
    """With ``fine_tune_progress="time"``: how long a fine-tuning job stays in each status."""
    fine_tune_failure: str | None = None
    """When set, running fine-tuning jobs fail with this error message (``internal_error``)."""

    def __post_init__(self) -> None:
        known = (*FAULT_KINDS, *KEY_FAULT_KINDS)
        unknown = [kind for kind in self.faults if kind not in known]
        if unknown:
            raise ValueError(f"faults: unknown kind(s) {unknown}; choose from {list(known)}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate: must be between 0 and 1, got {self.fault_rate}")
        if self.fault_rate > 0 and not self.faults:
            raise ValueError("faults: empty while fault_rate > 0; name at least one fault kind")
        if self.batch_progress not in ("time", "polls"):
            raise ValueError(f"batch_progress: {self.batch_progress!r} is not 'time' or 'polls'")
        if self.fine_tune_progress not in ("time", "polls"):
            raise ValueError(
                f"fine_tune_progress: {self.fine_tune_progress!r} is not 'time' or 'polls'"
            )
        latency = self.latency
        if isinstance(latency, tuple) and (len(latency) != 2 or min(latency) < 0):
            raise ValueError(
                f"latency: expected (mean_seconds, jitter_seconds) >= 0, got {latency}"
            )


@dataclass
class ConditionsState:
    """Conditions in force on a running server, with their rate-limit buckets."""

    conditions: Conditions = field(default_factory=Conditions)
    limits: RateLimits = field(default_factory=RateLimits)
    _seen: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_conditions(cls, conditions: Conditions) -> ConditionsState:
        limits = RateLimits(
            conditions.rpm,
            conditions.tpm,
            default_completion_tokens=conditions.default_completion_tokens,
            token_charge=conditions.token_charge,
        )
        return cls(conditions, limits)

    def _rng(self, path: str, body: Any) -> random.Random:
        text = json.dumps(body, sort_keys=True, default=str)
        digest = hashlib.sha256(f"{path}\n{text}".encode()).hexdigest()
        with self._lock:
            occurrence = self._seen.get(digest, 0)
            self._seen[digest] = occurrence + 1
        return random.Random(f"{self.conditions.seed}:{digest}:{occurrence}")

    def draw(
        self, path: str, body: Any, *, streaming: bool, batch: bool = False
    ) -> tuple[str | None, float]:
        """(fault kind or None, latency seconds) for this request.

        Batch lines get no latency and no ``timeout`` fault (no client waits on them).
        """
        conditions = self.conditions
        if conditions.latency is None and conditions.fault_rate <= 0:
            return None, 0.0  # nothing to draw: do not remember bodies
        rng = self._rng(path, body)
        latency = 0.0 if batch else _latency(conditions.latency, rng, path, body)
        kinds = [
            k
            for k in conditions.faults
            if streaming or k not in ("truncated_stream", "stream_error")
        ]
        if batch:
            kinds = [k for k in kinds if k != "timeout"]
        if not kinds or conditions.fault_rate <= 0 or rng.random() >= conditions.fault_rate:
            return None, latency
        return rng.choice(kinds), latency

    def fault_item(self, kind: str) -> Any:
        """The script item that plays fault ``kind``."""
        conditions = self.conditions
        if kind == "429":
            wait = conditions.fault_retry_after
            return Fail(
                429,
                "Rate limit reached (an injected fault). Please try again later.",
                code="rate_limit_exceeded",
                type="requests",
                retry_after=math.ceil(wait),
                retry_after_ms=round(wait * 1000),
            )
        if kind in ("500", "503"):
            return Fail(int(kind))
        if kind == "reset":
            return Drop(reset=True)
        if kind == "timeout":
            return Delay(conditions.fault_timeout)
        if kind == "malformed":
            return MalformedBody()
        if kind in ("error_200", "empty_answer", "stream_error"):
            return WireFault(kind)
        if kind == "echo_key":
            return EchoKey()
        if kind == "masked_key_401":
            return MaskedKey401()
        return TruncatedStream()


def _latency(latency: Latency, rng: random.Random, path: str, body: Any) -> float:
    if latency is None:
        return 0.0
    if isinstance(latency, (int, float)):
        return max(0.0, float(latency))
    if isinstance(latency, tuple):
        mean, jitter = latency
        return max(0.0, mean + rng.uniform(-jitter, jitter))
    return max(0.0, float(latency(path, body)))
