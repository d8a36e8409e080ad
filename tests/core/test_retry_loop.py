"""The one retry loop: the policy decides, the hooks veto or finish early."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from chatstep.core.retry import RetryLoop, RetryPolicy
from chatstep.errors import APIError, BadRequestError, InternalServerError

POLICY = RetryPolicy(max_retries=3, initial_delay=1.0, jitter=0.0)


def _failing(times: int, error: Callable[[], APIError]) -> Callable[[], object]:
    calls = {"n": 0}

    async def send() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error()
        return f"ok after {calls['n']}"

    return send


def _run(loop: RetryLoop[str], send: Callable[[], object]) -> str:
    return asyncio.run(loop.run(send))  # type: ignore[arg-type]


def _server_error() -> APIError:
    return InternalServerError("down", status_code=503)


def test_retries_until_success_and_counts_attempts() -> None:
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    loop: RetryLoop[str] = RetryLoop(POLICY, sleep=sleep)
    assert _run(loop, _failing(2, _server_error)) == "ok after 3"
    assert loop.attempts == 3
    assert waits == [1.0, 2.0]


def test_gives_up_after_max_retries_and_on_a_refusal() -> None:
    async def sleep(delay: float) -> None:
        return None

    loop: RetryLoop[str] = RetryLoop(POLICY, sleep=sleep)
    with pytest.raises(InternalServerError):
        _run(loop, _failing(10, _server_error))
    assert loop.attempts == 4
    refused: RetryLoop[str] = RetryLoop(POLICY, sleep=sleep)
    with pytest.raises(BadRequestError):
        _run(refused, _failing(1, lambda: BadRequestError("bad", status_code=400)))
    assert refused.attempts == 1


def test_vetoes_deadline_and_may_retry() -> None:
    async def sleep(delay: float) -> None:
        return None

    past = RetryLoop[str](POLICY, sleep=sleep, deadline=time.monotonic() + 0.5)
    with pytest.raises(InternalServerError):
        _run(past, _failing(1, _server_error))  # a 1 s wait would end past the deadline
    assert past.attempts == 1
    vetoed = RetryLoop[str](POLICY, sleep=sleep, may_retry=lambda: False)
    with pytest.raises(InternalServerError):
        _run(vetoed, _failing(1, _server_error))
    assert vetoed.attempts == 1


def test_after_wait_can_end_the_loop_and_on_retry_is_told() -> None:
    told: list[tuple[int, float]] = []

    async def sleep(delay: float) -> None:
        return None

    async def found() -> str | None:
        return "made anyway"

    loop = RetryLoop[str](
        POLICY, sleep=sleep, after_wait=found, on_retry=lambda e, n, d: told.append((n, d))
    )
    assert _run(loop, _failing(5, _server_error)) == "made anyway"
    assert loop.attempts == 1
    assert told == [(1, 1.0)]
