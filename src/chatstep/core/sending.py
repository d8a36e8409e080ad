"""Sending one request: the retry loop around attempts, and each attempt's endpoint dispatch.

Hooks see every attempt (``before_send``) and the final reply (``after_reply``); a stream that
has already delivered part of an answer is never retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from chatstep.backends.base import Backend, Reply
from chatstep.core.connection import Connection
from chatstep.core.deadlines import within
from chatstep.core.request import Request
from chatstep.core.response_check import check_response
from chatstep.core.retry import RetryLoop, RetryPolicy
from chatstep.core.stream_reply import Attempt, DeltaCallback, receive_stream
from chatstep.core.text_completion import text_backend
from chatstep.errors import APITimeoutError

if TYPE_CHECKING:
    from chatstep.core.runner import CallHooks

__all__ = ["send_attempt", "send_with_retry"]


async def send_with_retry(
    backend: Backend,
    request: Request,
    conn: Connection,
    policy: RetryPolicy,
    on_delta: DeltaCallback | None,
    *,
    hooks: Sequence[CallHooks],
    sleep: Callable[[float], Awaitable[None]],
) -> tuple[Reply, int]:
    """The checked reply and how many attempts it took; raises the last attempt's error."""
    state = Attempt()

    async def attempt() -> Reply:
        state.delivered = False
        for hook in hooks:
            await hook.before_send(request, conn)
        return await send_attempt(
            backend, request, conn.timeout, on_delta, state, conn.stream_timeout
        )

    loop: RetryLoop[Reply] = RetryLoop(policy, sleep=sleep, may_retry=lambda: not state.delivered)
    reply = await loop.run(attempt)
    for hook in hooks:
        await hook.after_reply(request, conn, reply)
    return reply, loop.attempts


async def send_attempt(
    backend: Backend,
    request: Request,
    timeout: float,
    on_delta: DeltaCallback | None,
    state: Attempt,
    stream_timeout: float | None = None,
) -> Reply:
    """One attempt at the request's endpoint (``timeout`` per read, ``stream_timeout`` for a
    whole stream, seconds); raises ``APITimeoutError`` or an ``APIError`` for a non-answer."""
    body = request.body
    if request.endpoint == "completions" and not body.get("stream"):
        reply = await text_backend(backend).complete_text(body, timeout=timeout)
    elif request.endpoint == "embeddings":
        reply = await backend.embed(body, timeout=timeout)
    elif request.endpoint == "moderations":
        reply = await backend.moderate(body, timeout=timeout)
    elif not body.get("stream"):
        reply = await backend.complete(body, timeout=timeout)
    elif stream_timeout is None:
        reply = await receive_stream(backend, request, timeout, on_delta, state)
    else:
        try:
            reply = await within(
                stream_timeout, receive_stream(backend, request, timeout, on_delta, state)
            )
        except asyncio.TimeoutError:
            raise APITimeoutError(
                f"POST {request.path}: the stream did not finish within "
                f"stream_timeout ({stream_timeout:g} s)"
            ) from None
    # Whatever the backend, a success that is not an answer never goes further.
    check_response(request.endpoint, reply.body, f"POST {request.path}")
    return reply
