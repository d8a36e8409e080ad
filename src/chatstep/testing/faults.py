"""Answers that real OpenAI-compatible servers send and a client must not take for success.

Each builder returns a script item for :meth:`TestServer.enqueue`, taken from public bug reports
against OpenAI-style clients (OpenRouter, vLLM, Ollama, llama.cpp, LiteLLM, Azure)::

    server.enqueue(error_in_success(), Respond(content="ok"))   # a 200 error, then an answer
    server.enqueue(mid_stream_error(vllm=True))                  # vLLM's GatewayTimeout event

The same faults can be injected at random with ``Conditions(fault_rate=..., faults=("error_200",
"empty_answer", "stream_error"))``; :class:`~chatstep.testing.Trickle` sends a body slowly, and
``Fail(..., headers={"x-should-retry": "false"})`` / ``Respond(headers=...)`` set that header.
Bodies are sent as given (``validate=False``): they break the OpenAI spec on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from chatstep.testing.script import Respond

__all__ = [
    "SERVER_ERROR",
    "chat_completion",
    "chunks_of",
    "empty_choices",
    "error_in_success",
    "fenced_json",
    "mid_stream_error",
    "object_arguments",
    "parallel_calls_at_one_index",
]

JSON = dict[str, Any]

SERVER_ERROR: Mapping[str, Any] = {
    "message": "The server is overloaded (an injected fault).",
    "type": "server_error",
    "param": None,
    "code": "overloaded",
}
"""The error object of the ``error_200`` and ``stream_error`` fault kinds."""

_VLLM_TIMEOUT: Mapping[str, Any] = {
    "object": "error",
    "message": "The request timed out.",
    "type": "GatewayTimeout",
    "param": None,
    "code": 504,
}


def chat_completion(
    message: Mapping[str, Any], *, finish_reason: str = "stop", model: str = "gpt-4o-mini"
) -> JSON:
    """A minimal ``chat.completion`` body with one choice holding ``message``."""
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, **message},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }


def chunks_of(choices: Sequence[Mapping[str, Any]], *, model: str = "gpt-4o-mini") -> list[JSON]:
    """``chat.completion.chunk`` events, one per ``{"delta": ..., "finish_reason": ...}``."""
    head = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
    }
    return [
        {**head, "choices": [{"index": 0, "logprobs": None, "finish_reason": None, **choice}]}
        for choice in choices
    ]


def error_in_success(
    message: str = "Provider returned error",
    *,
    code: str | int | None = "overloaded",
    type: str | None = "server_error",
) -> Respond:
    """``200 {"error": {...}}`` (OpenRouter sends ``code: 502`` for a failed upstream)."""
    error = {**SERVER_ERROR, "message": message, "code": code, "type": type}
    return Respond(body={"error": error}, validate=False)


def empty_choices() -> Respond:
    """``200 {"choices": []}``: a success status with no answer in it."""
    body = chat_completion({})
    body["choices"] = []
    return Respond(body=body, validate=False)


def mid_stream_error(content: str = "Hel", *, vllm: bool = False) -> Respond:
    """A stream that sends ``content``, then an error event instead of the rest.

    The error is ``{"error": SERVER_ERROR}``, or with ``vllm=True`` vLLM's bare
    ``{"object": "error", "code": 504, "type": "GatewayTimeout", ...}``.
    """
    first = chunks_of([{"delta": {"role": "assistant", "content": content}}])
    event: JSON = dict(_VLLM_TIMEOUT) if vllm else {"error": dict(SERVER_ERROR)}
    return Respond(body=[*first, event], validate=False)


def parallel_calls_at_one_index(
    calls: Sequence[tuple[str, str, Mapping[str, Any]]], *, stream: bool = True
) -> Respond:
    """Parallel tool calls ``(id, name, arguments)`` all streamed at ``index: 0``, told apart
    only by their new ``id`` (as some servers do); ``stream=False`` answers them whole."""
    if not stream:
        tool_calls = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(a)}}
            for cid, name, a in calls
        ]
        return Respond(body=chat_completion({"tool_calls": tool_calls}, finish_reason="tool_calls"))
    deltas: list[JSON] = [{"delta": {"role": "assistant", "content": None}}]
    for cid, name, arguments in calls:
        text = json.dumps(arguments)
        half = len(text) // 2
        start = {"index": 0, "id": cid, "type": "function", "function": {"name": name}}
        deltas.append({"delta": {"tool_calls": [{**start, "function": {"name": name}}]}})
        for piece in (text[:half], text[half:]):
            call = {"index": 0, "function": {"arguments": piece}}
            deltas.append({"delta": {"tool_calls": [call]}})
    deltas.append({"delta": {}, "finish_reason": "tool_calls"})
    return Respond(body=chunks_of(deltas), validate=False)


def object_arguments(name: str, arguments: Any) -> Respond:
    """A tool call whose ``arguments`` is a JSON object (or any value), not JSON text."""
    call = {
        "id": "call_obj",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    return Respond(
        body=chat_completion({"tool_calls": [call]}, finish_reason="tool_calls"), validate=False
    )


def fenced_json(value: Any, *, language: str = "json", prose: str = "") -> Respond:
    """JSON output wrapped in a Markdown fence (Ollama, local models), optionally after prose."""
    content = f"{prose}```{language}\n{json.dumps(value)}\n```"
    return Respond(content=content)
