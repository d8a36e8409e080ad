"""The transport-free shapes of a request to the test server and of its answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Outcome", "Request", "error_outcome"]


@dataclass
class Outcome:
    """What to send back: exactly one of ``body``, ``raw``, ``chunks``, or a dropped connection."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    chunks: list[Any] | None = None
    """SSE events (dicts are sent as JSON, strings as-is; a string starting with ``:`` is sent as
    an SSE comment line, as keep-alives are)."""
    done: bool = True
    """Whether ``data: [DONE]`` follows the chunks."""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    reset: bool = False
    """With ``drop``: abort (RST) instead of closing."""
    trickle: tuple[float, float] | None = None
    """(seconds, interval): send a space (a keep-alive comment for SSE) every ``interval``
    seconds for ``seconds`` before the answer."""


@dataclass
class Request:
    """A request as the answering logic sees it."""

    method: str
    path: str
    route: str
    """The route template, e.g. ``/v1/models/{model}`` (the spec operation's key)."""
    body: Any
    authorization: str | None = None
    parse_error: str | None = None
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    uploads: Mapping[str, tuple[str, bytes]] = field(default_factory=dict)
    """Multipart file fields: name -> (filename, content)."""
    batch: str | None = None
    """The batch id when this is a line of a batch (no rate limits or latency then)."""

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, Mapping) and self.body.get("stream") is True


def error_outcome(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Outcome:
    """An OpenAI-shaped error."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return Outcome(status=status, body=body, headers=dict(headers or {}))
