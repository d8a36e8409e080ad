"""What a test server remembers: the script, recorded requests, spec violations, counters.

Shared between the test thread (which scripts and inspects) and the server thread (which
answers), so every mutable part sits behind one lock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chatstep.testing.script import Script
from chatstep.testing.spec import SpecValidator, SpecViolation
from chatstep.testing.synth import DEFAULT_MODELS

__all__ = ["Handler", "RecordedRequest", "ServerState", "redact_headers"]

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


@dataclass
class ServerState:
    """Configuration and memory of one test server; the ASGI app reads and writes it."""

    validate: bool = True
    api_key: str | None = None
    """When set, requests must carry ``Authorization: Bearer <api_key>`` (else 401)."""
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    handler: Handler | None = None
    script: Script = field(default_factory=Script)
    connection_closer: ConnectionCloser | None = None
    """Set by the runner (uvicorn) so :class:`Drop` can close a connection without answering."""
    stopping: threading.Event = field(default_factory=threading.Event)
    _validator: SpecValidator | None = None
    _requests: list[RecordedRequest] = field(default_factory=list)
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

    def record(self, request: RecordedRequest) -> None:
        """Remember a received request."""
        with self._lock:
            self._requests.append(request)

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

    def next_id(self, prefix: str) -> str:
        """A deterministic id such as ``chatcmpl-test000001`` (numbering restarts on reset)."""
        with self._lock:
            number = next(self._ids) + 1
        return f"{prefix}-test{number:06d}"

    def next_request_id(self) -> str:
        """The ``x-request-id`` of the next answer."""
        with self._lock:
            number = next(self._request_numbers) + 1
        return f"req_test{number:06d}"

    def next_item(self, path: str, body: Any) -> Any:
        """The scripted item for this request: its queue first, then the handler, else None."""
        item = self.script.pop(path)
        if item is None and self.handler is not None:
            item = self.handler(path, body)
        return item

    def reset(self) -> None:
        """Forget the script, recorded requests, violations and ids."""
        self.script.clear()
        with self._lock:
            self._requests.clear()
            self._violations.clear()
            self._violations_allowed = False
            self._ids = itertools.count()
            self._request_numbers = itertools.count()
