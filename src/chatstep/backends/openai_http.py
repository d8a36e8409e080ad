"""The OpenAI-compatible HTTP backend, on the official SDK's ``AsyncOpenAI``.

Bodies go through the SDK's low-level ``post`` untouched (no per-parameter signature to keep in
step with, vendor fields pass as they are) and come back as raw HTTP responses decoded to
plain dicts, with their headers (rate-limit headers feed the scheduler). The SDK's retries are
off: chatstep's retry policy decides. The client and the translation of SDK exceptions come from
:mod:`chatstep.backends.sdk_client` (shared with the Batch API client).

Every 2xx body is shape-checked (:func:`chatstep.core.response_check.check_response`) and every
stream event checked for an error object, so a success status never carries a failure upward.
``timeout`` is the total of one request (a server trickling bytes cannot stretch it); for a stream
it is the longest wait for the headers and then between two events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from chatstep.backends.base import JSON, Reply, StreamReply
from chatstep.backends.log_redaction import install_log_redaction
from chatstep.backends.sdk_client import (
    call_sdk,
    error_from_sdk,
    make_client,
    should_retry_header,
)
from chatstep.core.deadlines import within
from chatstep.core.response_check import check_response, error_from_object
from chatstep.core.retry import parse_retry_after
from chatstep.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    InvalidResponseError,
    may_hold_secret,
    redact_data,
)

if TYPE_CHECKING:
    from chatstep.core.connection import Connection

__all__ = ["OpenAIHTTPBackend"]

T = TypeVar("T")


def _http_response_class() -> type[Any]:
    # The SDK's README ("Undocumented requests") passes its HTTP library's Response as cast_to:
    # httpx2 from the releases that export DefaultAsyncHttpx2Client (openai>=3), httpx before.
    import openai

    if hasattr(openai, "DefaultAsyncHttpx2Client"):
        import httpx2

        return httpx2.Response
    import httpx

    return httpx.Response


def _decode(raw: Any, method: str, path: str) -> JSON:
    try:
        data = json.loads(raw.content)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        # A 200 with a broken body is a transport fault: retryable like a dropped connection.
        raise APIConnectionError(
            f"{method} {path}: the response body is not valid JSON ({exc})"
        ) from None
    if not isinstance(data, dict):
        raise APIConnectionError(f"{method} {path}: the response body is not a JSON object")
    # An endpoint may echo the key (or its masked ends) in an answer; nothing downstream (cache,
    # journals, history, output files) may store it. The walk runs only when the text could
    # hold one (an embeddings answer is mostly floats: walking it would double decoding).
    if may_hold_secret(raw.text):
        answer: JSON = redact_data(data, shapes=False)
        return answer
    return data


def _stream_error(chunk: JSON) -> Any:
    """The error object an event carries, or None: ``{"error": {...}}`` or a bare error object
    (vLLM: ``{"object": "error", "code": 504, "type": "GatewayTimeout", "message": ...}``)."""
    if chunk.get("error") not in (None, {}, ""):
        return chunk["error"]
    if chunk.get("object") == "error" or (
        "choices" not in chunk and "message" in chunk and ("code" in chunk or "type" in chunk)
    ):
        return chunk
    return None


async def _within(seconds: float, where: str, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # httpx's timeout is per read: a server trickling a byte at a time never trips it.
    try:
        return await within(seconds, make())
    except asyncio.TimeoutError:
        raise APITimeoutError(
            f"{where}: no whole answer within the step's timeout ({seconds:g} s in total)"
        ) from None


class OpenAIHTTPBackend:
    """Any OpenAI-compatible endpoint: OpenAI, Azure OpenAI (v1 API), vLLM, Ollama, llama.cpp."""

    name = "openai"

    def __init__(self, conn: Connection) -> None:
        install_log_redaction()
        self.base_url = conn.base_url
        self._client = make_client(conn)
        self._response_class = _http_response_class()

    def __repr__(self) -> str:
        return f"OpenAIHTTPBackend(base_url={str(self._client.base_url)!r})"

    async def _post(self, path: str, body: JSON, timeout: float) -> Reply:
        async def send() -> Any:
            return await self._client.post(
                path, cast_to=self._response_class, body=body, options={"timeout": timeout}
            )

        where = f"POST {path}"
        raw = await _within(timeout, where, lambda: call_sdk("POST", path, send))
        data = _decode(raw, "POST", path)
        try:
            check_response(path.strip("/").replace("/", "."), data, where)
        except APIError as exc:
            # The failure record keeps what the headers say, as for an error status.
            exc.request_id = raw.headers.get("x-request-id")
            exc.retry_after = parse_retry_after(raw.headers)
            exc.should_retry = should_retry_header(raw.headers)
            raise
        return Reply(data, dict(raw.headers))

    async def complete(self, body: JSON, *, timeout: float) -> Reply:
        return await self._post("/chat/completions", body, timeout)

    async def stream(self, body: JSON, *, timeout: float) -> StreamReply:
        return await self._stream("/chat/completions", body, timeout)

    async def complete_text(self, body: JSON, *, timeout: float) -> Reply:
        """POST /completions (the legacy Completions endpoint)."""
        return await self._post("/completions", body, timeout)

    async def stream_text(self, body: JSON, *, timeout: float) -> StreamReply:
        """POST /completions with ``stream: true``: ``text_completion`` events."""
        return await self._stream("/completions", body, timeout)

    async def _stream(self, path: str, body: JSON, timeout: float) -> StreamReply:
        from openai import AsyncStream

        async def send() -> Any:
            return await self._client.post(
                path,
                cast_to=object,
                body=body,
                options={"timeout": timeout},
                stream=True,
                stream_cls=AsyncStream[object],
            )

        where = f"POST {path}"
        sdk_stream = await _within(timeout, where, lambda: call_sdk("POST", path, send))
        return StreamReply(
            self._chunks(sdk_stream, path, timeout), dict(sdk_stream.response.headers)
        )

    async def _chunks(self, sdk_stream: Any, path: str, gap: float) -> AsyncIterator[JSON]:
        """The stream's events; ``gap`` seconds at most between two (keep-alive comments are
        not events)."""
        import openai

        where = f"POST {path}"
        events = sdk_stream.__aiter__()
        try:
            while True:
                try:
                    chunk = await within(gap, events.__anext__())
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise APITimeoutError(
                        f"{where}: the stream sent no event for {gap:g} s (the step's timeout)"
                    ) from None
                if not isinstance(chunk, dict):
                    raise InvalidResponseError(f"{where}: a stream event is not a JSON object")
                error = _stream_error(chunk)
                if error is not None:
                    raise error_from_object(error, where)
                yield redact_data(chunk, shapes=False)
        except openai.OpenAIError as exc:
            raise error_from_sdk(exc, "POST", path) from None
        except json.JSONDecodeError as exc:
            raise APIConnectionError(f"{where}: a stream event is not valid JSON ({exc})") from None
        finally:
            await sdk_stream.close()

    async def embed(self, body: JSON, *, timeout: float) -> Reply:
        return await self._post("/embeddings", body, timeout)

    async def moderate(self, body: JSON, *, timeout: float) -> Reply:
        return await self._post("/moderations", body, timeout)

    async def list_models(self, *, timeout: float) -> Reply:
        async def send() -> Any:
            return await self._client.get(
                "/models", cast_to=self._response_class, options={"timeout": timeout}
            )

        raw = await _within(timeout, "GET /models", lambda: call_sdk("GET", "/models", send))
        return Reply(_decode(raw, "GET", "/models"), dict(raw.headers))

    async def aclose(self) -> None:
        await self._client.close()
