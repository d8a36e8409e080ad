"""A request that cannot fit its model's context window fails before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chatstep import ConfigError, map_step, run_flow, run_step, submit_batch
from chatstep.accounting.context import context_window_for
from chatstep.accounting.pricing import PriceTable
from chatstep.core.runner import AsyncRunner
from chatstep.testing import TestServer

# "word " is one o200k token: 9000 of them are far more than gpt-4's 8192-token window.
LONG = "word " * 9000


def _step(**extra: Any) -> dict[str, Any]:
    return {"id": "big", "model": "gpt-4", "prompt": "{{ inputs.text }}", **extra}


def test_table_matches_families_and_snapshots() -> None:
    assert context_window_for("gpt-4o-2024-08-06") == 128_000
    assert context_window_for("gpt-4o-mini") == 128_000
    assert context_window_for("gpt-4-0613") == 8_192
    assert context_window_for("openai/gpt-4.1") == 1_047_576
    assert context_window_for("my-llama") is None
    assert context_window_for("my-llama", {"my-llama": 4096}) == 4096


def test_run_refuses_a_prompt_too_long_and_sends_nothing(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError) as caught:
        run_step(_step(), {"text": LONG})
    message = str(caught.value)
    assert caught.value.field == "messages"
    assert "8192" in message
    assert "'gpt-4'" in message
    assert openai_env.requests == []


def test_max_tokens_counts_and_the_message_names_both_sizes(openai_env: TestServer) -> None:
    step = _step(model="gpt-4o", max_tokens=120_000)
    text = "word " * 9000
    with pytest.raises(ConfigError) as caught:
        run_step(step, {"text": text})
    message = str(caught.value)
    assert "max_tokens is 120000" in message
    assert "128000 tokens" in message
    assert "lower max_tokens to at most" in message
    assert openai_env.requests == []
    # Lowering max_tokens makes it fit: sent once.
    run_step({**step, "max_tokens": 100}, {"text": text})
    assert len(openai_env.requests) == 1


def test_stream_refuses_too(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError):
        run_step(_step(), {"text": LONG}, stream=True)
    assert openai_env.requests == []


def test_step_field_overrides_the_table(openai_env: TestServer) -> None:
    step = _step(model="my-llama", context_window=50, max_completion_tokens=20)
    with pytest.raises(ConfigError) as caught:
        run_step(step, {"text": "word " * 40})
    assert "max_completion_tokens is 20" in str(caught.value)
    assert "50 tokens (the step's context_window)" in str(caught.value)
    # Unknown model, no field: not checked, the server decides.
    run_step(_step(model="my-llama"), {"text": LONG})
    assert len(openai_env.requests) == 1


def test_price_file_sets_a_window(openai_env: TestServer, tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {"my-llama": {"context_window": 100}}}))
    table = PriceTable.load(prices)
    assert table.context_window("my-llama") == 100
    assert table.price("my-llama") is None  # a window alone adds no price

    async def run() -> None:
        async with AsyncRunner(price_table=table, history=False) as runner:
            await runner.run(_step(model="my-llama"), {"text": "word " * 200})

    import asyncio

    with pytest.raises(ConfigError, match="100 tokens"):
        asyncio.run(run())
    assert openai_env.requests == []


def test_price_file_rejects_a_bad_window(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {"gpt-4o": {"context_window": "big"}}}))
    with pytest.raises(ConfigError, match="context_window"):
        PriceTable.load(prices)


def test_map_fails_only_the_row_that_does_not_fit(openai_env: TestServer) -> None:
    rows = [{"text": "short"}, {"text": LONG}, {"text": "also short"}]
    out = map_step(_step(), rows, history=False)
    assert out.stats.failed == 1
    assert "8192" in json.dumps(out[1])
    assert len(openai_env.requests) == 2


def test_flow_task_refuses_before_sending(openai_env: TestServer) -> None:
    flow = {
        "id": "f",
        "inputs": [{"id": "text", "type": "STRING"}],
        "tasks": [{"type": "chatstep.chat", **_step()}],
    }
    with pytest.raises(ConfigError) as caught:
        run_flow(flow, {"text": LONG})
    assert "8192" in str(caught.value)
    assert caught.value.field.startswith("tasks[0]")
    assert openai_env.requests == []


def test_batch_submit_refuses_before_uploading(openai_env: TestServer) -> None:
    rows = [{"text": "short"}, {"text": LONG}]
    with pytest.raises(ConfigError) as caught:
        submit_batch(_step(), rows)
    assert caught.value.field.startswith("rows[1]")
    given = [
        {
            "custom_id": "a",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4", "messages": [{"role": "user", "content": LONG}]},
        }
    ]
    with pytest.raises(ConfigError) as caught:
        submit_batch(None, given)
    assert caught.value.field == "rows[0].body.messages"
    assert openai_env.requests == []
