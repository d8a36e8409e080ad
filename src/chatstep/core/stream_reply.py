"""The stream path: chunks assembled into one Reply, each delta handed to the caller.

A cached answer is replayed as one delta per choice, so stream consumers see the same text.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatstep.backends.base import Backend, Reply
from chatstep.core.request import Request
from chatstep.core.streaming import ChunkAssembler, Delta
from chatstep.core.text_completion import TextChunkAssembler, text_backend
from chatstep.errors import APIConnectionError, InvalidResponseError

__all__ = ["Attempt", "DeltaCallback", "deliver", "receive_stream", "replay"]

DeltaCallback = Callable[[Delta], Any]


@dataclass
class Attempt:
    """One attempt's state: once a caller has seen part of an answer, it may not be retried."""

    delivered: bool = False


async def deliver(on_delta: DeltaCallback | None, delta: Delta) -> None:
    """Hand one delta to the caller's callback (sync or async); no callback, nothing."""
    if on_delta is None:
        return
    outcome = on_delta(delta)
    if inspect.isawaitable(outcome):
        await outcome


async def replay(response: dict[str, Any], on_delta: DeltaCallback | None) -> None:
    """Stream a whole (cached) answer as one delta per choice."""
    if on_delta is None:
        return
    for choice in response.get("choices") or []:
        message = choice.get("message") or {}
        delta = Delta(
            choice=int(choice.get("index", 0)),
            content=message.get("content") if "message" in choice else choice.get("text"),
            tool_calls=message.get("tool_calls"),
            finish_reason=choice.get("finish_reason"),
        )
        await deliver(on_delta, delta)


async def receive_stream(
    backend: Backend,
    request: Request,
    timeout: float,
    on_delta: DeltaCallback | None,
    state: Attempt,
) -> Reply:
    """Stream one request into a whole Reply, delivering deltas as they arrive.

    Raises ``InvalidResponseError`` when no choice arrived (retryable) and
    ``APIConnectionError`` when the stream ended before the answer finished (its ``result``
    holds what arrived, since it was billed).
    """
    body = request.body
    assembler: ChunkAssembler | TextChunkAssembler
    if request.endpoint == "completions":
        streamed = await text_backend(backend).stream_text(body, timeout=timeout)
        assembler = TextChunkAssembler()
    else:
        streamed = await backend.stream(body, timeout=timeout)
        assembler = ChunkAssembler()
    async for chunk in streamed.chunks:
        for delta in assembler.add(chunk):
            if on_delta is not None:
                # Once a caller has seen part of an answer, a retry would show it twice.
                state.delivered = True
                await deliver(on_delta, delta)
    if not assembler.has_choices:
        raise InvalidResponseError(
            f"POST {request.path}: the stream ended without any choice "
            f"({assembler.chunks} events); the server sent no answer, so it is retried"
        )
    response = assembler.response()
    estimated = "usage" not in response
    if estimated:
        # The server sent no usage (no include_usage, or the stream was cut): count it.
        from chatstep.accounting.usage import local_usage

        response["usage"] = local_usage(body, response)
    reply = Reply(response, streamed.headers, usage_estimated=estimated)
    if not assembler.finished:
        error = APIConnectionError(
            f"POST {request.path}: the stream ended before the answer finished"
        )
        if assembler.chunks:
            error.result = reply  # priced by execute(); it was billed
        raise error
    return reply
