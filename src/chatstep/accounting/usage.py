"""Usage counted locally, for answers the server sent without it (streams, cut streams)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["local_usage"]


def _choice_text(choice: Mapping[str, Any]) -> str:
    if "message" not in choice and isinstance(choice.get("text"), str):
        return str(choice["text"])  # a legacy text_completion choice
    message = choice.get("message") or {}
    parts = [message.get("content") or "", message.get("refusal") or ""]
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        parts += [str(fn.get("name") or ""), str(fn.get("arguments") or "")]
    fc = message.get("function_call")
    if isinstance(fc, Mapping):
        parts += [str(fc.get("name") or ""), str(fc.get("arguments") or "")]
    return "".join(p if isinstance(p, str) else json.dumps(p) for p in parts)


def local_usage(body: Mapping[str, Any], response: Mapping[str, Any]) -> dict[str, int]:
    """A Chat Completions ``usage`` counted with the model's tokenizer.

    ``prompt_tokens`` is :func:`~chatstep.accounting.tokens.estimate_prompt_tokens` of the
    request; ``completion_tokens`` the tokens of every choice's text, refusal and tool calls
    received so far. It is an estimate: the server's own count may differ by a few tokens.
    """
    from chatstep.accounting.tokens import count_tokens, estimate_prompt_tokens

    model = str(body.get("model") or "")
    endpoint = "completions" if "prompt" in body and "messages" not in body else "chat.completions"
    prompt = estimate_prompt_tokens(body, endpoint)
    completion = sum(
        count_tokens(_choice_text(choice), model) for choice in response.get("choices") or []
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
