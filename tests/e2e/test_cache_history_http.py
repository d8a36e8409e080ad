"""Cache and history around real calls."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from chatstep import AsyncRunner, StepResult, run_step
from chatstep.storage.history import History
from chatstep.testing import Fail, TestServer

STEP: dict[str, Any] = {
    "id": "greet",
    "model": "gpt-4o-mini",
    "prompt": "hi {{ inputs.n }}",
    "cache": True,
}


def test_cache_hit_makes_no_request(openai_env: TestServer) -> None:
    first = run_step(STEP, {"n": 1})
    second = run_step(STEP, {"n": 1})
    assert len(openai_env.requests) == 1
    assert isinstance(second, StepResult)
    assert second.cached
    assert not first.cached
    assert second.content == first.content
    assert second.cost == 0.0
    assert first.cost is not None
    assert first.cost > 0  # gpt-4o-mini is in the price table


def test_changed_parameter_misses(openai_env: TestServer) -> None:
    run_step(STEP, {"n": 1})
    run_step({**STEP, "temperature": 0.5}, {"n": 1})
    run_step(STEP, {"n": 2})
    assert len(openai_env.requests) == 3


def test_stream_flag_does_not_change_the_key_and_hits_replay(openai_env: TestServer) -> None:
    run_step(STEP, {"n": 1})
    seen: list[str] = []
    hit = run_step(STEP, {"n": 1}, on_delta=lambda d: seen.append(d.content or ""))
    assert hit.cached
    assert "".join(seen) == hit.content  # type: ignore[union-attr]
    assert len(openai_env.requests) == 1


def test_cache_off_unless_asked(openai_env: TestServer) -> None:
    plain = {k: v for k, v in STEP.items() if k != "cache"}
    run_step(plain, {"n": 1})
    run_step(plain, {"n": 1})
    assert len(openai_env.requests) == 2


def test_run_level_cache_and_step_opt_out(openai_env: TestServer, tmp_path: Path) -> None:
    plain = {k: v for k, v in STEP.items() if k != "cache"}

    async def main() -> None:
        async with AsyncRunner(cache=str(tmp_path / "c.sqlite3")) as runner:
            await runner.run(plain, {"n": 1})
            await runner.run(plain, {"n": 1})
            await runner.run({**plain, "cache": False}, {"n": 1})

    asyncio.run(main())
    assert len(openai_env.requests) == 2


def test_failed_answers_are_not_cached(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(400))
    with contextlib.suppress(Exception):
        run_step(STEP, {"n": 1})
    run_step(STEP, {"n": 1})
    assert len(openai_env.requests) == 2


def test_history_records_calls_and_errors(openai_env: TestServer) -> None:
    run_step(STEP, {"n": "alpha"})
    openai_env.enqueue(Fail(403))
    with contextlib.suppress(Exception):
        run_step({**STEP, "cache": False}, {"n": "beta"})
    history = History()
    entries = history.recent(limit=10)
    assert len(entries) == 2
    failed, ok = entries
    assert failed.error is not None
    assert "PermissionDeniedError" in failed.error
    assert ok.step == "greet"
    assert ok.model == "gpt-4o-mini"
    assert ok.total_tokens
    assert ok.cost_usd is not None
    assert history.search("alpha")[0].id == ok.id


def test_history_can_be_switched_off(openai_env: TestServer, monkeypatch: Any) -> None:
    monkeypatch.setenv("CHATSTEP_HISTORY", "off")
    run_step(STEP, {"n": 1})
    assert History().count() == 0
