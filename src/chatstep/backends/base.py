"""The backend interface: what the pipeline needs from an endpoint or a model.

A backend receives canonical, JSON-able request bodies (exactly what the OpenAI HTTP API takes)
and returns JSON-able response bodies (exactly what it answers). Failures are raised as
:class:`chatstep.errors.APIError` subclasses, so the retry policy above never sees a
backend-specific exception. Nothing above a backend knows which one it talks to.

The legacy Completions endpoint is a separate, optional protocol (:class:`TextCompletionBackend`)
so that backends written for chat alone still satisfy :class:`Backend`; a ``type: completion``
step on a backend without it is a ConfigError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Backend", "Reply", "StreamReply", "TextCompletionBackend"]

JSON = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """A whole response body, with the HTTP headers it came with (empty for local models)."""

    body: JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    usage_estimated: bool = False
    """``body["usage"]`` was counted locally (a stream that sent none, or was cut midway)."""


@dataclass
class StreamReply:
    """A streamed chat completion: response headers, then chunks as they arrive."""

    chunks: AsyncIterator[JSON]
    headers: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """An OpenAI-compatible endpoint or an embedded model."""

    name: str

    async def complete(self, body: JSON, *, timeout: float) -> Reply:
        """POST /chat/completions without streaming."""
        ...

    async def stream(self, body: JSON, *, timeout: float) -> StreamReply:
        """POST /chat/completions with ``stream: true``; chunks are ``chat.completion.chunk``."""
        ...

    async def embed(self, body: JSON, *, timeout: float) -> Reply:
        """POST /embeddings."""
        ...

    async def moderate(self, body: JSON, *, timeout: float) -> Reply:
        """POST /moderations."""
        ...

    async def list_models(self, *, timeout: float) -> Reply:
        """GET /models (a ``list`` object with ``data``)."""
        ...

    async def aclose(self) -> None:
        """Release connections or model memory."""
        ...


@runtime_checkable
class TextCompletionBackend(Protocol):
    """A backend that also serves the legacy Completions endpoint (``type: completion`` steps)."""

    async def complete_text(self, body: JSON, *, timeout: float) -> Reply:
        """POST /completions without streaming (a ``text_completion``)."""
        ...

    async def stream_text(self, body: JSON, *, timeout: float) -> StreamReply:
        """POST /completions with ``stream: true``; events are ``text_completion`` objects."""
        ...
