"""Streaming: deltas for the caller, and the final response assembled from the chunks.

The assembled response has the shape of a non-streamed ``chat.completion``: content and
tool-call arguments are joined from their deltas, and ``usage`` comes from the last chunk
(requested with ``stream_options.include_usage``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

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


_MESSAGE_FIELDS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})
_CHOICE_FIELDS = frozenset({"index", "delta", "logprobs", "finish_reason"})
_CHUNK_SKIP = frozenset({"object", "choices", "usage"})


def _merge_extra(into: dict[str, Any], key: str, value: Any, *, join_strings: bool) -> None:
    """A field chatstep does not know: strings join like ``content`` (``join_strings``), other
    values keep the last one sent; ``null`` never erases an earlier value (a field only ever
    sent as ``null`` stays ``null``)."""
    if value is None:
        into.setdefault(key, None)
        return
    current = into.get(key)
    if join_strings and isinstance(value, str) and isinstance(current, str | None):
        into[key] = (current or "") + value
    else:
        into[key] = value


def _join_logprobs(into: dict[str, Any] | None, logprobs: Any) -> dict[str, Any] | None:
    """``into`` with one event's ``logprobs`` added: lists (tokens, top_logprobs...) are
    concatenated, other fields keep their last non-null value (``null`` if never anything
    else). ``into`` unchanged when ``logprobs`` is not an object."""
    if not isinstance(logprobs, dict):
        return into
    into = into if into is not None else {}
    for key, value in logprobs.items():
        if isinstance(value, list):
            into[key] = [*(into.get(key) or []), *value]
        else:
            into.setdefault(key, None)
            _merge_extra(into, key, value, join_strings=False)
    return into


class _ChoiceLike(Protocol):
    finish_reason: str | None


S = TypeVar("S", bound=_ChoiceLike)


class _StreamAssembler(Generic[S]):
    """What a streamed answer's assemblers share: per-choice state, top-level fields, usage
    and the counts; subclasses add a choice (``_add_choice``) and build the response."""

    def __init__(self) -> None:
        self._choices: dict[int, S] = {}
        self._meta: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None
        self.chunks = 0

    def add(self, chunk: dict[str, Any]) -> list[Delta]:
        self.chunks += 1
        for key, value in chunk.items():
            if key not in _CHUNK_SKIP:
                self._merge_meta(key, value)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        deltas = []
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict):
                deltas.append(self._add_choice(choice, chunk))
        return deltas

    def _merge_meta(self, key: str, value: Any) -> None:
        _merge_extra(self._meta, key, value, join_strings=False)

    def _add_choice(self, choice: dict[str, Any], chunk: dict[str, Any]) -> Delta:
        raise NotImplementedError

    @property
    def has_choices(self) -> bool:
        """True once any chunk carried a choice."""
        return bool(self._choices)

    @property
    def finished(self) -> bool:
        """True once every choice seen has a finish_reason."""
        return bool(self._choices) and all(c.finish_reason for c in self._choices.values())

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        """The response object ``kind`` holding ``choices``, the chunks' fields and usage."""
        out: dict[str, Any] = {
            "id": "",
            "created": 0,
            "model": "",
            **self._meta,
            "object": kind,
            "choices": choices,
        }
        if self.usage is not None:
            out["usage"] = self.usage
        return out


@dataclass
class _ChoiceState:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    slots: dict[int, int] = field(default_factory=dict)
    """Stream index of a tool call -> its position in ``tool_calls`` (the current call there)."""
    function_call: dict[str, Any] | None = None
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None
    saw_content: bool = False
    extra_message: dict[str, Any] = field(default_factory=dict)
    extra_choice: dict[str, Any] = field(default_factory=dict)


class ChunkAssembler(_StreamAssembler[_ChoiceState]):
    """Feed ``chat.completion.chunk`` dicts; get Delta objects back and the final response.

    The assembled response equals the non-streamed one field by field, as servers really
    stream: ``content``, ``refusal``, tool-call names and arguments and unknown string fields of
    a delta (``reasoning_content``, ``reasoning``) are joined; other unknown fields of a chunk, a
    choice or a delta keep their last non-null value (``null`` if never anything else); a tool
    call with a new ``id`` at an index already used starts a new call (servers that send
    parallel calls all at ``index: 0``); chunks without choices (a usage-only last chunk) and
    fields repeated or blank in later chunks change nothing.
    """

    def _add_choice(self, choice: dict[str, Any], chunk: dict[str, Any]) -> Delta:
        index = int(choice.get("index") or 0)
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
            _join_name(state.function_call, fc.get("name"))
            state.function_call["arguments"] += _text(fc.get("arguments"))
        for key, value in delta.items():
            if key not in _MESSAGE_FIELDS:
                _merge_extra(state.extra_message, key, value, join_strings=True)
        for key, value in choice.items():
            if key not in _CHOICE_FIELDS:
                _merge_extra(state.extra_choice, key, value, join_strings=False)
        state.logprobs = _join_logprobs(state.logprobs, choice.get("logprobs"))
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
        new_id = call.get("id") or ""
        raw_index = call.get("index")
        position: int | None
        if raw_index is None:
            # No index (some servers): a new id starts a call, anything else continues the last.
            position = len(state.tool_calls) - 1 if state.tool_calls else None
            slot = -1
        else:
            slot = int(raw_index)
            position = state.slots.get(slot)
        if position is not None and new_id and state.tool_calls[position]["id"] not in ("", new_id):
            position = None  # a new id at a used index: a parallel call, not a continuation
        if position is None:
            state.tool_calls.append(
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            position = len(state.tool_calls) - 1
        if slot >= 0:
            state.slots[slot] = position
        entry = state.tool_calls[position]
        if new_id:
            entry["id"] = new_id
        if call.get("type"):
            entry["type"] = call["type"]
        fn = call.get("function") or {}
        _join_name(entry["function"], fn.get("name"))
        entry["function"]["arguments"] += _text(fn.get("arguments"))
        for key, value in call.items():
            if key not in ("index", "id", "type", "function"):
                _merge_extra(entry, key, value, join_strings=False)

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
                message["tool_calls"] = state.tool_calls
            if state.function_call is not None:
                message["function_call"] = state.function_call
            message.update(state.extra_message)
            choices.append(
                {
                    **state.extra_choice,
                    "index": index,
                    "message": message,
                    "logprobs": state.logprobs,
                    "finish_reason": state.finish_reason,
                }
            )
        return self._envelope("chat.completion", choices)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _join_name(target: dict[str, Any], piece: Any) -> None:
    # Names come whole in one delta; a server repeating the whole name later adds nothing.
    if isinstance(piece, str) and piece and piece != target["name"]:
        target["name"] += piece
