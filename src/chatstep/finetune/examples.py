"""One chat-format training example, checked before anything is uploaded or paid for.

An example is ``{"messages": [...], "tools": [...]?, "parallel_tool_calls": bool?}``, the format
OpenAI's chat fine-tuning reads. The checks are the ones a job fails on, or silently learns
nothing from: known roles in a usable order (system/developer first, a user turn, tool answers
right after the assistant call they answer, an assistant message last), a non-empty assistant
target, and the example's tokens within the model's per-example limit.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatstep.accounting.tokens import estimate_prompt_tokens

__all__ = [
    "EXAMPLE_TOKEN_CAP",
    "MIN_EXAMPLES",
    "Problem",
    "example_problems",
    "example_tokens",
    "max_example_tokens",
]

MIN_EXAMPLES = 10
"""OpenAI refuses a training file with fewer examples."""
EXAMPLE_TOKEN_CAP = 65_536
"""OpenAI's per-example limit for its 128k-context models (gpt-4o, gpt-4o-mini, gpt-4.1):
longer examples are refused; smaller models are limited by their context window."""
_FALLBACK_LIMIT = 16_385
_ROLES = ("system", "developer", "user", "assistant", "tool")
_MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "weight", "refusal"},
    "tool": {"role", "content", "tool_call_id"},
}
_EXAMPLE_KEYS = {"messages", "tools", "parallel_tool_calls"}


@dataclass(frozen=True)
class Problem:
    """What is wrong with one example: where (``messages[2].role``), what, and the fix."""

    where: str
    problem: str
    fix: str

    def describe(self, example: str) -> str:
        """``example`` names the example (``rows[3]``, ``line 4``)."""
        if not self.where:
            where = example
        elif example.startswith("line "):
            where = f"{example}, {self.where}"
        else:
            where = f"{example}.{self.where}"
        return f"{where}: {self.problem} ({self.fix})"


def max_example_tokens(model: str, context_window: int | None) -> int:
    """The per-example token limit of ``model``: its context window, at most 65,536."""
    if context_window is None:
        return _FALLBACK_LIMIT if model.startswith("gpt-3.5") else EXAMPLE_TOKEN_CAP
    return min(context_window, EXAMPLE_TOKEN_CAP)


def example_tokens(example: Mapping[str, Any], model: str) -> int:
    """Tokens of an example as the model reads it (messages, and tool schemas)."""
    body = {"model": model, "messages": example.get("messages") or []}
    if example.get("tools"):
        body["tools"] = example["tools"]
    return estimate_prompt_tokens(body)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "") if isinstance(part, Mapping) else "" for part in content
        )
    return ""


def _message_problems(
    messages: list[Any], index: int, open_calls: set[str]
) -> tuple[list[Problem], set[str]]:
    """Problems of ``messages[index]`` given the tool calls still unanswered before it."""
    message = messages[index]
    where = f"messages[{index}]"
    if not isinstance(message, Mapping):
        return [Problem(where, "is not an object", "give each message a role and content")], set()
    role = message.get("role")
    if role not in _ROLES:
        return [Problem(f"{where}.role", f"is {role!r}", f"use one of: {', '.join(_ROLES)}")], set()
    out: list[Problem] = []
    extra = sorted(set(message) - _MESSAGE_KEYS[str(role)])
    if extra:
        out.append(Problem(where, f"has keys a {role} message cannot have: {extra}", "remove them"))
    content = message.get("content")
    calls = message.get("tool_calls")
    if role in ("system", "developer") and any(
        isinstance(m, Mapping) and m.get("role") not in ("system", "developer")
        for m in messages[:index]
    ):
        out.append(
            Problem(
                f"{where}.role",
                f"is {role} after the conversation started",
                "put system and developer messages first",
            )
        )
    if role == "tool":
        call_id = message.get("tool_call_id")
        if call_id not in open_calls:
            out.append(
                Problem(
                    f"{where}.tool_call_id",
                    f"is {call_id!r}, which answers no tool call of the assistant message "
                    "before it",
                    "put each tool message right after the assistant message that calls it, "
                    "with that call's id",
                )
            )
        return out, open_calls - {call_id}
    if role == "assistant":
        weight = message.get("weight")
        if weight is not None and weight not in (0, 1):
            out.append(Problem(f"{where}.weight", f"is {weight!r}", "use 0 (skip) or 1 (train)"))
        if calls:
            out.extend(_tool_call_problems(f"{where}.tool_calls", calls))
            ids = (
                {str(c.get("id")) for c in calls if isinstance(c, Mapping)}
                if isinstance(calls, list)
                else set()
            )
            return out, ids
        if not _text(content).strip():
            out.append(
                Problem(
                    f"{where}.content",
                    "is empty: an assistant message must say something or call a tool",
                    "give every row a non-empty target",
                )
            )
        return out, set()
    if open_calls:
        out.append(
            Problem(
                where,
                f"comes before the tool calls {sorted(open_calls)} were answered",
                "add a tool message for each call, right after the assistant message",
            )
        )
    if not _text(content).strip():
        out.append(Problem(f"{where}.content", "is empty", f"give the {role} message some text"))
    return out, set()


def _tool_call_problems(where: str, calls: Any) -> list[Problem]:
    """Problems of an assistant message's ``tool_calls``: a list of function calls, each with
    an id, a name and arguments that are a JSON object written as a string."""
    fix = (
        'write {"id": "call_1", "type": "function", '
        '"function": {"name": ..., "arguments": "{...}"}}'
    )
    if not isinstance(calls, list):
        return [Problem(where, f"is a {type(calls).__name__}, not a list", fix)]
    out: list[Problem] = []
    for number, call in enumerate(calls):
        at = f"{where}[{number}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(call, Mapping) or not isinstance(function, Mapping):
            out.append(Problem(at, "is not a function call object", fix))
            continue
        if not isinstance(call.get("id"), str) or not call["id"]:
            out.append(Problem(f"{at}.id", "is missing", "give each call a unique id string"))
        if call.get("type", "function") != "function":
            out.append(Problem(f"{at}.type", f"is {call.get('type')!r}", 'use "function"'))
        if not isinstance(function.get("name"), str) or not function["name"].strip():
            out.append(Problem(f"{at}.function.name", "is missing", "name the function called"))
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else None
        except json.JSONDecodeError as exc:
            out.append(
                Problem(
                    f"{at}.function.arguments",
                    f"is not valid JSON ({exc.msg})",
                    "write the arguments as a JSON object in a string",
                )
            )
            continue
        if not isinstance(parsed, dict):
            out.append(
                Problem(
                    f"{at}.function.arguments",
                    "is JSON but not an object"
                    if parsed is not None
                    else f"is a {type(arguments).__name__}, not a string",
                    'write the arguments as a JSON object in a string: "{\\"city\\": \\"Oslo\\"}"',
                )
            )
    return out


def example_problems(example: Any, model: str, token_limit: int) -> tuple[list[Problem], int]:
    """(problems, tokens) of one example; no problems means OpenAI will train on it."""
    if not isinstance(example, Mapping):
        return [Problem("", "is not a JSON object", 'write {"messages": [...]}')], 0
    extra = sorted(set(example) - _EXAMPLE_KEYS)
    out: list[Problem] = []
    if extra:
        out.append(Problem("", f"has keys chat fine-tuning does not read: {extra}", "remove them"))
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        out.append(Problem("messages", "is missing or empty", "give a list of chat messages"))
        return out, 0
    open_calls: set[str] = set()
    for index in range(len(messages)):
        found, open_calls = _message_problems(messages, index, open_calls)
        out.extend(found)
    roles = [m.get("role") for m in messages if isinstance(m, Mapping)]
    if "user" not in roles:
        out.append(Problem("messages", "has no user message", "render a user turn"))
    if roles and roles[-1] in _ROLES and roles[-1] != "assistant":
        out.append(
            Problem(
                f"messages[{len(messages) - 1}]",
                f"is a {roles[-1]} message, but an example must end with the assistant's answer",
                "end each example with the assistant target",
            )
        )
    tokens = 0
    with contextlib.suppress(TypeError, ValueError):  # odd content shapes count as nothing
        tokens = example_tokens(example, model)
    if tokens > token_limit:
        out.append(
            Problem(
                "",
                f"is {tokens} tokens, over the {token_limit}-token limit of an example for {model}",
                "shorten the row's inputs or its target",
            )
        )
    return out, tokens


def canonical(example: Any) -> str:
    """The example as sorted, compact JSON (duplicates compare equal)."""
    return json.dumps(example, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
