"""The test server's ASGI app: OpenAI-compatible routes over a :class:`ServerState`.

Every request goes the same way: read and record it, check the key, check the body against the
spec, take the next scripted item (or the default answer), and send it, checking the answer
against the spec too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from chatstep.testing.completions import stream_chunks
from chatstep.testing.script import Delay, Drop, Fail, Respond, render_chat
from chatstep.testing.spec import SpecViolation
from chatstep.testing.state import RecordedRequest, ServerState, redact_headers
from chatstep.testing.synth import (
    default_chat_completion,
    default_embeddings,
    default_moderation,
    model_object,
)

__all__ = ["create_app"]

JSON = dict[str, Any]
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_DELAY_TICK = 0.05


@dataclass
class Exchange:
    """One request on its way through the server."""

    state: ServerState
    request: Request
    route: str
    """The route template, e.g. ``/v1/models/{model}`` (the spec operation's key)."""
    body: Any
    default: Callable[[], Any]
    """Builds the default answer body (lazily: ids are only spent when it is used)."""

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, Mapping) and self.body.get("stream") is True

    def violation(self, direction: str, schema: str, location: str, message: str) -> None:
        self.state.add_violation(
            SpecViolation(direction, self.method, self.path, schema, location, message)
        )

    def check_response(self, body: Any, *, stream: bool = False) -> None:
        """Record a violation when ``body`` does not match the operation's 200 schema."""
        validator = self.state.validator
        if validator is None:
            return
        schema = validator.response_schema(self.method, self.route, stream=stream)
        if schema is None:
            return
        for location, message in validator.errors(schema, _comparable(body)):
            self.violation("response", schema, location, message)


def _comparable(body: Any) -> Any:
    # The spec types embeddings as float arrays only; base64 strings are the documented
    # alternative (encoding_format=base64), so they are compared as an empty array.
    if isinstance(body, Mapping) and body.get("object") == "list":
        data = body.get("data")
        if isinstance(data, list) and any(
            isinstance(item, Mapping) and isinstance(item.get("embedding"), str) for item in data
        ):
            items = [
                {**item, "embedding": []}
                if isinstance(item, Mapping) and isinstance(item.get("embedding"), str)
                else item
                for item in data
            ]
            return {**body, "data": items}
    return body


def error_response(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-shaped error response."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _sse(chunks: list[Any], extra: Mapping[str, str] | None = None) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        for chunk in chunks:
            text = chunk if isinstance(chunk, str) else json.dumps(chunk)
            yield f"data: {text}\n\n".encode()
        yield b"data: [DONE]\n\n"

    headers = {"cache-control": "no-cache", **dict(extra or {})}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


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


async def _sleep(state: ServerState, seconds: float) -> bool:
    """Sleep unless the server stops first; False when interrupted by the stop."""
    remaining = seconds
    while remaining > 0:
        if state.stopping.is_set():
            return False
        await asyncio.sleep(min(_DELAY_TICK, remaining))
        remaining -= _DELAY_TICK
    return True


async def _execute(exchange: Exchange, item: Any) -> Response | DroppedConnection:
    if item is None:
        default = exchange.default()
        if isinstance(default, (Respond, Fail, Delay, Drop)):
            return await _execute(exchange, default)
        return _send_json(exchange, default, validate=True, headers=None)
    if isinstance(item, Mapping):
        item = Respond(body=dict(item))
    if isinstance(item, Delay):
        if not await _sleep(exchange.state, item.seconds):
            return DroppedConnection(exchange.state, reset=False)
        return await _execute(exchange, item.then)
    if isinstance(item, Drop):
        return DroppedConnection(exchange.state, reset=item.reset)
    if isinstance(item, Fail):
        return JSONResponse(
            item.error_body(), status_code=item.status, headers=item.response_headers()
        )
    if isinstance(item, Respond):
        if item.body is None and not item.builds_message():
            default = exchange.default()
            if isinstance(default, (Respond, Fail, Delay, Drop)):
                return await _execute(exchange, default)
            return _respond(exchange, item, default)
        return _respond(exchange, item, None)
    raise TypeError(f"not a script item: {item!r}; return Respond, Fail, Delay, Drop or a dict")


def _respond(exchange: Exchange, item: Respond, default: Any) -> Response:
    headers = dict(item.headers or {})
    if item.body is not None:
        return _send_raw(exchange, item.body, validate=item.validate, headers=headers)
    body = exchange.default() if default is None else default
    if exchange.route == "/v1/chat/completions":
        body = render_chat(item, exchange.body, body)
    return _send_json(exchange, body, validate=item.validate, headers=headers)


def _send_json(
    exchange: Exchange, body: Any, *, validate: bool, headers: Mapping[str, str] | None
) -> Response:
    if exchange.streaming and isinstance(body, Mapping) and body.get("object") == "chat.completion":
        options = exchange.body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        chunks = stream_chunks(body, include_usage=include_usage)
        if validate:
            for chunk in chunks:
                exchange.check_response(chunk, stream=True)
        return _sse(chunks, headers)
    if validate:
        exchange.check_response(body)
    return JSONResponse(body, headers=dict(headers or {}))


def _send_raw(
    exchange: Exchange, body: Any, *, validate: bool, headers: dict[str, str]
) -> Response:
    if exchange.streaming and isinstance(body, list):
        if validate:
            for chunk in body:
                exchange.check_response(_maybe_json(chunk), stream=True)
        return _sse(body, headers)
    if isinstance(body, (str, bytes)):
        if validate:
            parsed = _maybe_json(body)
            if parsed is _NOT_JSON:
                exchange.violation("response", "JSON", "$", "the response body is not valid JSON")
            else:
                exchange.check_response(parsed)
        return Response(body, media_type="application/json", headers=headers)
    if validate:
        exchange.check_response(body)
    return JSONResponse(body, headers=headers)


_NOT_JSON = object()


def _maybe_json(value: Any) -> Any:
    if not isinstance(value, (str, bytes)):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return _NOT_JSON


def _stamp(state: ServerState, response: Response | DroppedConnection) -> Any:
    """Add the headers every OpenAI answer carries (unless the item set them)."""
    if isinstance(response, Response):
        headers = response.headers
        if "x-request-id" not in headers:
            headers["x-request-id"] = state.next_request_id()
        if "openai-version" not in headers:
            headers["openai-version"] = "2020-10-01"
        if "openai-processing-ms" not in headers:
            headers["openai-processing-ms"] = "1"
    return response


async def _read_body(request: Request) -> tuple[Any, str | None]:
    """(parsed JSON body or None, parse error or None)."""
    raw = await request.body()
    if not raw:
        return None, None
    try:
        return json.loads(raw), None
    except ValueError as exc:
        return None, str(exc)


def _check_key(state: ServerState, request: Request) -> Response | None:
    if state.api_key is None:
        return None
    if request.headers.get("authorization", "") == f"Bearer {state.api_key}":
        return None
    return error_response(
        401,
        "Incorrect API key provided. The test server was started with api_key=...; "
        "send it as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
    )


async def _serve(
    state: ServerState, request: Request, route: str, default: Callable[[Any], Any]
) -> Response | DroppedConnection:
    body, parse_error = await _read_body(request)
    path = request.url.path
    state.record(
        RecordedRequest(request.method, path, redact_headers(request.headers.items()), body)
    )
    exchange = Exchange(state, request, route, body, lambda: default(body))
    refused = _check_key(state, request)
    if refused is not None:
        return refused
    if parse_error is not None:
        exchange.violation("request", "JSON", "$", f"the body is not valid JSON ({parse_error})")
        return error_response(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)",
        )
    validator = state.validator
    schema = validator.request_schema(request.method, route) if validator else None
    if validator is not None and schema is not None:
        problems = validator.errors(schema, body)
        for location, message in problems:
            exchange.violation("request", schema, location, message)
        if problems:
            location, message = problems[0]
            param = location[2:] if location.startswith("$.") else None
            return error_response(
                400,
                f"Invalid request body ({schema}) at {location}: {message}",
                code="invalid_request_body",
                param=param,
            )
    try:
        item = state.next_item(path, body)
        return await _execute(exchange, item)
    except Exception as exc:  # a bad script item or handler must fail the test, not hang it
        exchange.violation("response", "script", "$", f"{type(exc).__name__}: {exc}")
        return error_response(
            500, f"chatstep test server: the scripted answer failed: {exc}", type="server_error"
        )


def create_app(state: ServerState) -> Starlette:
    """The OpenAI-compatible ASGI app serving ``state`` (under any ASGI server)."""

    def chat(body: Any) -> Any:
        return default_chat_completion(body, state.next_id("chatcmpl"))

    def moderation(body: Any) -> Any:
        return default_moderation(body, state.next_id("modr"))

    def models(_body: Any) -> Any:
        return {"object": "list", "data": [model_object(m) for m in state.models]}

    def endpoint(route: str, default: Callable[[Any], Any]) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response | DroppedConnection:
            return _stamp(state, await _serve(state, request, route, default))

        return handle

    async def one_model(request: Request) -> Response | DroppedConnection:
        model_id = request.path_params["model"]

        def default(_body: Any) -> Any:
            if model_id in state.models:
                return model_object(model_id)
            return Fail(
                404,
                f"The model '{model_id}' does not exist or you do not have access to it.",
                code="model_not_found",
            )

        return _stamp(state, await _serve(state, request, "/v1/models/{model}", default))

    async def unknown(request: Request) -> Response:
        body, _ = await _read_body(request)
        headers = redact_headers(request.headers.items())
        state.record(RecordedRequest(request.method, request.url.path, headers, body))
        response = error_response(404, f"Invalid URL ({request.method} {request.url.path})")
        return _stamp(state, response)

    routes = [
        Route("/v1/chat/completions", endpoint("/v1/chat/completions", chat), methods=["POST"]),
        Route("/v1/embeddings", endpoint("/v1/embeddings", default_embeddings), methods=["POST"]),
        Route("/v1/moderations", endpoint("/v1/moderations", moderation), methods=["POST"]),
        Route("/v1/models", endpoint("/v1/models", models), methods=["GET"]),
        Route("/v1/models/{model:path}", one_model, methods=["GET"]),
        Route("/{path:path}", unknown, methods=_ALL_METHODS),
    ]
    return Starlette(routes=routes)
