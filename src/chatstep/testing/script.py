"""Scripted answers: what a test tells the server to say next.

Items are queued per path with :meth:`TestServer.enqueue` and consumed one per request:

- :class:`Respond` -- a 200 answer, from shorthands (a full, spec-valid ``chat.completion`` is
  built around them and streamed when the request streams) or a raw ``body`` sent as-is;
- :class:`Fail` -- an OpenAI-shaped error with optional ``Retry-After`` headers;
- :class:`Delay` -- wait, then answer with another item (or the default answer);
- :class:`Drop` -- close the connection without answering;
- :class:`Trickle` -- send the headers at once, then a byte now and then, then the answer.

Answers that are wrong on the wire (a 200 carrying an error, empty choices, an error event in a
stream, parallel tool calls at one index...) are built by :mod:`chatstep.testing.faults`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatstep.testing.completions import (
    build_completion,
    make_choice,
    normalize_function_call,
    normalize_tool_calls,
)

__all__ = [
    "CHAT_PATH",
    "Delay",
    "Drop",
    "Fail",
    "Respond",
    "Script",
    "ScriptItem",
    "Trickle",
    "normalize_path",
    "render_chat",
]

JSON = dict[str, Any]
CHAT_PATH = "/v1/chat/completions"

# Default error type, code and message per status, as the OpenAI API sends them.
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", None, "The requested resource does not exist."),
    409: ("invalid_request_error", None, "The request conflicts with the current state."),
    422: ("invalid_request_error", None, "The request could not be processed."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


@dataclass(frozen=True)
class Respond:
    """A 200 answer.

    With shorthands (``content``, ``tool_calls``, ``function_call``, ``refusal``, ``choices``,
    ``finish_reason``, ``usage``) a full ``chat.completion`` is built for chat requests (and
    streamed as chunks when the request has ``stream: true``); shorthands left out come from the
    default answer. ``body`` is sent as-is instead (a list ``body`` answering a streaming request
    is sent as SSE events, then ``[DONE]``). ``validate=False`` skips the response spec check,
    for tests of malformed answers.
    """

    content: str | None = None
    tool_calls: Sequence[Mapping[str, Any]] | None = None
    function_call: Mapping[str, Any] | None = None
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    body: Any = None
    choices: Sequence[Any] | None = None
    headers: Mapping[str, str] | None = None
    refusal: str | None = None
    validate: bool = True

    def builds_message(self) -> bool:
        """Whether the shorthands describe the message (otherwise the default answer's is used)."""
        return any(
            value is not None
            for value in (self.content, self.tool_calls, self.function_call, self.choices)
        ) or (self.refusal is not None)


@dataclass(frozen=True)
class Fail:
    """An OpenAI-shaped error answer: ``{"error": {"message", "type", "param", "code"}}``."""

    status: int
    message: str | None = None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    retry_after: float | None = None
    """Seconds, sent as the ``Retry-After`` header."""
    retry_after_ms: float | None = None
    """Milliseconds, sent as the ``retry-after-ms`` header."""
    headers: Mapping[str, str] | None = None

    def error_body(self) -> JSON:
        """The JSON error body."""
        kind, code, message = _ERROR_DEFAULTS.get(
            self.status,
            ("server_error" if self.status >= 500 else "invalid_request_error", None, "Error."),
        )
        return {
            "error": {
                "message": self.message if self.message is not None else message,
                "type": self.type if self.type is not None else kind,
                "param": self.param,
                "code": self.code if self.code is not None else code,
            }
        }

    def response_headers(self) -> dict[str, str]:
        """``Retry-After`` / ``retry-after-ms`` plus any extra headers."""
        out: dict[str, str] = {}
        if self.retry_after is not None:
            out["retry-after"] = _number_text(self.retry_after)
        if self.retry_after_ms is not None:
            out["retry-after-ms"] = _number_text(self.retry_after_ms)
        out.update(self.headers or {})
        return out


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds``, then answer with ``then`` (the default answer when None)."""

    seconds: float
    then: ScriptItem | Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Drop:
    """Close the connection without answering (the client sees a connection error).

    ``reset=True`` aborts the TCP connection (RST) instead of closing it cleanly (FIN).
    """

    reset: bool = False


@dataclass(frozen=True)
class Trickle:
    """Send the status and headers at once, then one space every ``interval`` seconds for
    ``seconds``, then ``then`` (the default answer when None).

    A server that keeps the connection busy without answering: a client whose timeout is per
    read (httpx's) never times out on it. A streaming request gets SSE keep-alive comments
    (``: keep-alive``) instead of spaces, then the events. ``server.stats.trickles_cut`` counts
    trickles whose client hung up before the end.
    """

    seconds: float
    interval: float = 0.5
    then: ScriptItem | Mapping[str, Any] | None = None


ScriptItem = Respond | Fail | Delay | Drop | Trickle


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def normalize_path(path: str) -> str:
    """``"embeddings"``, ``"/embeddings"`` and ``"/v1/embeddings"`` all name ``/v1/embeddings``."""
    clean = "/" + path.strip("/")
    return clean if clean.startswith("/v1/") else "/v1" + clean


@dataclass
class Script:
    """Queues of scripted items per path; thread-safe (tests enqueue, the server consumes)."""

    _queues: dict[str, deque[Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enqueue(self, items: Sequence[Any], path: str = CHAT_PATH) -> None:
        """Queue items for requests to ``path``."""
        for item in items:
            if not isinstance(item, (Respond, Fail, Delay, Drop, Trickle, Mapping)):
                raise TypeError(
                    f"enqueue: {item!r} is not a script item; "
                    "use Respond, Fail, Delay, Drop, Trickle or a dict body"
                )
        with self._lock:
            self._queues.setdefault(normalize_path(path), deque()).extend(items)

    def pop(self, path: str) -> Any | None:
        """The next item for ``path``, or None when its queue is empty."""
        with self._lock:
            queue = self._queues.get(path)
            return queue.popleft() if queue else None

    def pending(self, path: str | None = None) -> int:
        """How many items are still queued (for ``path``, or in all)."""
        with self._lock:
            if path is not None:
                return len(self._queues.get(normalize_path(path), ()))
            return sum(len(queue) for queue in self._queues.values())

    def clear(self) -> None:
        """Forget every queued item."""
        with self._lock:
            self._queues.clear()


def _scripted_choice(entry: Any, index: int, seed: str) -> JSON:
    if isinstance(entry, str):
        return make_choice(index, content=entry)
    if not isinstance(entry, Mapping):
        raise TypeError(f"choices[{index}]: expected a string or a dict, got {entry!r}")
    if "message" in entry:
        # A full choice: fill what the spec requires and the test left out.
        choice = dict(entry)
        message = {"role": "assistant", "content": None, "refusal": None, **choice["message"]}
        choice["message"] = message
        choice.setdefault("index", index)
        choice.setdefault("logprobs", None)
        choice.setdefault("finish_reason", "tool_calls" if message.get("tool_calls") else "stop")
        return choice
    calls = entry.get("tool_calls")
    function_call = entry.get("function_call")
    return make_choice(
        index,
        content=entry.get("content"),
        tool_calls=normalize_tool_calls(calls, f"{seed}:{index}") if calls else None,
        function_call=normalize_function_call(function_call) if function_call else None,
        refusal=entry.get("refusal"),
        finish_reason=entry.get("finish_reason"),
    )


def render_chat(item: Respond, request: Mapping[str, Any], default: JSON) -> JSON:
    """The ``chat.completion`` a :class:`Respond` with shorthands stands for.

    ``default`` is the default answer to ``request``; it supplies the id, the prompt usage and,
    when the item does not describe the message, the choices.
    """
    completion_id = str(default["id"])
    if item.choices is not None:
        choices = [
            _scripted_choice(entry, index, completion_id)
            for index, entry in enumerate(item.choices)
        ]
    elif item.builds_message():
        calls = normalize_tool_calls(item.tool_calls, completion_id) if item.tool_calls else None
        function_call = normalize_function_call(item.function_call) if item.function_call else None
        choices = [
            make_choice(
                0,
                content=item.content,
                tool_calls=calls,
                function_call=function_call,
                refusal=item.refusal,
                finish_reason=item.finish_reason,
            )
        ]
    else:
        choices = [dict(choice) for choice in default["choices"]]
        if item.finish_reason is not None:
            for choice in choices:
                choice["finish_reason"] = item.finish_reason
    return build_completion(
        completion_id,
        str(request.get("model", "")),
        choices,
        prompt_tokens=int(default.get("usage", {}).get("prompt_tokens", 0)),
        usage=item.usage,
        service_tier=default.get("service_tier"),
    )
