"""Context windows: how many tokens a model takes per request, prompt and answer together.

The built-in table (:data:`BUILTIN_CONTEXT_WINDOWS`) holds OpenAI's published context windows by
model family, checked on :data:`CONTEXT_WINDOWS_CHECKED`. A model id matches its own entry or the
longest entry it extends with a snapshot date (``gpt-4o-2024-08-06`` is ``gpt-4o``), as prices do.
Two overrides, strongest first: a step's ``context_window`` field, then ``context_window`` in the
user's price file (``[models."my-model"] context_window = 32768``). A model in none of them is
not checked: a window is never guessed.

:func:`check_context_window` refuses a chat request whose counted prompt plus its completion
limit (``max_completion_tokens`` or ``max_tokens``) cannot fit, before anything is sent or paid.
The prompt is counted with :func:`chatstep.accounting.tokens.estimate_prompt_tokens` (exact for
plain-text messages on OpenAI models; tool and response schemas over-count by 10-40%).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from chatstep.accounting.tokens import chat_prompt_token_bound, estimate_prompt_tokens
from chatstep.errors import ConfigError

__all__ = [
    "BUILTIN_CONTEXT_WINDOWS",
    "CONTEXT_WINDOWS_CHECKED",
    "check_context_window",
    "context_window_for",
]

#: The day the built-in windows were checked against OpenAI's model pages.
CONTEXT_WINDOWS_CHECKED = "2026-12-01"

#: Tokens per request (prompt + completion) by model family, from OpenAI's model pages.
BUILTIN_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-5": 400_000,
    "gpt-5-mini": 400_000,
    "gpt-5-nano": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "chatgpt-4o-latest": 128_000,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o4-mini": 200_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-4-32k": 32_768,
    "gpt-3.5-turbo": 16_385,
}

_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4}|preview)")


def _lookup(table: Mapping[str, int], model: str) -> int | None:
    exact = table.get(model)
    if exact is not None:
        return exact
    for key in sorted(table, key=len, reverse=True):
        if model.startswith(key) and _SNAPSHOT_SUFFIX.fullmatch(model[len(key) :]):
            return table[key]
    return None


def context_window_for(model: str, overrides: Mapping[str, int] | None = None) -> int | None:
    """The context window of ``model`` in tokens, or None when it is not known.

    ``overrides`` (model id -> tokens, e.g. from the price file) win over the built-in table.
    """
    name = model.strip()
    if name.lower().startswith("openai/"):
        name = name[len("openai/") :]
    if overrides:
        found = _lookup(overrides, name)
        if found is not None:
            return found
    return _lookup(BUILTIN_CONTEXT_WINDOWS, name)


def check_context_window(
    body: Mapping[str, object], window: int | None, *, prefix: str = "", source: str = ""
) -> int:
    """Raise :class:`ConfigError` when a chat body cannot fit in ``window`` tokens.

    Returns the counted prompt tokens (0 when nothing was counted: ``window`` is None, or the
    prompt's byte count, a bound of its tokens, fits already). The
    completion part is ``max_completion_tokens`` or ``max_tokens`` when set (each of ``n``
    choices gets its own window), else nothing: the prompt alone must leave room for one token.
    ``source`` says where the window came from, for the message.
    """
    if window is None:
        return 0
    limit = body.get("max_completion_tokens")
    limit_name = "max_completion_tokens"
    if limit is None:
        limit, limit_name = body.get("max_tokens"), "max_tokens"
    completion = int(limit) if isinstance(limit, int) and not isinstance(limit, bool) else 0
    # Most prompts fit by their byte count already: no vocabulary to load for them.
    if chat_prompt_token_bound(body) + max(completion, 1) <= window:
        return 0
    prompt = estimate_prompt_tokens(body)
    if prompt + max(completion, 1) <= window:
        return prompt
    model = body.get("model")
    where = f" ({source})" if source else ""
    if completion:
        problem = (
            f"the prompt counts {prompt} tokens and {limit_name} is {completion}: "
            f"{prompt + completion} tokens do not fit the context window of {model!r}, "
            f"{window} tokens{where}"
        )
        fix = f"shorten the prompt or lower {limit_name} to at most {max(window - prompt, 0)}"
    else:
        problem = (
            f"the prompt counts {prompt} tokens, more than the context window of {model!r}, "
            f"{window} tokens{where}"
        )
        fix = "shorten the prompt or use a model with a larger context window"
    fix += ", or set the step's context_window if the window is wrong"
    raise ConfigError(f"{prefix}.messages" if prefix else "messages", problem, fix)
