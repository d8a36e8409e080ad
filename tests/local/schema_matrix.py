"""A generated matrix of structured-output requests for the local model, and their check.

Schemas are built from a seeded random generator over the features a user's schema may have
(required and optional properties, unbounded and bounded strings, enums, numbers and integers
with and without bounds, arrays, nested objects, anyOf, additionalProperties true/false/absent),
then asked for as ``response_format`` json_schema, as a forced tool call (by name or
``"required"``), and as a legacy function call; plus ``json_object`` over many prompts; at
several temperatures and seeds, with ``n`` > 1 and streaming mixed in. ``max_tokens`` is small,
so a case answers either with JSON valid against its schema, or is cut at ``max_tokens``
(finish_reason ``length``), or fails with a typed error; the process never aborts.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import jsonschema

__all__ = ["MatrixCase", "assemble_stream", "check_choices", "matrix_cases"]

MAX_TOKENS = 32
TEMPERATURES = (None, 0, 0.7, 1.0, 1.5)

_LEAVES: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "string", "maxLength": 12},
    {"type": "string", "enum": ["celsius", "fahrenheit"]},
    {"type": "integer"},
    {"type": "integer", "minimum": 0},
    {"type": "integer", "minimum": 1, "maximum": 5},
    {"type": "number"},
    {"type": "number", "minimum": 0, "maximum": 1},
    {"type": "boolean"},
    {"type": ["string", "null"]},
    {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "integer"}]},
]
_NAMES = ["location", "unit", "count", "score", "name", "tags", "ok", "detail", "when", "note"]
_PROMPTS = [
    "Hello",
    "Give a JSON object describing a cat.",
    "What is the weather in Paris?",
    "List three fruits.",
    "Reply with your name and age.",
    "Describe a book you like.",
    "{}",
    "Summarize: the meeting moved to Tuesday.",
]


@dataclass(frozen=True)
class MatrixCase:
    """One request: its id, its body, and the schema its JSON answer must match."""

    id: str
    body: dict[str, Any]
    schema: dict[str, Any]
    mode: str  # "json_object", "json_schema", "tool" or "function"
    stream: bool = False


def _value_schema(rng: random.Random, depth: int) -> dict[str, Any]:
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return {"type": "array", "items": _value_schema(rng, depth + 1), "maxItems": 3}
    if depth < 2 and roll < 0.3:
        return _object_schema(rng, depth + 1)
    return dict(rng.choice(_LEAVES))


def _object_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    names = rng.sample(_NAMES, rng.randint(1, 3))
    properties = {name: _value_schema(rng, depth) for name in names}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    required = [name for name in names if rng.random() < 0.5]
    if required:
        schema["required"] = required
    extra = rng.choice(["absent", True, False])
    if extra != "absent":
        schema["additionalProperties"] = extra
    return schema


def matrix_cases(seed: int = 12, count: int = 20) -> list[MatrixCase]:
    """``count`` generated schema cases plus json_object cases over every prompt."""
    rng = random.Random(seed)
    cases = []
    for i, prompt in enumerate(_PROMPTS):
        body = _body(prompt, TEMPERATURES[i % len(TEMPERATURES)], seed + i)
        body["response_format"] = {"type": "json_object"}
        cases.append(MatrixCase(f"json_object-{i}", body, {"type": "object"}, "json_object"))
    for i in range(count):
        schema = _object_schema(rng)
        body = _body(rng.choice(_PROMPTS), TEMPERATURES[i % len(TEMPERATURES)], seed + i)
        mode = ("json_schema", "tool", "tool_required", "function")[i % 4]
        if mode == "json_schema":
            spec = {"name": "answer", "schema": schema}
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        elif mode.startswith("tool"):
            tools = [_tool("get_weather", schema)]
            if mode == "tool_required" and i % 8 == 2:
                tools.append(_tool("get_time", _object_schema(rng)))
                schema = {"anyOf": [schema, tools[1]["function"]["parameters"]]}
            body["tools"] = tools
            body["tool_choice"] = (
                "required"
                if mode == "tool_required"
                else {"type": "function", "function": {"name": "get_weather"}}
            )
        else:
            body["functions"] = [{"name": "get_weather", "parameters": schema}]
            body["function_call"] = {"name": "get_weather"}
        if i % 5 == 3:
            body["n"] = 2
        stream = i % 6 == 5
        cases.append(
            MatrixCase(
                f"{mode}-{i}", body, schema, "tool" if mode.startswith("tool") else mode, stream
            )
        )
    return cases


def _tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def _body(prompt: str, temperature: float | None, seed: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "local",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "seed": seed,
    }
    if temperature is not None:
        body["temperature"] = temperature
    return body


def _json_text(case: MatrixCase, message: dict[str, Any]) -> str:
    if case.mode == "tool":
        calls = message.get("tool_calls") or []
        assert len(calls) == 1, f"{case.id}: expected one tool call, got {message}"
        return str(calls[0]["function"]["arguments"])
    if case.mode == "function":
        return str(message["function_call"]["arguments"])
    return str(message["content"])


def check_choices(case: MatrixCase, choices: list[dict[str, Any]]) -> int:
    """Assert every choice is schema-valid JSON or cut at max_tokens; the number cut."""
    expected = case.body.get("n", 1)
    assert len(choices) == expected, f"{case.id}: {len(choices)} choices, expected {expected}"
    cut = 0
    for choice in choices:
        if choice["finish_reason"] == "length":
            cut += 1
            continue
        text = _json_text(case, choice["message"])
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise AssertionError(f"{case.id}: not JSON ({exc}): {text!r}") from exc
        jsonschema.validate(value, case.schema)
    return cut


def assemble_stream(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The choices (message + finish_reason) that ``chat.completion.chunk`` bodies add up to."""
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for part in chunk.get("choices") or []:
            entry = choices.setdefault(
                part["index"], {"message": {"content": None}, "finish_reason": None}
            )
            message, delta = entry["message"], part.get("delta") or {}
            if delta.get("content") is not None:
                message["content"] = (message["content"] or "") + delta["content"]
            for call in delta.get("tool_calls") or []:
                calls = message.setdefault("tool_calls", [{"function": {"arguments": ""}}])
                calls[0]["function"]["arguments"] += call["function"].get("arguments") or ""
            if delta.get("function_call"):
                function = message.setdefault("function_call", {"arguments": ""})
                function["arguments"] += delta["function_call"].get("arguments") or ""
            if part.get("finish_reason"):
                entry["finish_reason"] = part["finish_reason"]
    return [choices[index] for index in sorted(choices)]
