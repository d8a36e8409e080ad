"""Reply to result: the backend's answer becomes a priced StepResult / EmbeddingResult /
ModerationResult (``.parsed`` for JSON output, legacy ``function_call`` mirrored)."""

from __future__ import annotations

from typing import Any

from chatstep.accounting.pricing import Cost
from chatstep.backends.base import Reply
from chatstep.core.connection import Connection
from chatstep.core.request import Request
from chatstep.core.result import AnyResult, EmbeddingResult, ModerationResult, StepResult
from chatstep.core.structured_output import parse_json_output
from chatstep.steps.definitions import ChatCompletion, Step

__all__ = ["build_result", "cost_of", "priced_result"]


def _mirror_function_call(response: dict[str, Any]) -> None:
    # Steps written for legacy function calling read message.function_call; the request used
    # tools, so the first tool call is mirrored there.
    for choice in response.get("choices") or []:
        message = choice.get("message") or {}
        calls = message.get("tool_calls") or []
        if calls and not message.get("function_call"):
            fn = calls[0].get("function") or {}
            message["function_call"] = {"name": fn.get("name"), "arguments": fn.get("arguments")}


def cost_of(
    price_table: Any, model: str, usage: dict[str, Any], local: bool, estimated: bool
) -> Cost | None:
    """What ``usage`` of ``model`` costs (USD), or None without a price table or usage."""
    if price_table is None or not usage:
        return None
    cost = price_table.cost(model, usage, local=local, estimated=estimated)
    return cost if isinstance(cost, Cost) else None


def priced_result(
    price_table: Any,
    step: Step,
    request: Request,
    reply: Reply,
    attempts: int,
    latency_ms: float,
    conn: Connection,
) -> AnyResult:
    """A result for an answer that is not checked (a cut stream): response, usage, cost."""
    usage = reply.body.get("usage") if isinstance(reply.body.get("usage"), dict) else {}
    model = str(reply.body.get("model") or request.model)
    cost = cost_of(price_table, model, usage or {}, conn.backend == "local", reply.usage_estimated)
    return StepResult(
        response=reply.body,
        request=request,
        step_id=step.id,
        latency_ms=latency_ms,
        attempts=attempts,
        headers=dict(reply.headers),
        cost=None if cost is None else cost.total_usd,
        cost_breakdown=cost,
        usage_estimated=reply.usage_estimated,
    )


def build_result(
    price_table: Any,
    step: Step,
    request: Request,
    reply: Reply,
    attempts: int,
    latency_ms: float,
    conn: Connection,
    *,
    cached: bool = False,
) -> AnyResult:
    """The result of a checked answer, its type chosen by the endpoint; a cache hit costs 0."""
    response = reply.body
    common: dict[str, Any] = {
        "response": response,
        "request": request,
        "step_id": step.id,
        "latency_ms": latency_ms,
        "attempts": attempts,
        "headers": dict(reply.headers),
        "cached": cached,
    }
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    model = str(response.get("model") or request.model)
    # A cache hit was paid for once already: it costs nothing now.
    local = conn.backend == "local"
    cost = (
        Cost() if cached else cost_of(price_table, model, usage or {}, local, reply.usage_estimated)
    )
    common["cost"] = None if cost is None else cost.total_usd
    common["cost_breakdown"] = cost
    common["usage_estimated"] = reply.usage_estimated
    if request.endpoint == "embeddings":
        return EmbeddingResult(**common)
    if request.endpoint == "moderations":
        return ModerationResult(**common)
    if request.endpoint == "completions":
        return StepResult(**common)  # .content is choices[0].text
    assert isinstance(step, ChatCompletion)
    if step.functions:
        _mirror_function_call(response)
    result = StepResult(**common)
    parsed = parse_json_output(result, request.body.get("response_format"))
    if parsed:
        result.parsed = parsed[0]
    return result
