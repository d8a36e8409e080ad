"""How a long conversation stays inside its model's context window: declared, never silent.

A conversation's messages are a *head* (the step's system messages and examples, and any summary
of earlier turns) followed by *turns*: a turn starts at a user message and holds everything up to
the next one (the answer, tool calls and their results), so a tool call is never separated from
its result. Before each request the whole conversation is counted
(:func:`chatstep.accounting.context.check_context_window`); when it cannot fit:

- no strategy: a :class:`~chatstep.errors.ConfigError` naming both sizes;
- :class:`SlidingWindow`: the oldest whole turns are left out of the request until it fits (the
  stored transcript keeps them);
- :class:`Summarize`: the older turns are summarized through a step (by default a built-in
  summarize prompt on the conversation's own model and endpoint); the summary replaces them, in
  the request and in the stored conversation.

If even the newest turn alone cannot fit, the strategy gives up with a ``ConfigError`` naming the
counted prompt and the window: nothing is ever truncated. A model whose window is unknown (not in
chatstep's table, the price file, or the step's ``context_window``) is not checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from chatstep.accounting.context import check_context_window
from chatstep.errors import ConfigError

__all__ = [
    "SUMMARIZE_SYSTEM_PROMPT",
    "ContextStrategy",
    "SlidingWindow",
    "Summarize",
    "fit_problem",
    "parse_strategy",
    "split_turns",
    "strategy_settings",
    "transcript_text",
]

#: The built-in instruction of the default summarize step.
SUMMARIZE_SYSTEM_PROMPT = (
    "You summarize conversations. Write a concise summary of the conversation below that keeps "
    "every fact, name, number, decision and open question a continuation would need. Write only "
    "the summary."
)

#: The prefix of a summary message that replaces older turns.
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"

_HEAD_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True)
class SlidingWindow:
    """Leave the oldest whole turns out of the request until it fits; keep the system messages."""

    name: Literal["sliding_window"] = "sliding_window"


@dataclass(frozen=True)
class Summarize:
    """Replace the older turns with a summary made by a step, persisted in the conversation.

    ``step``: a chat step (object, path or mapping) that reads the transcript as
    ``{{ inputs.transcript }}``; None: the built-in prompt (:data:`SUMMARIZE_SYSTEM_PROMPT`) on the
    conversation's model and endpoint. ``keep_turns``: the newest turns kept word for word when
    they fit (fewer are kept when they do not). ``max_tokens``: the built-in summary's length
    limit (at most a quarter of the context window).
    """

    step: Any = None
    keep_turns: int = 2
    max_tokens: int = 512
    name: Literal["summarize"] = "summarize"

    def __post_init__(self) -> None:
        if self.keep_turns < 0:
            raise ConfigError("strategy.keep_turns", f"is {self.keep_turns}", "use 0 or more")
        if self.max_tokens < 1:
            raise ConfigError("strategy.max_tokens", f"is {self.max_tokens}", "use 1 or more")


ContextStrategy = SlidingWindow | Summarize
"""A declared way to keep a conversation inside the context window."""

STRATEGY_NAMES = ("sliding_window", "summarize")


def parse_strategy(
    value: ContextStrategy | str | Mapping[str, Any] | None,
) -> ContextStrategy | None:
    """A strategy from its object, its name (``sliding_window``, ``summarize``) or settings."""
    if value is None or isinstance(value, SlidingWindow | Summarize):
        return value
    if isinstance(value, str):
        value = {"name": value}
    options = dict(value)
    name = str(options.pop("name", "")).replace("-", "_")
    if name == "sliding_window" and not options:
        return SlidingWindow()
    if name == "summarize":
        unknown = set(options) - {"step", "keep_turns", "max_tokens"}
        if not unknown:
            return Summarize(**options)
        name = f"summarize with {', '.join(sorted(unknown))}"
    raise ConfigError(
        "strategy",
        f"{name!r} is not a context strategy",
        f"use one of {', '.join(STRATEGY_NAMES)}",
    )


def strategy_settings(strategy: ContextStrategy | None) -> dict[str, Any] | None:
    """The JSON-able settings a strategy is stored as (a summarize step given as a path or a
    mapping is kept; a step object is stored as its fields)."""
    if strategy is None:
        return None
    if isinstance(strategy, SlidingWindow):
        return {"name": strategy.name}
    step = strategy.step
    if step is not None and not isinstance(step, str | Mapping):
        step = step.model_dump(mode="json", exclude_none=True)
    elif step is not None and not isinstance(step, Mapping):
        step = str(step)
    return {
        "name": strategy.name,
        "step": step,
        "keep_turns": strategy.keep_turns,
        "max_tokens": strategy.max_tokens,
    }


def split_turns(
    messages: Sequence[tuple[Mapping[str, Any], bool]],
) -> tuple[list[int], list[list[int]]]:
    """Indexes of the head and of each turn of ``messages`` (``(message, pinned)`` pairs).

    The head is every pinned message (the step's own messages, summaries) and the system
    messages before the first turn; a turn starts at each user message.
    """
    head: list[int] = []
    turns: list[list[int]] = []
    for index, (message, pinned) in enumerate(messages):
        role = message.get("role")
        if pinned or (not turns and role in _HEAD_ROLES):
            head.append(index)
        elif role == "user" or not turns:
            turns.append([index])
        else:
            turns[-1].append(index)
    return head, turns


def fit_problem(body: Mapping[str, Any], window: int | None) -> ConfigError | None:
    """The ConfigError the context check raises for ``body``, or None when it fits."""
    try:
        check_context_window(body, window)
    except ConfigError as error:
        return error
    return None


def transcript_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The messages as ``role: text`` paragraphs, for a summarize step to read."""
    lines: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        text = str(content or "")
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            text += f"\n[calls {function.get('name')}({function.get('arguments')})]"
        if message.get("role") == "system" and text.startswith(SUMMARY_PREFIX):
            lines.append(f"earlier summary: {text[len(SUMMARY_PREFIX) :]}")
        else:
            lines.append(f"{message.get('role')}: {text}")
    return "\n\n".join(lines)
