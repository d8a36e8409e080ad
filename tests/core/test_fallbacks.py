"""Fallbacks over two real test servers: one failing, one healthy."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from chatstep import (
    AsyncRunner,
    BadRequestError,
    ConfigError,
    InternalServerError,
    RetryPolicy,
    StepResult,
    map_step,
)
from chatstep.core.fallbacks import falls_back_on
from chatstep.errors import APITimeoutError, AuthenticationError, RateLimitError
from chatstep.storage.history import History
from chatstep.testing import Fail, TestServer

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.001)


@pytest.fixture
def down() -> Iterator[TestServer]:
    """A second server that answers every request with a 500."""
    with TestServer(fault_rate=1.0, faults=("500",)) as server:
        yield server


def _chats(server: TestServer) -> list[Any]:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def _step(primary: TestServer, healthy: TestServer, **extra: Any) -> dict[str, Any]:
    return {
        "id": "ask",
        "model": "gpt-4o-mini",
        "prompt": "hello",
        "base_url": primary.base_url,
        "api_key": "sk-test-primary-0000",
        "max_retries": 1,
        "fallbacks": [{"base_url": healthy.base_url, "model": "gpt-4.1-mini"}],
        **extra,
    }


def _run(step: dict[str, Any], **kwargs: Any) -> Any:
    async def main() -> Any:
        async with AsyncRunner(retry=FAST, **kwargs) as runner:
            return await runner.run(step)

    return asyncio.run(main())


def test_primary_down_after_its_retries_the_fallback_answers(
    down: TestServer, openai_server: TestServer
) -> None:
    result = _run(_step(down, openai_server))
    assert isinstance(result, StepResult)
    assert result.content
    assert len(_chats(down)) == 2  # the first try and its one retry
    assert len(_chats(openai_server)) == 1
    assert _chats(openai_server)[0].body["model"] == "gpt-4.1-mini"
    assert result.answered_by == {
        "candidate": "fallbacks[0]",
        "model": "gpt-4.1-mini",
        "base_url": openai_server.base_url,
    }
    [failed] = result.fallback_errors
    assert failed["candidate"] == "step"
    assert failed["sent"] is True
    assert failed["error"].startswith("InternalServerError")
    summary = result.to_dict()
    assert summary["answered_by"]["candidate"] == "fallbacks[0]"
    assert summary["fallback_errors"][0]["base_url"] == down.base_url


def test_history_records_every_attempt_with_its_cost(
    down: TestServer, openai_server: TestServer
) -> None:
    _run(_step(down, openai_server), history=True)
    with History() as history:
        entries = history.recent(step="ask")
    by_url = {e.base_url: e for e in entries}
    assert len(entries) == 2
    assert by_url[down.base_url].error is not None
    assert by_url[down.base_url].error.startswith("InternalServerError")  # type: ignore[union-attr]
    assert by_url[down.base_url].cost_usd is None  # a failed call is not billed
    answered = by_url[openai_server.base_url]
    assert answered.error is None
    assert answered.model == "gpt-4.1-mini"
    assert answered.cost_usd is not None
    assert answered.cost_usd > 0


def test_a_request_error_never_falls_back(openai_server: TestServer) -> None:
    with TestServer() as primary:
        primary.enqueue(Fail(400, "bad temperature", code="invalid_value"))
        with pytest.raises(BadRequestError):
            _run(_step(primary, openai_server))
        assert len(_chats(primary)) == 1
    assert _chats(openai_server) == []


def test_context_length_refusal_falls_back(openai_server: TestServer) -> None:
    with TestServer() as primary:
        primary.enqueue(Fail(400, "too long", code="context_length_exceeded"))
        result = _run(_step(primary, openai_server))
    assert result.answered_by["candidate"] == "fallbacks[0]"
    assert len(_chats(openai_server)) == 1


def test_every_candidate_down_raises_the_last_error(down: TestServer) -> None:
    with TestServer(fault_rate=1.0, faults=("503",)) as also_down:
        with pytest.raises(InternalServerError) as caught:
            _run(_step(down, also_down))
        assert caught.value.status_code == 503
        assert len(_chats(also_down)) == 2
    assert len(_chats(down)) == 2


def test_a_prompt_that_cannot_fit_skips_the_primary_unsent(
    down: TestServer, openai_server: TestServer
) -> None:
    step = _step(down, openai_server, model="gpt-4", prompt="word " * 9000)
    result = _run(step)
    assert _chats(down) == []
    assert result.answered_by["candidate"] == "fallbacks[0]"
    assert result.fallback_errors[0]["sent"] is False
    assert "8192" in result.fallback_errors[0]["error"]
    # No candidate fits: the ConfigError is raised and nothing is sent.
    small = {**step, "fallbacks": [{"base_url": openai_server.base_url, "model": "gpt-4-0613"}]}
    with pytest.raises(ConfigError, match=r"fallbacks\[0\]\.messages"):
        _run(small)
    assert len(_chats(openai_server)) == 1


def test_streamed_fallback_reaches_the_caller(down: TestServer, openai_server: TestServer) -> None:
    seen: list[str] = []

    async def main() -> Any:
        async with AsyncRunner(retry=FAST) as runner:
            return await runner.run(
                _step(down, openai_server), on_delta=lambda d: seen.append(d.content or "")
            )

    result = asyncio.run(main())
    assert result.answered_by["candidate"] == "fallbacks[0]"
    assert "".join(seen) == result.content
    assert _chats(openai_server)[0].body["stream"] is True


def test_map_rows_fall_back_too(down: TestServer, openai_server: TestServer) -> None:
    step = {**_step(down, openai_server), "prompt": "row {{ inputs.n }}", "max_retries": 0}
    out = map_step(step, [{"n": n} for n in range(4)], history=False)
    assert out.stats.failed == 0
    assert len(_chats(down)) == 4
    assert len(_chats(openai_server)) == 4


def test_which_errors_fall_back() -> None:
    assert falls_back_on(InternalServerError("x", status_code=500))
    assert falls_back_on(RateLimitError("x", status_code=429))
    assert falls_back_on(APITimeoutError("x"))
    assert falls_back_on(BadRequestError("x", status_code=400, code="context_length_exceeded"))
    assert not falls_back_on(BadRequestError("x", status_code=400, code="invalid_value"))
    assert not falls_back_on(AuthenticationError("x", status_code=401))


def test_fallback_keys_are_never_shown() -> None:
    from chatstep.steps.loading import load_step

    step = load_step(
        {"model": "m", "prompt": "p", "fallbacks": [{"api_key": "sk-secret-fallback-123456"}]}
    )
    assert "sk-secret-fallback-123456" not in repr(step)


def test_batch_refuses_a_step_with_fallbacks(openai_env: TestServer) -> None:
    from chatstep import submit_batch

    step = _step(openai_env, openai_env)
    with pytest.raises(ConfigError, match="fallbacks"):
        submit_batch(step, [{"n": 1}])
    assert openai_env.requests == []
