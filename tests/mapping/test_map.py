"""Mapping a step over rows through the test server: order, outputs, faults, budgets, journal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from chatstep.accounting.pricing import PriceTable
from chatstep.errors import AuthenticationError, ConfigError
from chatstep.mapping.files import default_journal_path, map_file
from chatstep.mapping.journal import JournalMismatchError
from chatstep.mapping.run import amap_step, map_step
from chatstep.steps.definitions import ChatCompletion
from chatstep.testing import Fail, TestServer
from chatstep.testing.conditions import FAULT_KINDS

from .conftest import FAST_RETRY, ServerFactory, chat_bodies, prompt_of


def echo_step(**fields: Any) -> ChatCompletion:
    return ChatCompletion(
        model="gpt-4o-mini", prompt="row {{ inputs.id }}: {{ inputs.text }}", **fields
    )


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "text": f"text number {i}"} for i in range(n)]


def test_rows_come_back_in_input_order_with_their_outputs(serve: ServerFactory) -> None:
    # Jittered latency makes rows finish out of order.
    server = serve(latency=(0.03, 0.03), seed=3)
    out = map_step(echo_step(), rows(60), concurrency=12, history=False)
    assert [r["id"] for r in out] == list(range(60))
    for row in out:
        assert row["content"] == f"echo: row {row['id']}: text number {row['id']}"
        assert row["error"] is None
        assert row["cost"] > 0
        assert list(row)[:2] == ["id", "text"]  # input columns first, unchanged
    assert out.stats.done == 60
    assert out.stats.failed == 0
    assert out.stats.requests == 60
    assert len(chat_bodies(server)) == 60


def check_every_row_answered_once(server: TestServer, out: list[dict[str, Any]], n: int) -> None:
    assert len(out) == n
    assert [r["id"] for r in out] == list(range(n))  # input order, none lost or repeated
    bad = [r for r in out if r["content"] != f"echo: row {r['id']}: text number {r['id']}"]
    assert bad == []
    assert all(r["error"] is None for r in out)
    # Each row's prompt reached the server (faulted attempts included) and was answered.
    assert {prompt_of(b) for b in chat_bodies(server)} == {
        f"row {i}: text number {i}" for i in range(n)
    }


def test_1000_rows_through_every_kind_of_fault(serve: ServerFactory) -> None:
    """20% of requests meet a fault: 429, 500, 503, connection reset, timeout, malformed JSON,
    truncated stream (the step streams, so every kind can happen)."""
    server = serve(
        fault_rate=0.2,
        faults=FAULT_KINDS,
        fault_timeout=30.0,
        fault_retry_after=0.05,
        seed=7,
        validate=False,
    )
    # A 6 s timeout meets the 30 s "timeout" fault and nothing else, even on a loaded machine (a
    # 1 s one also timed out healthy requests there, and the request counts no longer matched);
    # 12 retries make a lost row (0.2^13) unheard of.
    step = echo_step(stream=True, timeout=6.0, max_retries=12)
    out = map_step(step, rows(1000), concurrency=24, retry=FAST_RETRY, history=False)
    check_every_row_answered_once(server, out, 1000)
    faults = server.stats.faults
    assert set(faults) == set(FAULT_KINDS), faults  # every kind really happened
    assert sum(faults.values()) >= 150
    assert out.stats.requests == len(chat_bodies(server)) == 1000 + sum(faults.values())
    assert out.stats.rate_limited == faults["429"]


def test_whole_answers_through_every_kind_of_fault(serve: ServerFactory) -> None:
    """The same without streaming: every fault kind that a whole answer can meet."""
    kinds = tuple(k for k in FAULT_KINDS if k not in ("truncated_stream", "stream_error"))
    server = serve(
        fault_rate=0.2,
        faults=kinds,
        fault_timeout=30.0,
        fault_retry_after=0.05,
        seed=11,
        validate=False,
    )
    step = echo_step(timeout=6.0, max_retries=12)
    out = map_step(step, rows(300), concurrency=24, retry=FAST_RETRY, history=False)
    check_every_row_answered_once(server, out, 300)
    assert set(server.stats.faults) == set(kinds), server.stats.faults


def test_json_output_flattened_or_nested(serve: ServerFactory) -> None:
    serve()
    schema = {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": ["good", "bad"]},
            "score": {"type": "number"},
        },
        "required": ["label", "score"],
        "additionalProperties": False,
    }
    step = ChatCompletion(
        model="gpt-4o-mini",
        prompt="Rate {{ inputs.text }}",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "rating", "schema": schema},
        },
    )
    nested = map_step(step, rows(3), history=False)
    assert set(nested[0]["parsed"]) == {"label", "score"}
    assert "content" not in nested[0]
    flat = map_step(step, rows(3), flatten=True, select=["parsed", "usage", "cost"], history=False)
    assert flat[0]["parsed.label"] in ("good", "bad")
    assert isinstance(flat[0]["parsed.score"], int | float)
    assert flat[0]["usage.total_tokens"] > 0
    assert "parsed" not in flat[0]
    picked = map_step(
        step, rows(2), select=["parsed.label", "response.choices[0].finish_reason"], history=False
    )
    assert set(picked[0]) == {
        "id",
        "text",
        "parsed.label",
        "response.choices[0].finish_reason",
        "error",
    }
    assert picked[0]["response.choices[0].finish_reason"] == "stop"


def test_a_bad_select_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--select"):
        map_step(echo_step(), rows(1), select=["parsed..x"])


def test_output_columns_never_overwrite_input_columns(serve: ServerFactory) -> None:
    serve()
    with pytest.raises(ConfigError, match="--prefix"):
        map_step(echo_step(), [{"id": 1, "text": "a", "content": "mine"}], history=False)
    out = map_step(
        echo_step(), [{"id": 1, "text": "a", "content": "mine"}], prefix="out_", history=False
    )
    assert out[0]["content"] == "mine"
    assert out[0]["out_content"] == "echo: row 1: a"


def test_failed_rows_keep_their_error_and_retry_failed_sends_only_them(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve()

    def refuse_odd(path: str, body: Any) -> Any:
        row = int(prompt_of(body).split(":")[0].split()[1])
        return Fail(400, f"row {row} is odd") if row % 2 else None

    server.handler = refuse_odd
    journal = tmp_path / "run.journal"
    first = map_step(echo_step(), rows(10), journal=journal, history=False)
    assert [r["error"] is not None for r in first] == [i % 2 == 1 for i in range(10)]
    assert "BadRequestError" in first[1]["error"]
    assert "row 1 is odd" in first[1]["error"]
    assert first[1]["content"] is None
    assert first.stats.failed == 5

    server.handler = None
    server.reset()
    again = map_step(echo_step(), rows(10), journal=journal, history=False)
    assert chat_bodies(server) == []  # failed rows are kept, not re-sent, without --retry-failed
    assert [r["error"] for r in again] == [r["error"] for r in first]

    retried = map_step(echo_step(), rows(10), journal=journal, retry_failed=True, history=False)
    assert sorted(prompt_of(b) for b in chat_bodies(server)) == sorted(
        f"row {i}: text number {i}" for i in range(1, 10, 2)
    )
    assert all(r["error"] is None for r in retried)
    assert retried.stats.from_journal == 5


def test_a_row_that_cannot_render_fails_alone(serve: ServerFactory) -> None:
    server = serve()
    data = [{"id": 0, "text": "a"}, {"id": 1}, {"id": 2, "text": "c"}]
    out = map_step(echo_step(), data, history=False)
    assert out[0]["error"] is None
    assert out[2]["error"] is None
    assert "text" in out[1]["error"]
    assert len(chat_bodies(server)) == 2


def test_an_error_every_row_would_meet_stops_the_run(serve: ServerFactory) -> None:
    server = serve()
    server.handler = lambda path, body: Fail(
        401, "Incorrect API key provided.", code="invalid_api_key"
    )
    with pytest.raises(AuthenticationError):
        map_step(echo_step(), rows(200), concurrency=4, history=False)
    assert len(chat_bodies(server)) < 20


def test_max_cost_stops_before_the_budget_is_passed(serve: ServerFactory) -> None:
    serve()
    # A price that makes every token cost a tenth of a cent, so the budget bites after a few rows.
    prices = PriceTable.builtin().merged({"gpt-4o-mini": {"input": 1000.0, "output": 1000.0}})
    step = echo_step(max_tokens=10)
    out = map_step(step, rows(100), max_cost=0.25, price_table=prices, concurrency=8, history=False)
    spent = sum(r["cost"] for r in out)
    assert 0 < len(out) < 100
    assert [r["id"] for r in out] == list(range(len(out)))
    assert spent <= 0.25
    assert out.stats.stop_reason is not None
    assert "--max-cost" in out.stats.stop_reason
    # It stopped in time, not early: the next row's worst case would not have fitted.
    worst_case = 0.001 * (15 + 10)
    assert spent + worst_case > 0.25 - worst_case


def test_amap_step_streams_rows_from_an_async_source(serve: ServerFactory) -> None:
    serve()

    async def source() -> Any:
        for row in rows(20):
            await asyncio.sleep(0)
            yield row

    async def collect() -> list[dict[str, Any]]:
        return [
            row
            async for row in amap_step(
                echo_step(), source(), window=4, concurrency=2, history=False
            )
        ]

    out = asyncio.run(collect())
    assert [r["id"] for r in out] == list(range(20))


@pytest.mark.parametrize(
    ("in_suffix", "out_suffix"),
    [("jsonl", "csv"), ("csv", "jsonl"), ("jsonl", "parquet"), ("parquet", "jsonl")],
)
def test_files_in_every_format(
    serve: ServerFactory, tmp_path: Path, in_suffix: str, out_suffix: str
) -> None:
    if "parquet" in (in_suffix, out_suffix):
        pytest.importorskip("pyarrow", reason="pyarrow (the 'parquet' extra) is not installed")
    from chatstep.mapping.datasets import open_writer, read_rows

    serve()
    source = tmp_path / f"in.{in_suffix}"
    writer = open_writer(source)
    for row in rows(25):
        writer.write(row)
    writer.commit()
    target = tmp_path / f"out.{out_suffix}"
    stats = map_file(echo_step(), source, target, select=["content", "usage"], history=False)
    assert stats.done == 25
    back = list(read_rows(target))
    assert [str(r["id"]) for r in back] == [str(i) for i in range(25)]
    assert all(r["content"] == f"echo: row {r['id']}: text number {r['id']}" for r in back)
    if out_suffix == "jsonl":
        assert back[0]["usage"]["total_tokens"] > 0  # nested
    else:
        assert int(back[0]["usage.total_tokens"]) > 0  # flattened to fixed columns
    assert default_journal_path(target).exists()


def test_a_cached_map_sends_nothing_the_second_time(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve()
    cache = tmp_path / "answers.sqlite3"
    first = map_step(echo_step(), rows(20), cache=cache, history=False)
    assert len(chat_bodies(server)) == 20
    again = map_step(echo_step(), rows(20), cache=cache, select=["content", "cached", "cost"])
    assert len(chat_bodies(server)) == 20  # no new request
    assert [r["content"] for r in again] == [r["content"] for r in first]
    assert all(r["cached"] for r in again)
    assert all(r["cost"] == 0 for r in again)
    assert again.stats.cache_hits == 20
    assert again.stats.requests == 0
    # The second run logged its (cached) calls to the history; the first had it off.
    from chatstep.storage.history import History

    with History() as history:
        assert history.count() == 20
    # A changed parameter is another request: it misses.
    map_step(echo_step(temperature=0.5), rows(20), cache=cache, history=False)
    assert len(chat_bodies(server)) == 40
    # cache=False overrides a step that asks for caching.
    map_step(echo_step(cache=True), rows(20), cache=False, history=False)
    assert len(chat_bodies(server)) == 60


def test_a_changed_step_under_an_existing_journal_is_refused(
    serve: ServerFactory, tmp_path: Path
) -> None:
    server = serve()
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows(5)))
    target = tmp_path / "out.jsonl"
    map_file(echo_step(), source, target, history=False)
    changed = ChatCompletion(model="gpt-4o-mini", prompt="Summarize {{ inputs.text }}")
    with pytest.raises(JournalMismatchError, match=r"changed: prompt"):
        map_file(changed, source, target, history=False)
    server.reset()
    map_file(changed, source, target, restart=True, history=False)
    assert len(chat_bodies(server)) == 5
    assert (
        json.loads(target.read_text().splitlines()[0])["content"] == "echo: Summarize text number 0"
    )


def test_a_changed_input_under_an_existing_journal_is_refused(
    serve: ServerFactory, tmp_path: Path
) -> None:
    serve()
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows(5)))
    target = tmp_path / "out.jsonl"
    map_file(echo_step(), source, target, history=False)
    source.write_text("".join(json.dumps({**r, "text": "new"}) + "\n" for r in rows(5)))
    with pytest.raises(JournalMismatchError, match="row 0 differs"):
        map_file(echo_step(), source, target, history=False)
