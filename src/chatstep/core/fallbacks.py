"""Fallbacks: other models or endpoints a chat step tries when its own stays unavailable.

A step's ``fallbacks`` are partial overrides (model, base_url, api_key, backend...). The step
itself is tried first, with its retries; when it still fails with an error that says "this
endpoint cannot answer now" (:func:`falls_back_on`), the next candidate is tried with its own
retries, and so on. Errors caused by the request itself (other 4xx) are raised at once: another
endpoint would refuse it too. A candidate whose prompt cannot fit its context window is skipped
without sending. Once a streamed answer has reached the caller, nothing falls back (the caller
would see two answers).

Every attempt that reached an endpoint is logged to the history by the runner, with its cost;
the result says which candidate answered (``StepResult.answered_by``) and why the earlier ones
did not (``StepResult.fallback_errors``). When every candidate fails, the last error is raised.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from chatstep.core.result import AnyResult, StepResult
from chatstep.core.streaming import Delta
from chatstep.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    BackendUnavailableError,
    ConfigError,
    InvalidResponseError,
    RateLimitError,
)
from chatstep.steps.definitions import ChatCompletion, Step

if TYPE_CHECKING:
    from chatstep.core.connection import Connection
    from chatstep.core.request import Request
    from chatstep.core.runner import AsyncRunner, DeltaCallback

__all__ = ["falls_back_on", "has_fallbacks", "send_with_fallbacks"]

#: The error code OpenAI sends (with a 400) for a prompt longer than the model's window.
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


def has_fallbacks(step: Step) -> bool:
    """Whether ``step`` is a chat step with fallbacks."""
    return isinstance(step, ChatCompletion) and bool(step.fallbacks)


def falls_back_on(error: BaseException) -> bool:
    """Whether ``error`` (after the candidate's retries) lets the next candidate try.

    Yes: 5xx, connection errors and timeouts, invalid answers, 429 (retries spent or a wait
    beyond the limit), a 400 with code ``context_length_exceeded``, and a backend that cannot be
    used here. No: every other 4xx, and errors that are not the endpoint's (output, config).
    """
    if isinstance(error, APIConnectionError | InvalidResponseError | RateLimitError):
        return True
    if isinstance(error, BackendUnavailableError):
        return True
    if isinstance(error, APIStatusError):
        status = error.status_code or 0
        return status >= 500 or error.code == CONTEXT_LENGTH_EXCEEDED
    return False


def _candidates(step: ChatCompletion) -> Iterator[tuple[str, ChatCompletion]]:
    yield "step", step
    for index, fallback in enumerate(step.fallbacks or []):
        update: dict[str, Any] = {"fallbacks": None, **fallback.overrides()}
        yield f"fallbacks[{index}]", step.model_copy(update=update)


def _where(conn: Connection) -> str | None:
    return conn.base_url or ("local" if conn.backend == "local" else None)


class _Tracked:
    """Passes deltas on and remembers whether any reached the caller."""

    def __init__(self, on_delta: DeltaCallback | None) -> None:
        self.on_delta = on_delta
        self.delivered = False

    async def __call__(self, delta: Delta) -> None:
        if self.on_delta is None:
            return
        self.delivered = True
        outcome = self.on_delta(delta)
        if inspect.isawaitable(outcome):
            await outcome


async def send_with_fallbacks(
    runner: AsyncRunner,
    step: Step,
    request: Request,
    conn: Connection,
    on_delta: DeltaCallback | None,
) -> AnyResult:
    """Run a prepared chat step, then its fallbacks in order while :func:`falls_back_on` says so.

    ``request`` and ``conn`` are the step's own (from ``runner.prepare``); each fallback's are
    built from the rendered step with its overrides. Raises the last candidate's error when none
    answers, and at once on an error that is not a fall-back one.
    """
    assert isinstance(step, ChatCompletion)
    stream = bool(request.body.get("stream"))
    tracked = _Tracked(on_delta)
    failures: list[dict[str, Any]] = []
    last: Exception | None = None
    for label, candidate in _candidates(step):
        if label == "step":
            cand_request, cand_conn = request, conn
        else:
            cand_request, cand_conn = runner.assemble(candidate, stream=stream)
        prefix = "" if label == "step" else label
        failure = {"candidate": label, "model": cand_request.model, "base_url": _where(cand_conn)}
        try:
            runner.check_fits(candidate, cand_request, cand_conn, prefix=prefix)
        except ConfigError as exc:
            failures.append({**failure, "sent": False, "error": f"ConfigError: {exc}"})
            last = exc
            continue
        try:
            result = await runner.execute_once(
                candidate, cand_request, cand_conn, on_delta=tracked if on_delta else None
            )
        except (APIError, BackendUnavailableError) as exc:
            if tracked.delivered or not falls_back_on(exc):
                raise
            failures.append({**failure, "sent": True, "error": f"{type(exc).__name__}: {exc}"})
            last = exc
            continue
        if isinstance(result, StepResult):
            result.answered_by = failure
            result.fallback_errors = failures
        return result
    assert last is not None
    raise last
