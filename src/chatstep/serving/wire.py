"""The bodies of the steps service: inputs read from a request, results and SSE events sent."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from chatstep.core.result import AnyResult, StepResult
from chatstep.core.streaming import Delta
from chatstep.errors import ConfigError, OutputError, redact
from chatstep.serving.catalog import ServedStep
from chatstep.serving.problems import RequestProblem

if TYPE_CHECKING:
    from starlette.requests import Request

    from chatstep.core.connection import Connection

__all__ = ["delta_events", "read_inputs", "result_json", "sse", "stream_flag"]

_TRUE = frozenset({"", "1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def result_json(served: ServedStep, result: AnyResult, conn: Connection) -> dict[str, Any]:
    """The JSON body of a step result: ``to_dict()`` plus tool calls and who answered."""
    out = result.to_dict()
    out["step_id"] = served.id
    if isinstance(result, StepResult):
        try:
            out["tool_calls"] = [
                {"id": call.id, "name": call.name, "arguments": call.arguments.to_json()}
                if hasattr(call.arguments, "to_json")
                else {"id": call.id, "name": call.name, "arguments": call.arguments}
                for call in result.tool_calls
            ]
        except OutputError:
            out["tool_calls"] = []  # arguments that do not parse stay in response
        out.setdefault("content", result.content)
    if out.get("answered_by") is None:
        base_url = conn.base_url or ("local" if conn.backend == "local" else None)
        out["answered_by"] = {
            "candidate": "step",
            "model": result.response.get("model") or result.request.model,
            "base_url": redact(base_url) if base_url else None,
        }
        out.setdefault("fallback_errors", [])
    return out


def sse(event: str, data: Any) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {text}\n\n".encode()


def delta_events(delta: Delta) -> list[bytes]:
    events: list[bytes] = []
    text = {
        key: value
        for key, value in (
            ("content", delta.content),
            ("refusal", delta.refusal),
            ("finish_reason", delta.finish_reason),
        )
        if value  # the first chunk's empty content says nothing
    }
    if text:
        events.append(sse("delta", {"choice": delta.choice, **text}))
    if delta.tool_calls:
        events.append(sse("tool_call", {"choice": delta.choice, "tool_calls": delta.tool_calls}))
    if delta.function_call:
        events.append(
            sse("tool_call", {"choice": delta.choice, "function_call": delta.function_call})
        )
    return events


async def read_inputs(request: Request, served: ServedStep, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    raw = bytearray()
    async for piece in request.stream():
        raw += piece
        if len(raw) > limit:
            raise _too_large(limit)
    body = _parse_body(bytes(raw), served)
    problems: list[RequestProblem] = []
    reads = ", ".join(sorted(served.inputs)) or "no inputs"
    for name in sorted(set(body) - served.inputs):
        problems.append(
            RequestProblem(
                422,
                f"inputs.{name}: step {served.id!r} does not read this input (it reads: {reads})",
                param=name,
                code="unknown_input",
            )
        )
    for name in sorted(served.required_inputs - set(body)):
        problems.append(
            RequestProblem(
                422,
                f"inputs.{name}: is required by step {served.id!r} "
                f"(read by its {', '.join(served.readers.get(name, ()))})",
                param=name,
                code="missing_input",
            )
        )
    if problems:
        raise RequestProblem.combine(problems)
    return body


def _parse_body(raw: bytes, served: ServedStep) -> dict[str, Any]:
    """The body as a JSON object, under the rules of a ``map`` JSON Lines row: UTF-8, nested
    at most ``MAX_JSON_DEPTH`` levels, no NaN/Infinity, no lone surrogate (else 400, saying
    which rule and how to fix it)."""
    from chatstep.mapping.datasets import parse_json_object

    example = json.dumps(dict.fromkeys(sorted(served.inputs), "..."))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RequestProblem(
            400,
            f"the request body is not UTF-8 (byte {exc.start}); send the step's inputs as a "
            f"UTF-8 JSON object, e.g. {example}",
            code="invalid_body",
        ) from None
    if not text.strip():
        return {}
    try:
        return parse_json_object(text, "the request body", "body")
    except ConfigError as exc:
        fix = f" ({exc.fix})" if exc.fix else ""
        raise RequestProblem(
            400,
            f"{exc.problem}{fix}; send the step's inputs as one JSON object, e.g. {example}",
            code="invalid_body",
        ) from None


def _too_large(limit: int) -> RequestProblem:
    return RequestProblem(
        413,
        f"the request body is larger than {limit:,} bytes (send less, or start the server "
        "with a larger --max-body)",
        code="body_too_large",
    )


def stream_flag(request: Request) -> bool:
    raw = request.query_params.get("stream")
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise RequestProblem(
        400, f"stream: {raw[:40]!r} is not true or false", param="stream", code="invalid_query"
    )
