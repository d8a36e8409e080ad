"""What a test server remembers: the script, recorded requests, spec violations, counters.

Shared between the test thread (which scripts and inspects) and the server thread (which
answers), so every mutable part sits behind one lock.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chatstep.testing.batches import Resources
from chatstep.testing.conditions import Conditions, ConditionsState
from chatstep.testing.fine_tuning import FineTuningJobs
from chatstep.testing.script import Script
from chatstep.testing.spec import SpecValidator, SpecViolation
from chatstep.testing.synth import DEFAULT_MODELS

__all__ = ["Handler", "RecordedRequest", "ServerState", "ServerStats", "redact_headers"]

Handler = Callable[[str, Any], Any]
"""``handler(path, body) -> item | dict | None``: answers when a path's queue is empty."""

ConnectionCloser = Callable[[Any, bool], bool]
"""Closes the connection of an ASGI ``client`` (abort when True); False if it is unknown."""

_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "openai-api-key"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, in arrival order.

    ``headers`` has lower-case names; credentials are redacted to their last four characters
    (``"Bearer ...fake"``) so recorded requests never hold an API key.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    """The parsed JSON body, or None (no body, or a body that is not JSON)."""
    peer: tuple[str, int] | None = None
    """The client's (host, port): requests over one kept-alive connection share it."""
    query: dict[str, str] = field(default_factory=dict)
    """The query parameters (``api-version`` of Azure-style requests...)."""


def _redact(value: str) -> str:
    scheme, _, token = value.partition(" ")
    if not token:
        scheme, token = "", value
    hidden = "..." + token[-4:] if len(token) > 8 else "..."
    return f"{scheme} {hidden}" if scheme else hidden


def redact_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as a dict with lower-case names (repeats joined by ", "), credentials redacted."""
    out: dict[str, str] = {}
    for raw_name, value in items:
        name = raw_name.lower()
        shown = _redact(value) if name in _SECRET_HEADERS else value
        out[name] = f"{out[name]}, {shown}" if name in out else shown
    return out


@dataclass(frozen=True)
class ServerStats:
    """Counters since the last reset (kept even when old recorded requests are dropped)."""

    requests: int
    """Requests received, on every path."""
    by_path: dict[str, int]
    rate_limited: int
    """429s sent by the rate limiter (injected 429 faults are counted in ``faults``)."""
    faults: dict[str, int]
    """Injected faults by kind (``"429"``, ``"reset"``, ...)."""
    spec_violations: int
    trickles_cut: int = 0
    """:class:`~chatstep.testing.Trickle` answers whose client hung up before the end."""


@dataclass
class ServerState:
    """Configuration and memory of one test server; the ASGI app reads and writes it."""

    validate: bool = True
    api_key: str | None = None
    """When set, requests must carry ``Authorization: Bearer <api_key>`` (else 401); requests on
    Azure-style paths (``/openai/...``) must carry it as the ``api-key`` header instead."""
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    handler: Handler | None = None
    script: Script = field(default_factory=Script)
    connection_closer: ConnectionCloser | None = None
    """Set by the runner (uvicorn) so :class:`Drop` can close a connection without answering."""
    stopping: threading.Event = field(default_factory=threading.Event)
    conditions: ConditionsState = field(default_factory=ConditionsState)
    resources: Resources = field(default_factory=Resources)
    """Files and batches."""
    fine_tuning: FineTuningJobs = field(default_factory=FineTuningJobs)
    """Fine-tuning jobs and the models they produced."""
    max_recorded: int | None = None
    """Keep only the newest N recorded requests (None: all); counters are kept regardless."""
    _validator: SpecValidator | None = None
    _requests: deque[RecordedRequest] = field(default_factory=deque)
    _by_path: Counter[str] = field(default_factory=Counter)
    _faults: Counter[str] = field(default_factory=Counter)
    _rate_limited: int = 0
    _trickles_cut: int = 0
    _violations: list[SpecViolation] = field(default_factory=list)
    _violations_allowed: bool = False
    _ids: Any = field(default_factory=itertools.count)
    _request_numbers: Any = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def validator(self) -> SpecValidator | None:
        """The spec validator (loaded on first use), or None when validation is off."""
        if not self.validate:
            return None
        if self._validator is None:
            self._validator = SpecValidator()
        return self._validator

    def __post_init__(self) -> None:
        self._requests = deque(maxlen=self.max_recorded)

    def record(self, request: RecordedRequest) -> None:
        """Remember a received request."""
        with self._lock:
            self._requests.append(request)
            self._by_path[request.path] += 1

    def count_fault(self, kind: str) -> None:
        """Count an injected fault."""
        with self._lock:
            self._faults[kind] += 1

    def count_trickle_cut(self) -> None:
        """Count a trickled answer abandoned by its client."""
        with self._lock:
            self._trickles_cut += 1

    def count_rate_limited(self) -> None:
        """Count a 429 sent by the rate limiter."""
        with self._lock:
            self._rate_limited += 1

    def configure(self, conditions: Conditions) -> None:
        """Put new service conditions in force (fresh, full rate-limit buckets)."""
        self.conditions = ConditionsState.from_conditions(conditions)

    @property
    def stats(self) -> ServerStats:
        """A snapshot of the counters."""
        with self._lock:
            return ServerStats(
                requests=sum(self._by_path.values()),
                by_path=dict(self._by_path),
                rate_limited=self._rate_limited,
                faults=dict(self._faults),
                spec_violations=len(self._violations),
                trickles_cut=self._trickles_cut,
            )

    def add_violation(self, violation: SpecViolation) -> None:
        """Remember a body that does not match the spec."""
        with self._lock:
            self._violations.append(violation)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the recorded requests."""
        with self._lock:
            return list(self._requests)

    @property
    def violations(self) -> list[SpecViolation]:
        """A snapshot of the spec violations seen so far."""
        with self._lock:
            return list(self._violations)

    @property
    def violations_allowed(self) -> bool:
        """Whether the current test declared that spec violations are expected."""
        return self._violations_allowed

    def allow_violations(self) -> None:
        """Declare that the current test expects spec violations."""
        self._violations_allowed = True

    def next_id(self, prefix: str, separator: str = "-") -> str:
        """A deterministic id such as ``chatcmpl-test000001`` (numbering restarts on reset)."""
        with self._lock:
            number = next(self._ids) + 1
        return f"{prefix}{separator}test{number:06d}"

    def next_request_id(self) -> str:
        """The ``x-request-id`` of the next answer."""
        with self._lock:
            number = next(self._request_numbers) + 1
        return f"req_test{number:06d}"

    def reset(self) -> None:
        """Forget the script, recorded requests, violations, ids, files, batches and fine-tuning
        jobs."""
        self.script.clear()
        self.resources.clear()
        self.fine_tuning.clear()
        with self._lock:
            self._requests.clear()
            self._by_path.clear()
            self._faults.clear()
            self._rate_limited = 0
            self._trickles_cut = 0
            self._violations.clear()
            self._violations_allowed = False
            self._ids = itertools.count()
            self._request_numbers = itertools.count()
