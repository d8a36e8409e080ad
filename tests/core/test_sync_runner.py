"""The synchronous Runner: one connection pool for many calls, from any thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from chatstep import AsyncRunner, PermissionDeniedError, Runner, StepResult, run_step
from chatstep.core.connection import resolve_connection
from chatstep.steps.loading import load_step
from chatstep.testing import Fail, TestServer

STEP: dict[str, Any] = {"id": "greet", "model": "gpt-4o-mini", "prompt": "hi {{ inputs.n }}"}


def _peers(server: TestServer) -> set[tuple[str, int] | None]:
    return {r.peer for r in server.requests if r.path.endswith("/chat/completions")}


def test_calls_through_one_runner_share_one_connection(openai_env: TestServer) -> None:
    with Runner(history=False) as runner:
        backend = runner.async_runner.backend_for(
            resolve_connection(load_step(STEP), runner.async_runner.secrets)
        )
        results = [run_step(STEP, {"n": n}, runner=runner) for n in range(5)]
        results += [runner.run(STEP, {"n": n}) for n in range(5)]
        same = runner.async_runner.backend_for(
            resolve_connection(load_step(STEP), runner.async_runner.secrets)
        )
    assert all(isinstance(r, StepResult) and r.content for r in results)
    assert len(openai_env.requests) == 10
    peers = _peers(openai_env)
    assert None not in peers
    assert len(peers) == 1  # ten calls, one kept-alive connection
    assert same is backend
    assert runner.closed


def test_calls_without_a_runner_open_a_connection_each(openai_env: TestServer) -> None:
    # What the Runner saves: the one-call form builds (and closes) a pool per call.
    for n in range(3):
        run_step(STEP, {"n": n})
    assert len(_peers(openai_env)) == 3


def test_close_stops_the_loop_thread_and_is_idempotent(openai_env: TestServer) -> None:
    before = {t.ident for t in threading.enumerate() if t.name == "chatstep-runner"}
    runner = Runner(history=False)
    runner.run(STEP, {"n": 1})
    thread = runner._thread
    assert thread.is_alive()
    runner.close()
    runner.close()
    assert not thread.is_alive()
    assert runner._loop.is_closed()
    after = {t.ident for t in threading.enumerate() if t.name == "chatstep-runner"}
    assert after == before
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(STEP, {"n": 2})


def test_works_from_threads_while_another_loop_runs(openai_env: TestServer) -> None:
    errors: list[BaseException] = []
    contents: list[str] = []

    async def busy_loop(runner: Runner) -> None:
        # A sync call from inside a running loop (a notebook, an async orchestrator) does not
        # touch that loop: the call runs on the runner's own loop thread.
        result = runner.run(STEP, {"n": "in-loop"})
        assert isinstance(result, StepResult)
        contents.append(str(result.content))
        await asyncio.sleep(0)

    def worker(runner: Runner, n: int) -> None:
        try:
            result = runner.run(STEP, {"n": n})
            assert isinstance(result, StepResult)
            contents.append(str(result.content))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with Runner(history=False) as runner:
        threads = [threading.Thread(target=worker, args=(runner, n)) for n in range(4)]
        for thread in threads:
            thread.start()
        asyncio.run(busy_loop(runner))
        for thread in threads:
            thread.join()
    assert not errors
    assert len(contents) == 5
    assert len(openai_env.requests) == 5


def test_errors_arrive_in_the_calling_thread(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(403))
    with Runner(history=False) as runner:
        with pytest.raises(PermissionDeniedError) as caught:
            runner.run(STEP, {"n": 1})
        assert caught.value.status_code == 403
        assert isinstance(runner.run(STEP, {"n": 2}), StepResult)  # the runner still works


def test_async_with_on_the_sync_runner_points_at_async_runner() -> None:
    async def use() -> None:
        with Runner(history=False) as runner:
            async with runner:
                pass

    with pytest.raises(TypeError, match="AsyncRunner"):
        asyncio.run(use())
    assert AsyncRunner is not Runner
