"""The OpenAI-compatible HTTP backend, on the official SDK's ``AsyncOpenAI``.

Bodies go through the SDK's low-level ``post`` untouched (no per-parameter signature to keep in
step with, vendor fields pass as they are) and come back as raw HTTP responses decoded to
plain dicts, with their headers (rate-limit headers feed the scheduler). The SDK's retries are
off: chatstep's retry policy decides. SDK exceptions become chatstep errors here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from chatstep.backends.base import JSON, Reply, StreamReply
from chatstep.core.retry import parse_retry_after
from chatstep.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    error_for_status,
    redact,
)

__all__ = ["OpenAIHTTPBackend", "error_from_sdk"]

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


def error_from_sdk(exc: Exception, method: str, path: str) -> APIError:
    """An OpenAI SDK exception as the chatstep error it stands for."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return APITimeoutError(f"{method} {path}: no answer within the step's timeout")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("code") if isinstance(body.get("code"), str) else None
        detail = body.get("message") if isinstance(body.get("message"), str) else exc.message
        label = f"{status} {code}" if code else str(status)
        return error_for_status(status)(
            f"{method} {path} -> {label}: {redact(str(detail))}",
            status_code=status,
            code=code,
            request_id=headers.get("x-request-id"),
            retry_after=parse_retry_after(headers),
            body=body or None,
            rate_limits={
                k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")
            }
            or None,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return APIConnectionError(
            f"{method} {path}: connection failed: {type(cause).__name__}: {cause}"
        )
    return APIError(f"{method} {path}: {type(exc).__name__}: {exc}")


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
    return data


class OpenAIHTTPBackend:
    """Any OpenAI-compatible endpoint: OpenAI, Azure OpenAI (v1 API), vLLM, Ollama, llama.cpp."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        from openai import AsyncOpenAI

        self.base_url = base_url
        self._client = AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            max_retries=0,
            default_headers=dict(headers or {}),
        )
        self._response_class = _http_response_class()

    def __repr__(self) -> str:
        return f"OpenAIHTTPBackend(base_url={str(self._client.base_url)!r})"

    async def _call(self, method: str, path: str, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        import openai

        try:
            return await make()
        except openai.OpenAIError as exc:
            raise error_from_sdk(exc, method, path) from None

    async def _post(self, path: str, body: JSON, timeout: float) -> Reply:
        raw = await self._call(
            "POST",
            path,
            lambda: self._client.post(
                path, cast_to=self._response_class, body=body, options={"timeout": timeout}
            ),
        )
        return Reply(_decode(raw, "POST", path), dict(raw.headers))

    async def complete(self, body: JSON, *, timeout: float) -> Reply:
        return await self._post("/chat/completions", body, timeout)

    async def stream(self, body: JSON, *, timeout: float) -> StreamReply:
        from openai import AsyncStream

        path = "/chat/completions"
        sdk_stream = await self._call(
            "POST",
            path,
            lambda: self._client.post(
                path,
                cast_to=object,
                body=body,
                options={"timeout": timeout},
                stream=True,
                stream_cls=AsyncStream[object],
            ),
        )
        return StreamReply(self._chunks(sdk_stream, path), dict(sdk_stream.response.headers))

    async def _chunks(self, sdk_stream: Any, path: str) -> AsyncIterator[JSON]:
        import openai

        try:
            async for chunk in sdk_stream:
                if isinstance(chunk, dict):
                    yield chunk
        except openai.OpenAIError as exc:
            raise error_from_sdk(exc, "POST", path) from None
        except json.JSONDecodeError as exc:
            raise APIConnectionError(
                f"POST {path}: a stream event is not valid JSON ({exc})"
            ) from None
        finally:
            await sdk_stream.close()

    async def embed(self, body: JSON, *, timeout: float) -> Reply:
        return await self._post("/embeddings", body, timeout)

    async def moderate(self, body: JSON, *, timeout: float) -> Reply:
        return await self._post("/moderations", body, timeout)

    async def list_models(self, *, timeout: float) -> Reply:
        raw = await self._call(
            "GET",
            "/models",
            lambda: self._client.get(
                "/models", cast_to=self._response_class, options={"timeout": timeout}
            ),
        )
        return Reply(_decode(raw, "GET", "/models"), dict(raw.headers))

    async def aclose(self) -> None:
        await self._client.close()
