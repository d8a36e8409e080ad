"""Assembling ``chat.completion`` bodies from choices, and splitting them into stream chunks.

Both the default synthetic answers and scripted :class:`~chatstep.testing.Respond` items go
through here, so a streamed answer always reassembles to exactly the non-streamed one.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "SYSTEM_FINGERPRINT",
    "build_completion",
    "make_choice",
    "normalize_function_call",
    "normalize_tool_calls",
    "stream_chunks",
    "word_count",
]

JSON = dict[str, Any]

SYSTEM_FINGERPRINT = "fp_chatstep_test"
_PIECE = re.compile(r"\s*\S+\s*|\s+")
_ARGUMENT_PIECES = 3


def word_count(text: str) -> int:
    """Approximate token count: whitespace-separated words."""
    return len(text.split())


def _arguments_text(arguments: Any, field: str) -> str:
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):
        return arguments
    if isinstance(arguments, Mapping):
        return json.dumps(dict(arguments))
    raise TypeError(
        f"{field}: arguments must be a dict or a JSON string, got {type(arguments).__name__}; "
        'pass e.g. {"city": "Paris"}'
    )


def _call_id(seed: str, index: int) -> str:
    digest = hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()
    return f"call_{digest[:24]}"


def normalize_tool_calls(tool_calls: Sequence[Mapping[str, Any]], seed: str) -> list[JSON]:
    """Turn ``[{"name", "arguments"}]`` shorthands (or full tool calls) into spec tool calls."""
    out: list[JSON] = []
    for index, call in enumerate(tool_calls):
        field = f"tool_calls[{index}]"
        if "function" in call:
            function = dict(call["function"])
            name = function.get("name")
            arguments = function.get("arguments")
        else:
            name = call.get("name")
            arguments = call.get("arguments")
        if not isinstance(name, str):
            raise ValueError(
                f'{field}: needs a "name" (the function to call), e.g. {{"name": "f"}}'
            )
        out.append(
            {
                "id": call.get("id") or _call_id(seed, index),
                "type": "function",
                "function": {"name": name, "arguments": _arguments_text(arguments, field)},
            }
        )
    return out


def normalize_function_call(function_call: Mapping[str, Any]) -> JSON:
    """Turn a legacy ``{"name", "arguments"}`` function call into its spec shape."""
    name = function_call.get("name")
    if not isinstance(name, str):
        raise ValueError('function_call: needs a "name", e.g. {"name": "f", "arguments": {}}')
    arguments = _arguments_text(function_call.get("arguments"), "function_call")
    return {"name": name, "arguments": arguments}


def make_choice(
    index: int,
    *,
    content: str | None = None,
    tool_calls: list[JSON] | None = None,
    function_call: JSON | None = None,
    refusal: str | None = None,
    finish_reason: str | None = None,
    logprobs: JSON | None = None,
) -> JSON:
    """One spec-shaped choice; ``finish_reason`` defaults from what the message carries."""
    message: JSON = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if function_call is not None:
        message["function_call"] = function_call
    if finish_reason is None:
        if tool_calls:
            finish_reason = "tool_calls"
        elif function_call is not None:
            finish_reason = "function_call"
        else:
            finish_reason = "stop"
    message.setdefault("annotations", [])
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def _completion_words(choice: Mapping[str, Any]) -> int:
    message = choice.get("message") or {}
    count = 0
    for key in ("content", "refusal"):
        if isinstance(message.get(key), str):
            count += word_count(message[key])
    for call in message.get("tool_calls") or []:
        count += max(1, word_count(str(call.get("function", {}).get("arguments", ""))))
    if isinstance(message.get("function_call"), Mapping):
        count += max(1, word_count(str(message["function_call"].get("arguments", ""))))
    return count


def build_completion(
    completion_id: str,
    model: str,
    choices: list[JSON],
    *,
    prompt_tokens: int,
    usage: Mapping[str, Any] | None = None,
    service_tier: str | None = None,
) -> JSON:
    """A full ``chat.completion`` body; usage is computed from the choices unless given."""
    if usage is None:
        completion_tokens = sum(_completion_words(choice) for choice in choices)
        usage_body: JSON = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
    else:
        usage_body = dict(usage)
        usage_body.setdefault("prompt_tokens", prompt_tokens)
        usage_body.setdefault("completion_tokens", 0)
        usage_body.setdefault(
            "total_tokens", int(usage_body["prompt_tokens"]) + int(usage_body["completion_tokens"])
        )
    body: JSON = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage_body,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if service_tier is not None:
        body["service_tier"] = service_tier
    return body


def _split_text(text: str) -> list[str]:
    # Word-sized deltas keep the whitespace, so "".join(pieces) == text.
    pieces = _PIECE.findall(text)
    return pieces or [text]


def _split_arguments(arguments: str) -> list[str]:
    if not arguments:
        return []
    size = max(1, -(-len(arguments) // _ARGUMENT_PIECES))
    return [arguments[start : start + size] for start in range(0, len(arguments), size)]


def _content_deltas(message: Mapping[str, Any], logprobs: Any) -> list[tuple[JSON, Any]]:
    content = message.get("content")
    if not isinstance(content, str) or not content:
        return []
    entries = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if isinstance(entries, list) and "".join(str(e.get("token", "")) for e in entries) == content:
        # One delta per token, each with its own logprob, as the API streams them.
        return [
            ({"content": entry["token"]}, {"content": [entry], "refusal": None})
            for entry in entries
        ]
    pieces = _split_text(content)
    out: list[tuple[JSON, Any]] = [({"content": piece}, None) for piece in pieces]
    if isinstance(logprobs, Mapping):
        out[0] = (out[0][0], dict(logprobs))
    return out


def _choice_deltas(choice: Mapping[str, Any]) -> list[tuple[JSON, Any]]:
    message: Mapping[str, Any] = choice.get("message") or {}
    logprobs = choice.get("logprobs")
    first: JSON = {"role": "assistant", "content": "", "refusal": None}
    deltas: list[tuple[JSON, Any]] = []
    tool_calls = message.get("tool_calls") or []
    function_call = message.get("function_call")
    if message.get("content") is None and (tool_calls or function_call or message.get("refusal")):
        first["content"] = None
    deltas.append((first, None))
    deltas.extend(_content_deltas(message, logprobs))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        deltas.extend(({"refusal": piece}, None) for piece in _split_text(refusal))
    for position, call in enumerate(tool_calls):
        function = call.get("function", {})
        head = {
            "index": position,
            "id": call.get("id"),
            "type": call.get("type", "function"),
            "function": {"name": function.get("name"), "arguments": ""},
        }
        deltas.append(({"tool_calls": [head]}, None))
        for piece in _split_arguments(str(function.get("arguments", ""))):
            part = {"index": position, "function": {"arguments": piece}}
            deltas.append(({"tool_calls": [part]}, None))
    if isinstance(function_call, Mapping):
        deltas.append(
            ({"function_call": {"name": function_call.get("name"), "arguments": ""}}, None)
        )
        for piece in _split_arguments(str(function_call.get("arguments", ""))):
            deltas.append(({"function_call": {"arguments": piece}}, None))
    return deltas


def stream_chunks(completion: Mapping[str, Any], *, include_usage: bool) -> list[JSON]:
    """The ``chat.completion.chunk`` sequence that streams ``completion`` (without ``[DONE]``)."""
    head: JSON = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created", int(time.time())),
        "model": completion.get("model"),
    }
    for key in ("system_fingerprint", "service_tier"):
        if key in completion:
            head[key] = completion[key]

    def chunk(choices: list[JSON]) -> JSON:
        out = {**head, "choices": choices}
        if include_usage:
            out["usage"] = None
        return out

    chunks: list[JSON] = []
    for choice in completion.get("choices") or []:
        index = choice.get("index", 0)
        for delta, logprobs in _choice_deltas(choice):
            entry = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}
            chunks.append(chunk([entry]))
        final = {"index": index, "delta": {}, "logprobs": None}
        chunks.append(chunk([{**final, "finish_reason": choice.get("finish_reason") or "stop"}]))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": completion.get("usage")})
    return chunks
