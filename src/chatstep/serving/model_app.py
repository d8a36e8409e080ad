"""Serve any :class:`~chatstep.backends.base.Backend` as an OpenAI-compatible HTTP API.

::

    POST /v1/chat/completions   JSON, or server-sent events with "stream": true
    POST /v1/completions        the legacy endpoint, on backends that serve it (the embedded model)
    POST /v1/embeddings
    POST /v1/moderations
    GET  /v1/models
    GET  /v1/models/{model}

Backend errors become the HTTP status they stand for, with an OpenAI error body
``{"error": {"message", "type", "param", "code"}}``, so the official clients raise their usual
exceptions. A client that disconnects mid-stream closes the backend's stream, which stops the
generation. The timeout given to the backend is the client's own (the OpenAI SDKs send it as
``X-Stainless-Read-Timeout``), else the app's default. With ``api_key`` set, every request must
send ``Authorization: Bearer KEY`` (compared in constant time; anything else is a 401); without
it there is no authentication, so bind to localhost or put a proxy that checks keys in front.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from chatstep.backends.base import JSON, Backend, Reply
from chatstep.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BackendUnavailableError,
    BadRequestError,
    ChatstepError,
    ConfigError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    redact,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["DEFAULT_TIMEOUT", "BearerAuthMiddleware", "create_serving_app", "error_status"]

DEFAULT_TIMEOUT = 600.0
_logger = logging.getLogger("chatstep.serving")
# Response headers worth passing on from an upstream endpoint.
_FORWARDED_HEADER_PREFIXES = ("x-request-id", "openai-", "x-ratelimit-", "retry-after")
# For errors raised without a status: the status each class stands for.
_CLASS_STATUS: tuple[tuple[type[APIError], int], ...] = (
    (BadRequestError, 400),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (RateLimitError, 429),
    (APITimeoutError, 504),  # the upstream (or the model) did not answer in time
    (APIConnectionError, 502),  # the upstream could not be reached
    (InvalidResponseError, 502),  # the upstream answered, but not with an answer
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    501: "not_implemented_error",
}


def error_status(exc: BaseException) -> int:
    """The HTTP status that stands for a chatstep error."""
    if isinstance(exc, APIError):
        if exc.status_code is not None and 400 <= exc.status_code <= 599:
            return exc.status_code
        for cls, status in _CLASS_STATUS:
            if isinstance(exc, cls):
                return status
        return 500
    if isinstance(exc, BackendUnavailableError):
        return 501  # this server cannot do that at all, so retrying will not help
    if isinstance(exc, ConfigError):
        return 400
    return 500


def _error_body(exc: BaseException, status: int) -> JSON:
    """The OpenAI error object for ``exc``, keeping an upstream error's own fields."""
    if isinstance(exc, ChatstepError):
        message = exc.message
    else:
        message = "the server failed while handling the request (see the server log)"
    upstream: Any = exc.body if isinstance(exc, APIError) else None
    if isinstance(upstream, dict) and isinstance(upstream.get("error"), dict):
        upstream = upstream["error"]
    if not isinstance(upstream, dict):
        upstream = {}
    default_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error")
    code = upstream.get("code", exc.code if isinstance(exc, APIError) else None)
    if code is None and isinstance(exc, BackendUnavailableError):
        code = "backend_unavailable"
    return {
        "error": {
            "message": redact(str(upstream.get("message") or message)),
            "type": str(upstream.get("type") or default_type),
            "param": upstream.get("param"),
            "code": code,
        }
    }


def _error_response(exc: BaseException) -> Response:
    from starlette.responses import JSONResponse

    status = error_status(exc)
    if status >= 500 and not isinstance(exc, ChatstepError):
        _logger.exception("unexpected error while serving a request")
    headers = {}
    if isinstance(exc, APIError) and exc.retry_after is not None:
        headers["retry-after"] = str(max(0, math.ceil(exc.retry_after)))
    return JSONResponse(_error_body(exc, status), status_code=status, headers=headers)


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in headers.items()
        if name.lower().startswith(_FORWARDED_HEADER_PREFIXES)
    }


def _timeout(request: Request, default: float) -> float:
    raw = request.headers.get("x-stainless-read-timeout") or request.headers.get(
        "x-stainless-timeout"
    )
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


async def _json_body(request: Request) -> JSON:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _invalid_body()
    return body


def _invalid_body() -> APIError:
    return BadRequestError(
        "the request body is not a JSON object (send Content-Type: application/json "
        'with an object such as {"model": ..., "messages": [...]})',
        status_code=400,
    )


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


async def _close(chunks: AsyncIterator[JSON]) -> None:
    aclose: Callable[[], Awaitable[None]] | None = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def _events(chunks: AsyncIterator[JSON]) -> AsyncIterator[bytes]:
    """SSE frames of a chat stream, ``data: [DONE]`` last, or an error event if it fails."""
    try:
        async for chunk in chunks:
            yield _sse(chunk)
        yield b"data: [DONE]\n\n"
    except Exception as exc:
        # Headers are sent already, so the failure travels as an event (the SDKs raise on it).
        if not isinstance(exc, ChatstepError):
            _logger.exception("unexpected error while streaming a response")
        yield _sse(_error_body(exc, error_status(exc)))
    finally:
        # Also reached when the client disconnects and the response task is cancelled.
        await _close(chunks)


def check_api_key(api_key: str) -> str:
    """``api_key`` if a client can be asked for it; ConfigError for an empty or blank key
    (a server "protected" by it would let anyone in, or no one)."""
    if not api_key.strip() or api_key != api_key.strip():
        from chatstep.errors import ConfigError

        raise ConfigError(
            "api_key", "is empty or starts or ends with spaces", "give a key without spaces"
        )
    return api_key


class BearerAuthMiddleware:
    """ASGI middleware: HTTP requests must carry ``Authorization: Bearer <api_key>``.

    The key is compared in constant time; a missing or wrong key gets a 401 with an OpenAI
    error body (the official clients raise AuthenticationError). The key is never logged.
    """

    def __init__(self, app: Any, api_key: str) -> None:
        self._app = app
        self._expected = check_api_key(api_key).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = sent.strip().partition(b" ")
        # The scheme is case-insensitive (RFC 9110: "bearer KEY" is the same as "Bearer KEY").
        token = token.strip()
        if scheme.lower() == b"bearer" and token and hmac.compare_digest(token, self._expected):
            await self._app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        message = (
            "Incorrect or missing API key: this server requires the key given to "
            "`chatstep serve --api-key`, sent as `Authorization: Bearer KEY` (the OpenAI "
            "clients' api_key)"
        )
        error = {"message": message, "type": "invalid_request_error", "param": None}
        response = JSONResponse(
            {"error": {**error, "code": "invalid_api_key"}},
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="chatstep"'},
        )
        await response(scope, receive, send)


def create_serving_app(
    backend: Backend, *, timeout: float = DEFAULT_TIMEOUT, api_key: str | None = None
) -> Starlette:
    """A Starlette app serving ``backend`` under ``/v1`` with the OpenAI HTTP API's shapes.

    ``timeout`` (seconds) is given to the backend when the client sends no timeout of its own.
    ``api_key``: when set, requests must send it as a bearer token (else 401).
    """
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    def handle(
        call: Callable[[JSON, float], Awaitable[Reply]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                reply = await call(await _json_body(request), _timeout(request, timeout))
            except Exception as exc:
                return _error_response(exc)
            return JSONResponse(reply.body, headers=_forwarded(reply.headers))

        return endpoint

    async def answer(request: Request, complete: Any, stream: Any) -> Response:
        """One completion endpoint: a JSON body, or an event stream closed whatever happens."""
        try:
            body = await _json_body(request)
            request_timeout = _timeout(request, timeout)
            if not body.get("stream"):
                reply = await complete(body, timeout=request_timeout)
                return JSONResponse(reply.body, headers=_forwarded(reply.headers))
            streamed = await stream(body, timeout=request_timeout)
        except Exception as exc:
            return _error_response(exc)
        return StreamingResponse(
            _events(streamed.chunks),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **_forwarded(streamed.headers)},
            # Runs after the response, disconnected or not: the stream is always closed.
            background=BackgroundTask(_close, streamed.chunks),
        )

    async def chat_completions(request: Request) -> Response:
        return await answer(request, backend.complete, backend.stream)

    async def text_completions(request: Request) -> Response:
        from chatstep.core.text_completion import text_backend

        try:
            text = text_backend(backend)
        except Exception as exc:
            return _error_response(exc)
        return await answer(request, text.complete_text, text.stream_text)

    async def models(request: Request) -> Response:
        try:
            reply = await backend.list_models(timeout=_timeout(request, timeout))
        except Exception as exc:
            return _error_response(exc)
        return JSONResponse(reply.body, headers=_forwarded(reply.headers))

    async def model(request: Request) -> Response:
        wanted = request.path_params["model"]
        try:
            reply = await backend.list_models(timeout=_timeout(request, timeout))
        except Exception as exc:
            return _error_response(exc)
        for entry in reply.body.get("data", []):
            if entry.get("id") == wanted:
                return JSONResponse(entry)
        message = f"model: {wanted!r} does not exist here (GET /v1/models lists the models)"
        error = {"message": message, "type": "invalid_request_error", "param": "model"}
        return JSONResponse({"error": {**error, "code": "model_not_found"}}, status_code=404)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = f"{request.method} {request.url.path}: " + (
            "no such endpoint (this server offers /v1/chat/completions, /v1/completions, "
            "/v1/embeddings, /v1/moderations and /v1/models)"
            if status in (404, 405)
            else str(getattr(exc, "detail", "request failed"))
        )
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        return JSONResponse({"error": error}, status_code=status)

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", text_completions, methods=["POST"]),
        Route(
            "/v1/embeddings",
            handle(lambda body, t: backend.embed(body, timeout=t)),
            methods=["POST"],
        ),
        Route(
            "/v1/moderations",
            handle(lambda body, t: backend.moderate(body, timeout=t)),
            methods=["POST"],
        ),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    if api_key is not None:
        app.add_middleware(BearerAuthMiddleware, api_key=check_api_key(api_key))
    return app
