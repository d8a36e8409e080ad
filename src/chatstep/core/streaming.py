"""Streaming: deltas for the caller, and the final response assembled from the chunks.

The assembled response has the shape of a non-streamed ``chat.completion``: content and
tool-call arguments are joined from their deltas, and ``usage`` comes from the last chunk
(requested with ``stream_options.include_usage``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChunkAssembler", "Delta"]


@dataclass(frozen=True)
class Delta:
    """One streamed piece of one choice."""

    choice: int
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    finish_reason: str | None = None
    chunk: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class _ChoiceState:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    function_call: dict[str, Any] | None = None
    finish_reason: str | None = None
    logprobs: dict[str, list[Any]] | None = None
    saw_content: bool = False


class ChunkAssembler:
    """Feed ``chat.completion.chunk`` dicts; get Delta objects back and the final response."""

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceState] = {}
        self._meta: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None
        self.chunks = 0

    def add(self, chunk: dict[str, Any]) -> list[Delta]:
        self.chunks += 1
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(key) is not None:
                self._meta[key] = chunk[key]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        deltas = []
        for choice in chunk.get("choices") or []:
            deltas.append(self._add_choice(choice, chunk))
        return deltas

    def _add_choice(self, choice: dict[str, Any], chunk: dict[str, Any]) -> Delta:
        index = int(choice.get("index", 0))
        state = self._choices.setdefault(index, _ChoiceState())
        delta = choice.get("delta") or {}
        if delta.get("role"):
            state.role = delta["role"]
        content = delta.get("content")
        if content is not None:
            state.saw_content = True
            state.content.append(content)
        if delta.get("refusal"):
            state.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            self._add_tool_call(state, call)
        fc = delta.get("function_call")
        if fc:
            if state.function_call is None:
                state.function_call = {"name": "", "arguments": ""}
            state.function_call["name"] += fc.get("name") or ""
            state.function_call["arguments"] += fc.get("arguments") or ""
        logprobs = choice.get("logprobs")
        if logprobs:
            state.logprobs = state.logprobs or {"content": [], "refusal": []}
            for key in ("content", "refusal"):
                state.logprobs[key].extend(logprobs.get(key) or [])
        if choice.get("finish_reason"):
            state.finish_reason = choice["finish_reason"]
        return Delta(
            choice=index,
            content=content,
            refusal=delta.get("refusal"),
            tool_calls=delta.get("tool_calls"),
            function_call=fc,
            finish_reason=choice.get("finish_reason"),
            chunk=chunk,
        )

    @staticmethod
    def _add_tool_call(state: _ChoiceState, call: dict[str, Any]) -> None:
        index = int(call.get("index", len(state.tool_calls)))
        entry = state.tool_calls.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if call.get("id"):
            entry["id"] = call["id"]
        if call.get("type"):
            entry["type"] = call["type"]
        fn = call.get("function") or {}
        entry["function"]["name"] += fn.get("name") or ""
        entry["function"]["arguments"] += fn.get("arguments") or ""

    @property
    def finished(self) -> bool:
        """True once every choice seen has a finish_reason."""
        return bool(self._choices) and all(c.finish_reason for c in self._choices.values())

    def response(self) -> dict[str, Any]:
        """The assembled ``chat.completion``."""
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {
                "role": state.role,
                "content": "".join(state.content) if state.saw_content else None,
                "refusal": "".join(state.refusal) if state.refusal else None,
            }
            if state.tool_calls:
                message["tool_calls"] = [state.tool_calls[i] for i in sorted(state.tool_calls)]
            if state.function_call is not None:
                message["function_call"] = state.function_call
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": state.logprobs,
                    "finish_reason": state.finish_reason,
                }
            )
        out: dict[str, Any] = {
            "id": self._meta.get("id", ""),
            "object": "chat.completion",
            "created": self._meta.get("created", 0),
            "model": self._meta.get("model", ""),
            "choices": choices,
        }
        for key in ("system_fingerprint", "service_tier"):
            if key in self._meta:
                out[key] = self._meta[key]
        if self.usage is not None:
            out["usage"] = self.usage
        return out
