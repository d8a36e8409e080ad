"""Step results and how later steps address them.

``StepResult.response`` is the whole JSON-able response, exactly as the API sent it (tool-call
``arguments`` stay as sent: JSON text, or an object from servers that send one). Conveniences
decode it: ``.content``, ``.contents``, ``.tool_calls`` (arguments as dicts), ``.parsed`` (JSON
output, validated), ``.usage``.

In templates, :func:`template_view` wraps every ``arguments`` string in :class:`JSONArguments`,
which prints as the original JSON and indexes into the decoded object, so
``outputs.triage.choices[0].message.tool_calls[0].function.arguments.urgency`` works without jq.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from chatstep.accounting.pricing import Cost
from chatstep.core.request import Request
from chatstep.errors import InvalidJSONError

__all__ = [
    "EmbeddingResult",
    "JSONArguments",
    "ModerationResult",
    "StepResult",
    "ToolCall",
    "template_view",
]


@dataclass(frozen=True)
class ToolCall:
    """A tool call with its arguments decoded."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str


def raw_arguments(value: Any, where: str) -> str:
    """Tool-call ``arguments`` as JSON text: a string as sent, an object (some servers send one)
    as its JSON, ``None`` as ``""``; anything else is an :class:`InvalidJSONError`."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    raise InvalidJSONError(
        f"{where}: arguments must be a JSON object or its text, got {type(value).__name__}: "
        f"{str(value)[:200]!r}"
    )


def decode_arguments(raw: Any, where: str) -> dict[str, Any]:
    """Decode tool-call arguments (text or an object; ``""`` is ``{}``); raises InvalidJSONError."""
    if isinstance(raw, dict):
        return raw
    raw = raw_arguments(raw, where)
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidJSONError(
            f"{where}: arguments are not valid JSON ({exc.msg} at position {exc.pos}): "
            f"{raw[:200]!r}"
        ) from None
    if not isinstance(value, dict):
        raise InvalidJSONError(f"{where}: arguments are JSON but not an object: {raw[:200]!r}")
    return value


class JSONArguments:
    """A JSON string that prints as itself and indexes into its decoded object."""

    __slots__ = ("_decoded", "_raw", "_where")

    def __init__(self, raw: str, where: str) -> None:
        self._raw = raw
        self._where = where
        self._decoded: dict[str, Any] | None = None

    def _data(self) -> dict[str, Any]:
        if self._decoded is None:
            self._decoded = decode_arguments(self._raw, self._where)
        return self._decoded

    def __str__(self) -> str:
        return self._raw

    def __repr__(self) -> str:
        return f"JSONArguments({self._raw!r})"

    def __getitem__(self, key: str) -> Any:
        data = self._data()
        if key not in data:
            raise KeyError(key)
        return data[key]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{self._where}: arguments have no field {name!r} "
                f"(fields: {', '.join(sorted(self._data())) or 'none'})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __contains__(self, key: object) -> bool:
        return key in self._data()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JSONArguments):
            return self._raw == other._raw
        if isinstance(other, str):
            return self._raw == other
        if isinstance(other, dict):
            return self._data() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._raw)

    def items(self) -> Any:
        return self._data().items()

    def keys(self) -> Any:
        return self._data().keys()

    def values(self) -> Any:
        return self._data().values()

    def to_json(self) -> Any:
        """The decoded object (used when a template serializes the value with ``tojson``)."""
        return self._data()


def _wrap_message(message: dict[str, Any], where: str) -> dict[str, Any]:
    out = dict(message)
    if isinstance(message.get("tool_calls"), list):
        calls = []
        for i, call in enumerate(message["tool_calls"]):
            call = dict(call)
            fn = dict(call.get("function") or {})
            if isinstance(fn.get("arguments"), dict):
                fn["arguments"] = json.dumps(fn["arguments"], ensure_ascii=False)
            if isinstance(fn.get("arguments"), str):
                name = fn.get("name", "?")
                fn["arguments"] = JSONArguments(
                    fn["arguments"], f"{where}.tool_calls[{i}] ({name})"
                )
            call["function"] = fn
            calls.append(call)
        out["tool_calls"] = calls
    fc = message.get("function_call")
    if isinstance(fc, dict) and isinstance(fc.get("arguments"), dict):
        fc = {**fc, "arguments": json.dumps(fc["arguments"], ensure_ascii=False)}
    if isinstance(fc, dict) and isinstance(fc.get("arguments"), str):
        name = fc.get("name", "?")
        out["function_call"] = {
            **fc,
            "arguments": JSONArguments(fc["arguments"], f"{where}.function_call ({name})"),
        }
    return out


def template_view(response: dict[str, Any], step_id: str = "") -> dict[str, Any]:
    """The response as later steps' templates see it (arguments addressable as objects)."""
    choices = response.get("choices")
    if not isinstance(choices, list):
        return response
    out = dict(response)
    wrapped = []
    for i, choice in enumerate(choices):
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            where = (
                f"outputs.{step_id}.choices[{i}].message" if step_id else f"choices[{i}].message"
            )
            choice = {**choice, "message": _wrap_message(choice["message"], where)}
        wrapped.append(choice)
    out["choices"] = wrapped
    return out


@dataclass
class _ResultBase:
    response: dict[str, Any]
    request: Request
    step_id: str | None = None
    cost: float | None = None
    """Dollars, from the price table (``cost_breakdown.total_usd``); None for unknown models."""
    cost_breakdown: Cost | None = None
    """What the call cost by token class (input, cached input, output, audio; batch)."""
    usage_estimated: bool = False
    """``usage`` was counted locally (a stream that sent none, or was cut midway)."""
    cached: bool = False
    latency_ms: float | None = None
    attempts: int = 1
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def usage(self) -> dict[str, Any]:
        usage = self.response.get("usage")
        return dict(usage) if isinstance(usage, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: the response plus chatstep's own fields."""
        return {
            "step_id": self.step_id,
            "response": self.response,
            "usage": self.usage,
            "cost": self.cost,
            "cost_breakdown": self.cost_breakdown.to_dict() if self.cost_breakdown else None,
            "usage_estimated": self.usage_estimated,
            "cached": self.cached,
            "latency_ms": self.latency_ms,
            "attempts": self.attempts,
        }


def _choice_text(choice: Any) -> str | None:
    if not isinstance(choice, dict):
        return None
    if "message" not in choice and isinstance(choice.get("text"), str):
        return str(choice["text"])  # the legacy Completions endpoint
    content = (choice.get("message") or {}).get("content")
    return content if isinstance(content, str) else None


@dataclass
class StepResult(_ResultBase):
    """The result of a chat step, or of a legacy ``completion`` step (``content`` is its text)."""

    parsed: Any = None
    """JSON output (json_object / json_schema) of the first choice, validated; else None."""
    answered_by: dict[str, Any] | None = None
    """For a step with ``fallbacks``: the candidate that answered, ``{"candidate": "step" or
    "fallbacks[i]", "model", "base_url"}`` (``base_url`` "local" for the embedded model)."""
    fallback_errors: list[dict[str, Any]] = field(default_factory=list)
    """The candidates tried before it: ``candidate``, ``model``, ``base_url``, ``sent`` (False
    when skipped because the prompt could not fit) and ``error``."""
    retrieved: list[dict[str, Any]] | None = None
    """For a step with ``retrieve``: the chunks its templates saw, best first,
    ``{text, source, score, chunk, line}``."""

    def _choices(self) -> list[dict[str, Any]]:
        choices = self.response.get("choices")
        return choices if isinstance(choices, list) else []

    @property
    def message(self) -> dict[str, Any]:
        choices = self._choices()
        return dict(choices[0].get("message") or {}) if choices else {}

    @property
    def content(self) -> str | None:
        """The first choice's text (Flyte's ``o0``): ``message.content``, or a legacy
        ``text_completion``'s ``text``."""
        choices = self._choices()
        return _choice_text(choices[0]) if choices else None

    @property
    def contents(self) -> list[str | None]:
        """Every choice's text, in choice order."""
        return [_choice_text(c) for c in self._choices()]

    @property
    def finish_reason(self) -> str | None:
        choices = self._choices()
        return choices[0].get("finish_reason") if choices else None

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The first choice's tool calls (or legacy function call), arguments decoded."""
        msg = self.message
        calls: list[ToolCall] = []
        for i, call in enumerate(msg.get("tool_calls") or []):
            if not isinstance(call, dict):
                raise InvalidJSONError(
                    f"choices[0].message.tool_calls[{i}]: not an object: {str(call)[:200]!r}"
                )
            fn: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
            where = f"choices[0].message.tool_calls[{i}] ({fn.get('name', '?')})"
            raw = raw_arguments(fn.get("arguments"), where)
            calls.append(
                ToolCall(call.get("id", ""), fn.get("name", ""), decode_arguments(raw, where), raw)
            )
        fc = msg.get("function_call")
        if not calls and isinstance(fc, dict):
            where = f"choices[0].message.function_call ({fc.get('name', '?')})"
            raw = raw_arguments(fc.get("arguments"), where)
            calls.append(ToolCall("", fc.get("name", ""), decode_arguments(raw, where), raw))
        return calls

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["content"] = self.content
        out["parsed"] = self.parsed
        if self.answered_by is not None:
            out["answered_by"] = self.answered_by
            out["fallback_errors"] = self.fallback_errors
        if self.retrieved is not None:
            out["retrieved"] = self.retrieved
        return out


@dataclass
class EmbeddingResult(_ResultBase):
    """The result of an embedding step."""

    @property
    def vectors(self) -> list[Any]:
        """One vector per input, in input order (base64 strings if that encoding was asked)."""
        data = sorted(self.response.get("data") or [], key=lambda d: d.get("index", 0))
        return [d.get("embedding") for d in data]


@dataclass
class ModerationResult(_ResultBase):
    """The result of a moderation step."""

    @property
    def results(self) -> list[dict[str, Any]]:
        """Per input: flagged, categories, category_scores."""
        results = self.response.get("results")
        return list(results) if isinstance(results, list) else []

    @property
    def flagged(self) -> bool:
        """True when any input was flagged."""
        return any(r.get("flagged") for r in self.results)


AnyResult = StepResult | EmbeddingResult | ModerationResult
