"""Retries against real HTTP failures: what is retried, how long it waits, what is not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatstep import (
    APITimeoutError,
    AsyncRunner,
    AuthenticationError,
    InternalServerError,
    RetryPolicy,
    StepResult,
)
from chatstep.testing import Delay, Drop, Fail, Respond, TestServer

STEP = {"model": "gpt-4o-mini", "prompt": "x"}


def _run(step: dict[str, Any], policy: RetryPolicy | None = None) -> tuple[StepResult, list[float]]:
    """Run with a runner that records every backoff it decides on (and still waits it)."""
    waits: list[float] = []

    async def main() -> StepResult:
        async with AsyncRunner(retry=policy) as runner:

            async def sleep(seconds: float) -> None:
                waits.append(seconds)
                await asyncio.sleep(seconds)

            runner.sleep = sleep
            result = await runner.run(step)
            assert isinstance(result, StepResult)
            return result

    return asyncio.run(main()), waits


def test_429_with_retry_after_is_honoured(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(429, retry_after=1), Respond(content="ok"))
    result, waits = _run(STEP)
    assert result.content == "ok"
    assert result.attempts == 2
    assert waits == [1.0]
    assert len(openai_env.requests) == 2


def test_retry_after_ms_wins_over_retry_after(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(429, retry_after=5, retry_after_ms=200), Respond(content="ok"))
    _, waits = _run(STEP)
    assert waits == [0.2]


def test_401_is_not_retried(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(401))
    with pytest.raises(AuthenticationError) as info:
        _run(STEP)
    assert info.value.status_code == 401
    assert len(openai_env.requests) == 1


def test_insufficient_quota_is_not_retried(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(429, code="insufficient_quota", type="insufficient_quota"))
    with pytest.raises(Exception, match="insufficient_quota"):
        _run(STEP)
    assert len(openai_env.requests) == 1


def test_500_three_times_then_success(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(500), Fail(502), Fail(503), Respond(content="finally"))
    fast = RetryPolicy(initial_delay=0.01, max_delay=0.05)
    result, waits = _run(STEP, fast)
    assert result.content == "finally"
    assert result.attempts == 4
    assert len(waits) == 3
    # Exponential: each wait's base doubles (jitter is at most 25%).
    assert waits[0] < waits[2]


def test_gives_up_after_max_retries(openai_env: TestServer) -> None:
    openai_env.enqueue(*[Fail(500) for _ in range(3)])
    fast = RetryPolicy(initial_delay=0.01)
    with pytest.raises(InternalServerError) as info:
        _run({**STEP, "max_retries": 2}, fast)
    assert info.value.status_code == 500
    assert len(openai_env.requests) == 3


def test_408_409_and_dropped_connection_are_retried(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(408), Fail(409), Drop(), Respond(content="ok"))
    result, _ = _run(STEP, RetryPolicy(initial_delay=0.01))
    assert result.content == "ok"
    assert result.attempts == 4


def test_timeout_is_api_timeout_error(openai_env: TestServer) -> None:
    openai_env.enqueue(Delay(3))
    with pytest.raises(APITimeoutError):
        _run({**STEP, "timeout": 0.5, "max_retries": 0})
    assert len(openai_env.requests) == 1


def test_timeout_then_success(openai_env: TestServer) -> None:
    openai_env.enqueue(Delay(2), Respond(content="second try"))
    result, _ = _run({**STEP, "timeout": 0.5}, RetryPolicy(initial_delay=0.01))
    assert result.content == "second try"
    assert result.attempts == 2


def test_policy_decisions_as_data() -> None:
    from chatstep.errors import APIConnectionError, BadRequestError, RateLimitError

    policy = RetryPolicy(max_retries=3, jitter=0)
    assert policy.delay_for(RateLimitError("x", status_code=429, retry_after=2.5), 1) == 2.5
    assert policy.delay_for(RateLimitError("x", status_code=429, retry_after=999), 1) is None
    assert policy.delay_for(BadRequestError("x", status_code=400), 1) is None
    assert policy.delay_for(APIConnectionError("x"), 1) == 0.5
    assert policy.delay_for(APIConnectionError("x"), 3) == 2.0
    assert policy.delay_for(APIConnectionError("x"), 4) is None
