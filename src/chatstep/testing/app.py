"""The test server's ASGI app: OpenAI-compatible HTTP routes over a :class:`ServerState`.

Each route reads and records the request, lets :func:`chatstep.testing.exchange.answer` decide
the outcome, and sends it: JSON, an SSE stream, raw bytes, or a dropped connection.

Azure OpenAI paths are served too: ``/openai/deployments/{deployment}/chat/completions``
(embeddings...) and ``/openai/files``, ``/openai/batches``... answer as their ``/v1`` twins. They
need the ``api-version`` query parameter (404 without, as Azure answers) and, when the server
has an ``api_key``, the ``api-key`` header. Requests are recorded with the path as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatstep.testing import exchange
from chatstep.testing.files import parse_multipart
from chatstep.testing.state import RecordedRequest, ServerState, redact_headers

__all__ = ["create_app"]

_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_ROUTES: tuple[tuple[str, str, list[str]], ...] = (
    ("/v1/chat/completions", "/v1/chat/completions", ["POST"]),
    ("/v1/completions", "/v1/completions", ["POST"]),
    ("/v1/embeddings", "/v1/embeddings", ["POST"]),
    ("/v1/moderations", "/v1/moderations", ["POST"]),
    ("/v1/models", "/v1/models", ["GET"]),
    ("/v1/models/{model:path}", "/v1/models/{model}", ["GET"]),
    ("/v1/files", "/v1/files", ["GET", "POST"]),
    ("/v1/files/{file_id}", "/v1/files/{file_id}", ["GET", "DELETE"]),
    ("/v1/files/{file_id}/content", "/v1/files/{file_id}/content", ["GET"]),
    ("/v1/batches", "/v1/batches", ["GET", "POST"]),
    ("/v1/batches/{batch_id}", "/v1/batches/{batch_id}", ["GET"]),
    ("/v1/batches/{batch_id}/cancel", "/v1/batches/{batch_id}/cancel", ["POST"]),
    ("/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs", ["GET", "POST"]),
    (
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}",
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}",
        ["GET"],
    ),
    (
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
        ["POST"],
    ),
    (
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events",
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events",
        ["GET"],
    ),
)
"""(Starlette path, spec route template, methods)."""


class DroppedConnection:
    """An ASGI 'response' that closes the connection without answering."""

    def __init__(self, state: ServerState, *, reset: bool) -> None:
        self.state = state
        self.reset = reset

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        closer = self.state.connection_closer
        if closer is not None and client is not None and closer(tuple(client), self.reset):
            # Wait until the server has seen the connection go, so it does not answer a 500.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_until_disconnect(receive), timeout=2)
            return
        # Another ASGI server: promise a body and never send it; the server then closes.
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"64")],
        }
        await send(start)
        await send({"type": "http.response.body", "body": b"{", "more_body": False})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _sse(chunks: list[Any], done: bool) -> AsyncIterator[bytes]:
    async def events() -> AsyncIterator[bytes]:
        for chunk in chunks:
            if isinstance(chunk, str) and chunk.startswith(":"):
                yield f"{chunk}\n\n".encode()  # an SSE comment (keep-alive)
                continue
            text = chunk if isinstance(chunk, str) else json.dumps(chunk)
            yield f"data: {text}\n\n".encode()
        if done:
            yield b"data: [DONE]\n\n"

    return events()


def _trickled(
    state: ServerState, body: AsyncIterator[bytes], seconds: float, interval: float, sse: bool
) -> AsyncIterator[bytes]:
    async def pieces() -> AsyncIterator[bytes]:
        finished = False
        try:
            waited = 0.0
            while waited < seconds:
                yield b": keep-alive\n\n" if sse else b" "
                await asyncio.sleep(interval)
                waited += interval
            async for piece in body:
                yield piece
            finished = True
        finally:
            if not finished:
                state.count_trickle_cut()

    return pieces()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _response(state: ServerState, outcome: exchange.Outcome) -> Response | DroppedConnection:
    if outcome.drop:
        return DroppedConnection(state, reset=outcome.reset)
    headers = {
        "x-request-id": state.next_request_id(),
        "openai-version": "2020-10-01",
        "openai-processing-ms": "1",
        **outcome.headers,
    }
    if outcome.trickle is not None:
        seconds, interval = outcome.trickle
        sse = outcome.chunks is not None
        if sse:
            body = _sse(outcome.chunks or [], outcome.done)
        else:
            raw = outcome.raw if outcome.raw is not None else json.dumps(outcome.body).encode()
            body = _once(raw)
        return StreamingResponse(
            _trickled(state, body, seconds, interval, sse),
            status_code=outcome.status,
            media_type="text/event-stream" if sse else "application/json",
            headers=headers,
        )
    if outcome.chunks is not None:
        headers.setdefault("cache-control", "no-cache")
        return StreamingResponse(
            _sse(outcome.chunks, outcome.done),
            status_code=outcome.status,
            media_type="text/event-stream",
            headers=headers,
        )
    if outcome.raw is not None:
        return Response(
            outcome.raw, status_code=outcome.status, media_type="application/json", headers=headers
        )
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


async def _read_body(request: Request) -> tuple[Any, str | None, dict[str, tuple[str, bytes]]]:
    """(parsed JSON or form body or None, parse error or None, uploaded files)."""
    raw = await request.body()
    if not raw:
        return None, None, {}
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        fields, uploads = parse_multipart(content_type, raw)
        # The spec checks a form as its fields, with each file standing as its name.
        body = _nest_form({**fields, **{name: filename for name, (filename, _) in uploads.items()}})
        return body, None, uploads
    try:
        return json.loads(raw), None, {}
    except ValueError as exc:
        return None, str(exc), {}


def _nest_form(fields: dict[str, Any]) -> dict[str, Any]:
    """``{"a[b]": "3"}`` -> ``{"a": {"b": 3}}``, as SDKs encode nested form fields."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if "[" in name and name.endswith("]"):
            outer, inner = name[:-1].split("[", 1)
            nested = out.setdefault(outer, {})
            if isinstance(nested, dict):
                nested[inner] = int(value) if isinstance(value, str) and value.isdigit() else value
        else:
            out[name] = value
    return out


def create_app(state: ServerState) -> Starlette:
    """The OpenAI-compatible ASGI app serving ``state`` (under any ASGI server)."""

    def endpoint(route: str | None) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response | DroppedConnection:
            try:
                body, parse_error, uploads = await _read_body(request)
            except ClientDisconnect:
                # The client gave up before sending its body (a cancelled or timed-out call):
                # nobody is left to answer, and it is not the server's error.
                return Response(status_code=499)
            path = request.url.path
            headers = redact_headers(request.headers.items())
            query = dict(request.query_params)
            azure_path = request.scope.get(_AZURE_PATH)
            peer = (request.client.host, request.client.port) if request.client else None
            state.record(
                RecordedRequest(
                    request.method, azure_path or path, headers, body, peer=peer, query=query
                )
            )
            authorization = request.headers.get("authorization")
            if azure_path is not None:
                refused = _azure_refusal(state, request, azure_path)
                if refused is not None:
                    return refused
                key = request.headers.get("api-key")
                authorization = f"Bearer {key}" if key is not None else None
            outcome = await exchange.answer(
                state,
                exchange.Request(
                    method=request.method,
                    path=path,
                    route=route or path,
                    body=body,
                    authorization=authorization,
                    parse_error=parse_error if route else None,
                    path_params=_strings(request.path_params),
                    query=query,
                    uploads=uploads,
                ),
            )
            return _response(state, outcome)

        return handle

    routes = [Route(path, endpoint(route), methods=methods) for path, route, methods in _ROUTES]
    # Anything else is answered the way OpenAI answers an unknown URL: an error naming it.
    routes.append(Route("/{path:path}", endpoint(None), methods=_ALL_METHODS))
    return Starlette(routes=routes, middleware=[Middleware(_AzurePaths)])


_AZURE_PATH = "chatstep.azure_path"
_AZURE_DEPLOYMENT = re.compile(r"\A/openai/deployments/[^/]+(/.*)\Z")


class _AzurePaths:
    """Serve Azure OpenAI paths as their ``/v1`` twins (the original path kept in the scope)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/openai/"):
            match = _AZURE_DEPLOYMENT.match(path)
            twin = "/v1" + (match.group(1) if match else path[len("/openai") :])
            scope = {**scope, "path": twin, "raw_path": twin.encode(), _AZURE_PATH: path}
        await self.app(scope, receive, send)


def _azure_refusal(state: ServerState, request: Request, path: str) -> Response | None:
    if not request.query_params.get("api-version"):
        error = {"code": "404", "message": f"Resource not found ({path} without ?api-version=)"}
        return JSONResponse({"error": error}, status_code=404)
    if state.api_key is not None and request.headers.get("api-key") != state.api_key:
        message = (
            "Access denied due to invalid subscription key or wrong API endpoint. Azure-style "
            "paths take the key in the 'api-key' header."
        )
        return JSONResponse({"error": {"code": "401", "message": message}}, status_code=401)
    return None


def _strings(params: Mapping[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in params.items()}
