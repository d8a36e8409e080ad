"""Canonical requests: the exact JSON body a rendered step sends, with no secrets inside.

The body is what reaches the endpoint byte for byte (the SDK's low-level ``post`` sends it as
given), what the cache keys on, and what the history records. Connection settings (key, base
URL, headers) are not part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from chatstep.errors import ConfigError
from chatstep.steps.definitions import ChatCompletion, Completion, Embedding, Moderation, Step
from chatstep.steps.tools import function_call_to_tool_choice, functions_to_tools

__all__ = ["Endpoint", "Request", "build_request", "compose_messages"]

Endpoint = Literal["chat.completions", "embeddings", "moderations", "completions"]

# Typed fields sent as they are when set (None means: the provider's default).
_CHAT_PARAMS = (
    "temperature",
    "top_p",
    "n",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "user",
    "logprobs",
    "top_logprobs",
    "parallel_tool_calls",
    "service_tier",
    "reasoning_effort",
    "verbosity",
    "metadata",
    "store",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "prompt_cache_key",
    "safety_identifier",
)


@dataclass(frozen=True)
class Request:
    """One API call: the endpoint and its JSON body."""

    endpoint: Endpoint
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def path(self) -> str:
        return "/" + self.endpoint.replace(".", "/")


def compose_messages(step: ChatCompletion) -> list[dict[str, Any]]:
    """system_message, chat_history, messages, prompt: in that order."""
    out: list[dict[str, Any]] = []
    if step.system_message is not None:
        out.append({"role": "system", "content": step.system_message})
    for group in (step.chat_history, step.messages):
        if isinstance(group, str):
            raise ConfigError("messages", "still holds a template; render the step first")
        out.extend(m.to_api() for m in group or [])
    if step.prompt is not None:
        out.append({"role": "user", "content": step.prompt})
    if not out:
        raise ConfigError("messages", "the step produced no messages", "set prompt or messages")
    return out


def _chat_body(step: ChatCompletion, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": step.model, "messages": compose_messages(step)}
    for name in _CHAT_PARAMS:
        value = getattr(step, name)
        if value is not None:
            body[name] = value
    if step.response_format is not None:
        body["response_format"] = step.response_format.to_api()
    tools = [t.to_api() for t in step.tools or []]
    if step.functions:
        tools += functions_to_tools(step.functions)
    if tools:
        body["tools"] = tools
    if step.tool_choice is not None:
        choice = step.tool_choice
        body["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
    elif step.function_call is not None:
        body["tool_choice"] = function_call_to_tool_choice(step.function_call)
    if stream:
        body["stream"] = True
        options = step.stream_options.model_dump(exclude_none=True) if step.stream_options else {}
        options.setdefault("include_usage", True)
        body["stream_options"] = options
    _merge_extra(body, step.extra_body)
    return body


def _merge_extra(body: dict[str, Any], extra: dict[str, Any] | None) -> None:
    for key, value in (extra or {}).items():
        if key in body:
            raise ConfigError(
                f"extra_body.{key}",
                f"duplicates the field {key!r} that the step already sets",
                f"set {key} in one place only",
            )
        body[key] = value


def build_request(step: Step, *, stream: bool | None = None) -> Request:
    """The canonical request of a rendered step. ``stream`` overrides the step's own flag."""
    if isinstance(step, ChatCompletion):
        wants_stream = bool(step.stream) if stream is None else stream
        return Request("chat.completions", _chat_body(step, wants_stream))
    if isinstance(step, Embedding):
        body: dict[str, Any] = {"model": step.model, "input": step.input}
        for name in ("dimensions", "encoding_format", "user"):
            value = getattr(step, name)
            if value is not None:
                body[name] = value
        return Request("embeddings", body)
    if isinstance(step, Moderation):
        return Request("moderations", {"model": step.model, "input": step.input})
    if isinstance(step, Completion):
        from chatstep.core.text_completion import completion_body

        return Request("completions", completion_body(step, stream))
    raise TypeError(f"not a step: {type(step).__name__}")
