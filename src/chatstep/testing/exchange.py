"""How the test server answers one request, independent of HTTP.

:func:`answer` takes a request (method, path, body) and returns an :class:`Outcome`: a status,
headers and a JSON body, SSE chunks, raw bytes, or "drop the connection". The HTTP app turns
outcomes into responses; the Batch API runs each input line through the same function, so
scripts, rate limits, faults and spec checks apply to batch lines too.

The path of a request: check the key, check the body against the spec, charge the rate limits,
take the next scripted item (else draw a fault, else ask the handler, else the default answer),
wait the latency, then build the answer and check it against the spec.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any

from chatstep.testing.completions import stream_chunks
from chatstep.testing.conditions import (
    EchoKey,
    MalformedBody,
    MaskedKey401,
    TruncatedStream,
    WireFault,
)
from chatstep.testing.script import Delay, Drop, Fail, Respond, Trickle, render_chat
from chatstep.testing.spec import SpecViolation
from chatstep.testing.state import ServerState
from chatstep.testing.synth import (
    default_chat_completion,
    default_embeddings,
    default_moderation,
    model_object,
)
from chatstep.testing.text_completions import (
    COMPLETIONS_ROUTE,
    default_text_completion,
    finished_event,
    refusal,
    render_text,
    text_stream_chunks,
)
from chatstep.testing.wire import Outcome, Request, error_outcome

__all__ = ["LIMITED_ROUTES", "Outcome", "Request", "answer", "error_outcome"]

JSON = dict[str, Any]
_DELAY_TICK = 0.05
CHAT_ROUTE = "/v1/chat/completions"
LIMITED_ROUTES = frozenset({CHAT_ROUTE, COMPLETIONS_ROUTE, "/v1/embeddings", "/v1/moderations"})
_STREAMED = ("chat.completion", "text_completion")
"""Answer objects a ``stream: true`` request gets as events."""
"""Routes that count against rate limits and get injected faults (the model endpoints)."""


class _Context:
    """One request on its way through :func:`answer`."""

    def __init__(self, state: ServerState, request: Request) -> None:
        self.state = state
        self.request = request
        self._default: Any = None

    async def default(self) -> Any:
        """The default answer (built once, lazily: ids are only spent when used)."""
        if self._default is None:
            self._default = await _default_answer(self.state, self.request)
        return self._default

    def violation(self, direction: str, schema: str, location: str, message: str) -> None:
        request = self.request
        self.state.add_violation(
            SpecViolation(direction, request.method, request.path, schema, location, message)
        )

    def check_response(self, body: Any, *, stream: bool = False) -> None:
        """Record a violation when ``body`` does not match the operation's 200 schema."""
        validator = self.state.validator
        if validator is None:
            return
        schema = validator.response_schema(self.request.method, self.request.route, stream=stream)
        if schema is None:
            return
        for location, message in validator.errors(schema, _comparable(body)):
            self.violation("response", schema, location, message)


async def _default_answer(state: ServerState, request: Request) -> Any:
    """A body, a script item, or a whole :class:`Outcome` (files and batches)."""
    route, body = request.route, request.body
    if route.startswith(("/v1/files", "/v1/batches")):
        return await state.resources.answer(request, state, answer)
    if route.startswith("/v1/fine_tuning/"):
        return await state.fine_tuning.answer(request, state)
    if route == CHAT_ROUTE:
        untrained = _untrained_model(state, body)
        if untrained is not None:
            return untrained
        return default_chat_completion(body, state.next_id("chatcmpl"))
    if route == COMPLETIONS_ROUTE:
        return refusal(body) or default_text_completion(body, state.next_id("cmpl"))
    if route == "/v1/embeddings":
        return default_embeddings(body)
    if route == "/v1/moderations":
        return default_moderation(body, state.next_id("modr"))
    if route == "/v1/models":
        models = [*state.models, *state.fine_tuning.models()]
        return {"object": "list", "data": [model_object(m) for m in models]}
    if route == "/v1/models/{model}":
        model_id = request.path_params.get("model", "")
        if model_id in state.models or state.fine_tuning.knows_model(model_id):
            return model_object(model_id)
        return Fail(
            404,
            f"The model '{model_id}' does not exist or you do not have access to it.",
            code="model_not_found",
        )
    return Fail(404, f"Invalid URL ({request.method} {request.path})")


def _untrained_model(state: ServerState, body: Any) -> Fail | None:
    """A 404 for an ``ft:`` model no fine-tuning job of this server produced, as OpenAI answers."""
    model = body.get("model") if isinstance(body, Mapping) else None
    if not isinstance(model, str) or not model.startswith("ft:"):
        return None
    if state.fine_tuning.knows_model(model):
        return None
    return Fail(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        code="model_not_found",
    )


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


_NOT_JSON = object()


def _maybe_json(value: Any) -> Any:
    if not isinstance(value, (str, bytes)):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return _NOT_JSON


async def _sleep(state: ServerState, seconds: float) -> bool:
    """Sleep unless the server stops first; False when interrupted by the stop."""
    remaining = seconds
    while remaining > 0:
        if state.stopping.is_set():
            return False
        await asyncio.sleep(min(_DELAY_TICK, remaining))
        remaining -= _DELAY_TICK
    return True


def _is_item(value: Any) -> bool:
    return isinstance(
        value,
        (
            Respond,
            Fail,
            Delay,
            Drop,
            Trickle,
            MalformedBody,
            TruncatedStream,
            WireFault,
            EchoKey,
            MaskedKey401,
            Outcome,
        ),
    )


async def _execute(context: _Context, item: Any) -> Outcome:
    if item is None:
        default = await context.default()
        if _is_item(default):
            return await _execute(context, default)
        return _json_outcome(context, default, validate=True, headers={})
    if isinstance(item, Outcome):
        return item
    if isinstance(item, Mapping):
        item = Respond(body=dict(item))
    if isinstance(item, Delay):
        if not await _sleep(context.state, item.seconds):
            return Outcome(drop=True)
        return await _execute(context, item.then)
    if isinstance(item, Drop):
        return Outcome(drop=True, reset=item.reset)
    if isinstance(item, Trickle):
        outcome = await _execute(context, item.then)
        outcome.trickle = (item.seconds, item.interval)
        return outcome
    if isinstance(item, WireFault):
        return await _wire_fault(context, item.kind)
    if isinstance(item, Fail):
        return Outcome(status=item.status, body=item.error_body(), headers=item.response_headers())
    if isinstance(item, MalformedBody):
        return await _malformed(context)
    if isinstance(item, TruncatedStream):
        return await _truncated(context)
    if isinstance(item, EchoKey):
        return await _execute(context, Respond(content=f"Your key is {_request_key(context)}."))
    if isinstance(item, MaskedKey401):
        key = _request_key(context)
        masked = f"{key[:7]}{'*' * max(4, len(key) - 11)}{key[-4:]}" if len(key) > 11 else "****"
        return Outcome(
            status=401,
            body=Fail(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
            ).error_body(),
        )
    if isinstance(item, Respond):
        return await _respond(context, item)
    raise TypeError(f"not a script item: {item!r}; return Respond, Fail, Delay, Drop or a dict")


def _request_key(context: _Context) -> str:
    """The key the request carried (its bearer token)."""
    authorization = context.request.authorization or ""
    return authorization.removeprefix("Bearer ").strip()


async def _respond(context: _Context, item: Respond) -> Outcome:
    headers = dict(item.headers or {})
    if item.body is not None:
        return _raw_outcome(context, item.body, validate=item.validate, headers=headers)
    default = await context.default()
    if _is_item(default) and not item.builds_message():
        return await _execute(context, default)
    body = default
    if context.request.route == CHAT_ROUTE:
        body = render_chat(item, context.request.body, default)
    elif context.request.route == COMPLETIONS_ROUTE:
        body = render_text(item, context.request.body, default)
    return _json_outcome(context, body, validate=item.validate, headers=headers)


def _chunks_for(context: _Context, body: Mapping[str, Any]) -> list[JSON]:
    options = context.request.body.get("stream_options")
    include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
    if body.get("object") == "text_completion":
        return text_stream_chunks(body, include_usage=include_usage)
    return stream_chunks(body, include_usage=include_usage)


def _json_outcome(
    context: _Context, body: Any, *, validate: bool, headers: dict[str, str]
) -> Outcome:
    streams = isinstance(body, Mapping) and body.get("object") in _STREAMED
    if context.request.streaming and streams:
        chunks = _chunks_for(context, body)
        if validate:
            for chunk in chunks:
                if chunk.get("object") == "text_completion":
                    # The non-streamed shape (the spec says so), finish_reason null until the end.
                    context.check_response(finished_event(chunk))
                else:
                    context.check_response(chunk, stream=True)
        return Outcome(chunks=list(chunks), headers=headers)
    if validate:
        context.check_response(body)
    return Outcome(body=body, headers=headers)


def _raw_outcome(
    context: _Context, body: Any, *, validate: bool, headers: dict[str, str]
) -> Outcome:
    if context.request.streaming and isinstance(body, list):
        if validate:
            for chunk in body:
                context.check_response(_maybe_json(chunk), stream=True)
        return Outcome(chunks=list(body), headers=headers)
    if isinstance(body, (str, bytes)):
        if validate:
            parsed = _maybe_json(body)
            if parsed is _NOT_JSON:
                context.violation("response", "JSON", "$", "the response body is not valid JSON")
            else:
                context.check_response(parsed)
        raw = body.encode() if isinstance(body, str) else body
        return Outcome(raw=raw, headers=headers)
    if validate:
        context.check_response(body)
    return Outcome(body=body, headers=headers)


async def _malformed(context: _Context) -> Outcome:
    default = await context.default()
    text = json.dumps(default) if not _is_item(default) else '{"error": {"message": "x"}}'
    streamed_route = context.request.route in (CHAT_ROUTE, COMPLETIONS_ROUTE)
    if context.request.streaming and streamed_route and not _is_item(default):
        first = _chunks_for(context, default)[0]
        return Outcome(chunks=[first, text[: len(text) // 2]])
    return Outcome(raw=text[: len(text) // 2].encode())


async def _wire_fault(context: _Context, kind: str) -> Outcome:
    """A success status that carries no answer (see :class:`WireFault`)."""
    from chatstep.testing.faults import SERVER_ERROR

    default = await context.default()
    if not isinstance(default, Mapping):
        return await _execute(context, default)
    streaming = context.request.streaming and default.get("object") in _STREAMED
    if kind == "error_200":
        return Outcome(body={"error": dict(SERVER_ERROR)})
    if kind == "stream_error" and streaming:
        first = _chunks_for(context, default)[:2]
        return Outcome(chunks=[*first, {"error": dict(SERVER_ERROR)}])
    key = {"/v1/embeddings": "data", "/v1/moderations": "results"}.get(
        context.request.route, "choices"
    )
    if streaming:
        head = _chunks_for(context, default)[0]
        return Outcome(chunks=[{**head, "choices": []}])
    return Outcome(body={**default, key: []})


async def _truncated(context: _Context) -> Outcome:
    default = await context.default()
    if not isinstance(default, Mapping) or default.get("object") not in _STREAMED:
        return await _execute(context, default)
    chunks = _chunks_for(context, default)
    # Keep the role chunk and part of the content; the finish chunk and [DONE] never come.
    keep = max(1, (len(chunks) - 1) // 2)
    return Outcome(chunks=chunks[:keep], done=False)


def _check_request(context: _Context) -> Outcome | None:
    request, state = context.request, context.state
    if state.api_key is not None and request.authorization != f"Bearer {state.api_key}":
        return error_outcome(
            401,
            "Incorrect API key provided. The test server was started with api_key=...; "
            "send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    if request.parse_error is not None:
        context.violation(
            "request", "JSON", "$", f"the body is not valid JSON ({request.parse_error})"
        )
        return error_outcome(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)",
        )
    validator = state.validator
    schema = validator.request_schema(request.method, request.route) if validator else None
    if validator is None or schema is None:
        return None
    problems = validator.errors(schema, request.body)
    for location, message in problems:
        context.violation("request", schema, location, message)
    if not problems:
        return None
    location, message = problems[0]
    return error_outcome(
        400,
        f"Invalid request body ({schema}) at {location}: {message}",
        code="invalid_request_body",
        param=location[2:] if location.startswith("$.") else None,
    )


def _rate_limited(context: _Context, headers: dict[str, str]) -> Outcome | None:
    limits = context.state.conditions.limits
    if not limits.active:
        return None
    request = context.request
    model = str(request.body.get("model", "")) if isinstance(request.body, Mapping) else ""
    decision = limits.charge(request.path, request.body, model)
    headers.update(decision.headers)
    if decision.allowed:
        return None
    context.state.count_rate_limited()
    retry: dict[str, str] = {}
    if decision.wait > 0:
        retry = {
            "retry-after": str(max(1, math.ceil(decision.wait))),
            "retry-after-ms": str(max(1, round(decision.wait * 1000))),
        }
    return error_outcome(
        429,
        decision.message,
        type=decision.kind or "requests",
        code="rate_limit_exceeded",
        headers={**headers, **retry},
    )


async def answer(state: ServerState, request: Request) -> Outcome:
    """The outcome of one request (see the module docstring for the steps)."""
    context = _Context(state, request)
    refused = _check_request(context)
    if refused is not None:
        return refused
    limit_headers: dict[str, str] = {}
    limited = request.route in LIMITED_ROUTES
    if limited and request.batch is None:
        refused = _rate_limited(context, limit_headers)
        if refused is not None:
            return refused
    try:
        item = state.script.pop(request.path)
        latency = 0.0
        if limited:
            fault, latency = state.conditions.draw(
                request.path,
                request.body,
                streaming=request.streaming,
                batch=request.batch is not None,
            )
            if item is None and fault is not None:
                state.count_fault(fault)
                item = state.conditions.fault_item(fault)
        if item is None and state.handler is not None:
            item = state.handler(request.path, request.body)
        if latency > 0 and not await _sleep(state, latency):
            return Outcome(drop=True)
        outcome = await _execute(context, item)
    except Exception as exc:  # a bad script item or handler must fail the test, not hang it
        context.violation("response", "script", "$", f"{type(exc).__name__}: {exc}")
        outcome = error_outcome(
            500, f"chatstep test server: the scripted answer failed: {exc}", type="server_error"
        )
    outcome.headers = {**limit_headers, **outcome.headers}
    return outcome
