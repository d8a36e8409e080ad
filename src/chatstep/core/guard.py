"""The moderation guard: a chat step's input is moderated before the call, its answer after.

``guard: {input: true, output: true, model: omni-moderation-latest}`` on a chat step. The input
is the text of the rendered user messages (system and developer messages are the step author's,
not the user's); the output is every choice's text. A flagged text raises
:class:`~chatstep.errors.FlaggedContentError` with the flagged categories and their scores: at
the input stage nothing is sent to the chat model; at the output stage the paid-for result is
on the error. With ``output`` on, a streamed answer's deltas are held until the answer passed,
so a caller never shows flagged text. Each moderation call goes through the same runner (cache,
retries, history) as the step, to the step's endpoint unless the guard names another.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from chatstep.core.result import AnyResult, ModerationResult, StepResult
from chatstep.core.streaming import Delta
from chatstep.errors import FlaggedContentError
from chatstep.steps.definitions import ChatCompletion, Guard, Moderation, Step

if TYPE_CHECKING:
    from chatstep.core.runner import AsyncRunner, DeltaCallback

__all__ = ["has_guard", "send_guarded", "user_texts"]

Send = Callable[["DeltaCallback | None"], Awaitable[AnyResult]]

#: Texts moderated per call at most (OpenAI's moderation endpoint takes a list of inputs).
MAX_TEXTS_PER_CALL = 32


def has_guard(step: Step) -> bool:
    """Whether ``step`` is a chat step with a guard that moderates something."""
    return isinstance(step, ChatCompletion) and step.guard is not None


def _part_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            str(part.get("text") or "")
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text"
        ]
        return "\n".join(t for t in texts if t)
    return ""


def user_texts(body: Mapping[str, Any]) -> list[str]:
    """The non-empty text of every user message of a chat body, in order."""
    out: list[str] = []
    for message in body.get("messages") or []:
        if isinstance(message, Mapping) and message.get("role") == "user":
            text = _part_text(message.get("content"))
            if text.strip():
                out.append(text)
    return out


def _moderation_step(step: ChatCompletion, guard: Guard, texts: list[str]) -> Moderation:
    fields: dict[str, Any] = {
        "id": f"{step.id}.guard" if step.id else "guard",
        "model": guard.model,
        "input": texts,
        "base_url": guard.base_url or step.base_url,
        "api_key": guard.api_key or step.api_key,
        "organization": step.organization,
        "project": step.project,
        "backend": step.backend,
        "extra_headers": step.extra_headers,
        "timeout": step.timeout,
        "max_retries": step.max_retries,
    }
    return Moderation.model_validate({k: v for k, v in fields.items() if v is not None})


def _flags(result: ModerationResult) -> tuple[list[str], dict[str, float]]:
    scores: dict[str, float] = {}
    for item in result.results:
        if not item.get("flagged"):
            continue
        categories = item.get("categories") or {}
        item_scores = item.get("category_scores") or {}
        for name, flagged in categories.items():
            if flagged:
                score = float(item_scores.get(name) or 0.0)
                scores[name] = max(scores.get(name, 0.0), score)
    return sorted(scores, key=lambda name: -scores[name]), scores


async def _moderate(
    runner: AsyncRunner,
    step: ChatCompletion,
    guard: Guard,
    texts: list[str],
    stage: str,
    answer: StepResult | None,
) -> None:
    for start in range(0, len(texts), MAX_TEXTS_PER_CALL):
        chunk = texts[start : start + MAX_TEXTS_PER_CALL]
        mod_step = _moderation_step(step, guard, chunk)
        request, conn = runner.assemble(mod_step, stream=None)
        result = await runner.execute_once(mod_step, request, conn)
        assert isinstance(result, ModerationResult)
        categories, scores = _flags(result)
        if not categories:
            continue
        listed = ", ".join(f"{name} ({scores[name]:.2f})" for name in categories)
        if stage == "input":
            what = f"the step's user input; nothing was sent to {step.model}"
            fix = "change the input, or set guard.input: false to send it anyway"
        else:
            what = f"the answer of {step.model} (it was paid for: see .result)"
            fix = "change the prompt, or set guard.output: false to accept such answers"
        raise FlaggedContentError(
            f"guard.{stage}: the Moderation API ({guard.model}) flagged {what}, for {listed} "
            f"({fix})",
            stage=stage,
            categories=categories,
            scores={name: scores[name] for name in categories},
            model=guard.model,
            result=answer,
        )


async def send_guarded(
    runner: AsyncRunner,
    step: Step,
    body: Mapping[str, Any],
    on_delta: DeltaCallback | None,
    send: Send,
) -> AnyResult:
    """Moderate the input of ``body``, ``send``, then moderate the answer, as the guard says.

    ``send(callback)`` makes the call (with fallbacks if the step has them). Raises
    :class:`FlaggedContentError` when a text is flagged.
    """
    assert isinstance(step, ChatCompletion)
    assert step.guard is not None
    guard = step.guard
    if guard.input:
        texts = user_texts(body)
        if texts:
            await _moderate(runner, step, guard, texts, "input", None)
    held: list[Delta] | None = [] if guard.output and on_delta is not None else None
    result = await send(held.append if held is not None else on_delta)
    if guard.output and isinstance(result, StepResult):
        answers = [text for text in result.contents if text and text.strip()]
        if answers:
            await _moderate(runner, step, guard, answers, "output", result)
    for delta in held or []:
        assert on_delta is not None
        outcome = on_delta(delta)
        if inspect.isawaitable(outcome):
            await outcome
    return result
