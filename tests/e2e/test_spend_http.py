"""Every answered call is accounted: usage, cost and its breakdown, whatever happens after."""

from __future__ import annotations

from typing import Any

import pytest

from chatstep import AsyncRunner, OutputError, run_step
from chatstep.accounting.pricing import PriceTable
from chatstep.errors import APIConnectionError
from chatstep.mapping.run import map_step
from chatstep.storage.history import History
from chatstep.testing import Respond, TestServer

SCHEMA_STEP: dict[str, Any] = {
    "id": "extract",
    "model": "gpt-4o-mini",
    "prompt": "extract {{ inputs.n }}",
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "t",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "required": ["n"],
                "additionalProperties": False,
            },
        },
    },
}
USAGE = {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200}
FAILING_ANSWERS = [
    pytest.param(Respond(content='{"n": 1', finish_reason="length", usage=USAGE), id="truncated"),
    pytest.param(Respond(content='{"n": "one"}', usage=USAGE), id="schema-mismatch"),
    pytest.param(Respond(refusal="I can't help with that", usage=USAGE), id="refusal"),
    pytest.param(Respond(content="not json", usage=USAGE), id="invalid-json"),
]
EXPECTED = PriceTable().cost("gpt-4o-mini", USAGE).total_usd  # type: ignore[union-attr]


@pytest.mark.parametrize("answer", FAILING_ANSWERS)
def test_a_paid_answer_that_fails_checks_is_accounted(
    openai_env: TestServer, answer: Respond
) -> None:
    openai_env.enqueue(answer)
    with pytest.raises(OutputError) as info:
        run_step(SCHEMA_STEP, {"n": 1})
    result = info.value.result
    assert result is not None
    assert result.usage["total_tokens"] == 1200
    assert result.cost == pytest.approx(EXPECTED)
    assert result.cost_breakdown.total_usd == pytest.approx(EXPECTED)
    (entry,) = History().recent(limit=5)
    assert entry.error is not None
    assert entry.total_tokens == 1200
    assert entry.cost_usd == pytest.approx(EXPECTED)
    assert entry.cost_breakdown is not None
    assert entry.cost_breakdown["output_usd"] > 0


@pytest.mark.parametrize("answer", FAILING_ANSWERS)
def test_map_journal_counts_a_paid_failed_row(openai_env: TestServer, answer: Respond) -> None:
    openai_env.enqueue(answer)
    out = map_step(SCHEMA_STEP, [{"n": 1}], select=["cost", "usage", "error"])
    (row,) = list(out)
    assert row["error"]
    assert row["cost"] == pytest.approx(EXPECTED)
    assert out.stats.cost == pytest.approx(EXPECTED)
    # The history and the map agree on what was spent.
    (entry,) = History().recent(limit=5)
    assert entry.cost_usd == pytest.approx(out.stats.cost)


def test_cached_and_audio_tokens_in_the_breakdown(openai_env: TestServer) -> None:
    usage = {
        "prompt_tokens": 1_000_000,
        "completion_tokens": 1_000_000,
        "total_tokens": 2_000_000,
        "prompt_tokens_details": {"cached_tokens": 200_000, "audio_tokens": 300_000},
        "completion_tokens_details": {"audio_tokens": 400_000},
    }
    openai_env.enqueue(Respond(content="hi", usage=usage))
    result = run_step({"id": "talk", "model": "gpt-audio", "prompt": "hi"})
    price = PriceTable().price("gpt-audio")
    assert price is not None
    assert price.input_audio is not None
    assert price.output_audio is not None
    cost = result.cost_breakdown
    assert cost is not None
    assert cost.input_usd == pytest.approx(0.5 * price.input)
    assert cost.cached_input_usd == pytest.approx(0.2 * price.cached_rate)
    assert cost.input_audio_usd == pytest.approx(0.3 * price.input_audio)
    assert cost.output_usd == pytest.approx(0.6 * price.output)
    assert cost.output_audio_usd == pytest.approx(0.4 * price.output_audio)
    assert result.to_dict()["cost_breakdown"]["input_audio_usd"] == cost.input_audio_usd
    (entry,) = History().recent(limit=1)
    assert entry.cost_breakdown == cost.to_dict()


def _chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"content": content} if content is not None else {}
    return {
        "id": "chatcmpl-cut",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def test_a_stream_cut_midway_records_what_it_saw(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    cut = [_chunk("Hello there, "), _chunk("this answer never")]
    openai_env.enqueue(Respond(body=cut, validate=False))

    async def go() -> None:
        seen: list[Any] = []
        async with AsyncRunner(retry=None) as runner:
            with pytest.raises(APIConnectionError) as info:
                await runner.run(
                    {"id": "s", "model": "gpt-4o-mini", "prompt": "hi", "max_retries": 0},
                    on_delta=seen.append,
                )
        result = info.value.result
        assert result is not None
        assert result.usage_estimated
        assert result.usage["completion_tokens"] > 0
        assert result.cost > 0
        assert result.cost_breakdown.estimated

    import asyncio

    asyncio.run(go())
    (entry,) = History().recent(limit=1)
    assert entry.error is not None
    assert entry.usage_estimated
    assert entry.completion_tokens
    assert entry.cost_usd is not None
    assert entry.cost_usd > 0


def test_a_stream_without_usage_is_counted_locally(openai_env: TestServer) -> None:
    whole = [_chunk("Hello there."), _chunk(None, "stop")]
    openai_env.enqueue(Respond(body=whole))
    result = run_step({"id": "s", "model": "gpt-4o-mini", "prompt": "hi"}, stream=True)
    assert result.usage_estimated
    assert result.usage["completion_tokens"] == 3
    assert result.cost is not None
    (entry,) = History().recent(limit=1)
    assert entry.usage_estimated
