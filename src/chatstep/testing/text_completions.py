"""The test server's legacy Completions endpoint (``POST /v1/completions``).

The default answer is deterministic: each prompt is continued with ``" echo: <prompt>"``, cut
at ``stop`` and at ``max_tokens`` words (the API's default of 16 when unset; ``finish_reason``
``length``), ``n`` choices per prompt (choice ``i * n + j``), the prompt in front with ``echo``,
and the legacy ``logprobs`` object (``tokens``, ``token_logprobs``, ``top_logprobs``,
``text_offset``) when ``logprobs`` is set. Rules the API enforces beyond its schema are refused
with its 400s: ``best_of`` below ``n``, ``best_of`` > 1 with ``stream``, ``echo`` with ``suffix``.
A stream is ``text_completion`` events (the non-streamed shape, text in pieces), then a usage
event when ``stream_options.include_usage`` is set.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from chatstep.testing.completions import SYSTEM_FINGERPRINT, word_count
from chatstep.testing.script import Fail, Respond

__all__ = [
    "COMPLETIONS_ROUTE",
    "default_text_completion",
    "finished_event",
    "refusal",
    "render_text",
    "text_stream_chunks",
]

JSON = dict[str, Any]
COMPLETIONS_ROUTE = "/v1/completions"
_PIECE = re.compile(r"\s*\S+\s*|\s+")
_DEFAULT_MAX_TOKENS = 16


def _prompts(body: Mapping[str, Any]) -> list[str]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        return [" ".join(str(t) for t in prompt)]  # one prompt of token ids
    if isinstance(prompt, list):
        return [p if isinstance(p, str) else " ".join(str(t) for t in p) for p in prompt]
    return [""]


def refusal(body: Any) -> Fail | None:
    """The 400 the API answers for a body its schema allows but its rules refuse, or None."""
    if not isinstance(body, Mapping):
        return None
    n, best_of = body.get("n") or 1, body.get("best_of")
    if isinstance(best_of, int) and isinstance(n, int) and best_of < n:
        return Fail(400, "best_of must be greater than or equal to n.", param="best_of")
    if isinstance(best_of, int) and best_of > 1 and body.get("stream"):
        return Fail(400, "Cannot stream results with best_of > 1.", param="best_of")
    if body.get("echo") and body.get("suffix") is not None:
        return Fail(400, "echo and suffix cannot be used together.", param="echo")
    return None


def _legacy_logprobs(text: str, top: int, offset: int) -> JSON:
    tokens = _PIECE.findall(text)
    offsets, position = [], offset
    for token in tokens:
        offsets.append(position)
        position += len(token)
    logprobs = [-0.01 * (i % 10 + 1) for i in range(len(tokens))]
    tops = [
        {token: lp, **{f"alt{k}": lp - k for k in range(1, top)}}
        for token, lp in zip(tokens, logprobs, strict=True)
    ]
    return {
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": tops if top else None,
        "text_offset": offsets,
    }


def _continuation(body: Mapping[str, Any], prompt: str) -> tuple[str, str]:
    text = f" echo: {prompt}"
    stops = body.get("stop")
    for stop in [stops] if isinstance(stops, str) else list(stops or []):
        if isinstance(stop, str) and stop and stop in text:
            text = text[: text.index(stop)]
    limit = body.get("max_tokens")
    limit = _DEFAULT_MAX_TOKENS if limit is None else limit
    pieces = _PIECE.findall(text)
    if isinstance(limit, int) and len(text.split()) > limit:
        return "".join(pieces[:limit]).rstrip(), "length"
    return text, "stop"


def _build(
    completion_id: str, body: Mapping[str, Any], choices: list[JSON], usage: Any = None
) -> JSON:
    prompt_words = sum(word_count(p) for p in _prompts(body))
    if usage is None:
        completion_words = sum(word_count(str(c.get("text") or "")) for c in choices)
        usage = {
            "prompt_tokens": prompt_words,
            "completion_tokens": completion_words,
            "total_tokens": prompt_words + completion_words,
        }
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": str(body.get("model", "")),
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": dict(usage),
    }


def default_text_completion(body: Mapping[str, Any], completion_id: str) -> JSON:
    """The deterministic ``text_completion`` answering a ``/v1/completions`` request."""
    n = body.get("n") or 1
    echo = bool(body.get("echo"))
    logprobs = body.get("logprobs")
    choices: list[JSON] = []
    for prompt in _prompts(body):
        for _ in range(int(n)):
            text, reason = _continuation(body, prompt)
            if body.get("max_tokens") == 0:
                text, reason = "", "length"
            head = prompt if echo else ""
            choice: JSON = {
                "text": head + text,
                "index": len(choices),
                "logprobs": None,
                "finish_reason": reason,
            }
            if isinstance(logprobs, int) and not isinstance(logprobs, bool):
                choice["logprobs"] = _legacy_logprobs(head + text, logprobs, 0)
            choices.append(choice)
    return _build(completion_id, body, choices)


def render_text(item: Respond, request: Mapping[str, Any], default: JSON) -> JSON:
    """The ``text_completion`` a :class:`Respond` with shorthands stands for.

    ``content`` is the first choice's text; ``choices`` entries are texts or whole choices;
    ``finish_reason`` and ``usage`` override the default answer's.
    """
    if item.choices is not None:
        choices = [
            {"text": c, "index": i, "logprobs": None, "finish_reason": "stop"}
            if isinstance(c, str)
            else {"index": i, "logprobs": None, "finish_reason": "stop", **dict(c)}
            for i, c in enumerate(item.choices)
        ]
    elif item.content is not None:
        choices = [{"text": item.content, "index": 0, "logprobs": None, "finish_reason": "stop"}]
    else:
        choices = [dict(choice) for choice in default["choices"]]
    if item.finish_reason is not None:
        for choice in choices:
            choice["finish_reason"] = item.finish_reason
    return {**_build(str(default["id"]), request, choices, item.usage), "id": default["id"]}


def text_stream_chunks(completion: Mapping[str, Any], *, include_usage: bool) -> list[JSON]:
    """The ``text_completion`` events that stream ``completion`` (without ``[DONE]``)."""
    head: JSON = {
        key: completion[key]
        for key in ("id", "object", "created", "model", "system_fingerprint")
        if key in completion
    }
    chunks: list[JSON] = []
    for choice in completion.get("choices") or []:
        index = choice.get("index", 0)
        for piece in _PIECE.findall(str(choice.get("text") or "")):
            entry = {"text": piece, "index": index, "logprobs": None, "finish_reason": None}
            chunks.append({**head, "choices": [entry]})
        reason = choice.get("finish_reason") or "stop"
        end = {"text": "", "index": index, "logprobs": None, "finish_reason": reason}
        chunks.append({**head, "choices": [end]})
    if include_usage:
        chunks.append({**head, "choices": [], "usage": completion.get("usage")})
    return chunks


def finished_event(chunk: Mapping[str, Any]) -> JSON:
    """A stream event as the spec's ``CreateCompletionResponse`` can check it: a ``null``
    ``finish_reason`` (every event but a choice's last) stands in as ``"length"``."""
    choices = [
        {**c, "finish_reason": c.get("finish_reason") or "length"} if isinstance(c, Mapping) else c
        for c in chunk.get("choices") or []
    ]
    return {**chunk, "choices": choices}
