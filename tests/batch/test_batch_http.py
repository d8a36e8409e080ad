"""The Batch API end to end against the test server: submit, wait, join, split, cancel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from chatstep.accounting.pricing import PriceTable
from chatstep.batch.api import (
    BatchJob,
    BatchLimits,
    abatch_status,
    apoll_batch,
    batch_results,
    batch_status,
    list_batches,
    poll_batch,
    submit_batch,
)
from chatstep.batch.journal import BatchJournal
from chatstep.errors import ConfigError
from chatstep.testing import Delay, Fail, TestServer
from chatstep.testing.pytest_plugin import FAKE_API_KEY

from .conftest import FAST

CHAT = "/v1/chat/completions"


def _fail_item_57(path: str, body: Any) -> Any:
    if path == CHAT and "Item 57:" in json.dumps(body):
        return Fail(400, message="refused: item 57 breaks the rules", code="item_refused")
    return None


def _calls(server: TestServer, method: str, path: str) -> list[Any]:
    return [r for r in server.requests if r.method == method and r.path == path]


def test_120_rows_submitted_waited_and_joined_in_order(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    openai_env.handler = _fail_item_57
    job = submit_batch(step_file, rows_file)
    assert job.row_count == 120
    assert len(job.parts) == 1
    created = _calls(openai_env, "POST", "/v1/batches")
    assert len(created) == 1
    assert created[0].body["endpoint"] == CHAT
    assert created[0].body["completion_window"] == "24h"
    assert created[0].body["metadata"]["chatstep_job"] == job.id

    seen: list[str] = []
    done = poll_batch(job.id, poll=FAST, on_progress=lambda j: seen.append(j.status))
    assert done.status == "completed"
    assert seen[-1] == "completed"
    assert done.request_counts == {"total": 120, "completed": 119, "failed": 1}

    results = batch_results(job.id)
    joined = list(results)
    assert [row["index"] for row in joined] == list(range(120))
    assert [row["input"]["n"] for row in joined] == list(range(120))
    assert (results.rows, results.succeeded, results.failed) == (120, 119, 1)
    bad = joined[57]
    assert bad["ok"] is False
    assert bad["response"] is None
    assert bad["error"]["status_code"] == 400
    assert "item 57 breaks the rules" in bad["error"]["message"]
    for row in joined[:57] + joined[58:]:
        assert row["ok"] is True, row
        assert row["content"] == f"echo: Item {row['index']}: text {row['index']}"

    # Costs are the batch price: half of what the same usage costs synchronously.
    table = PriceTable()
    full = sum(
        table.cost("gpt-4o-mini", row["usage"]).total_usd  # type: ignore[union-attr]
        for row in joined
        if row["ok"]
    )
    assert results.cost == pytest.approx(full / 2)
    assert joined[0]["cost"] == pytest.approx(
        table.cost("gpt-4o-mini", joined[0]["usage"]).total_usd / 2
    )  # type: ignore[union-attr]


def test_the_uploaded_file_is_batch_jsonl_with_one_line_per_row(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    job = submit_batch(step_file, rows_file)
    poll_batch(job, poll=FAST)
    chats = [r for r in openai_env.requests if r.path == CHAT]
    prompts = sorted(r.body["messages"][-1]["content"] for r in chats)
    assert prompts == sorted(f"Item {n}: text {n}" for n in range(120))
    uploads = _calls(openai_env, "POST", "/v1/files")
    assert len(uploads) == 1


def test_journal_holds_the_job_and_never_the_key(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    job = submit_batch(step_file, rows_file)
    journal = BatchJournal()
    assert [j.id for j in list_batches()] == [job.id]
    assert journal.get(job.parts[0].batch_id).id == job.id
    assert FAKE_API_KEY not in journal.path.read_bytes().decode("utf-8", "replace")
    poll_batch(job, poll=FAST)


def test_split_into_several_batches_and_reassembled(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    job = submit_batch(step_file, rows_file, limits=BatchLimits(max_requests=50))
    assert [(p.first_row, p.row_count) for p in job.parts] == [(0, 50), (50, 50), (100, 20)]
    assert len(_calls(openai_env, "POST", "/v1/batches")) == 3
    assert len({p.batch_id for p in job.parts}) == 3
    done = poll_batch(job, poll=FAST)
    assert done.status == "completed"
    assert done.request_counts["completed"] == 120
    joined = list(batch_results(done))
    assert [row["index"] for row in joined] == list(range(120))
    assert all(row["ok"] for row in joined)
    assert [row["content"] for row in joined] == [f"echo: Item {n}: text {n}" for n in range(120)]


def test_split_by_bytes(openai_env: TestServer, step_file: Path, rows_file: Path) -> None:
    job = submit_batch(step_file, rows_file, limits=BatchLimits(max_bytes=4000))
    assert len(job.parts) > 2
    assert sum(p.row_count for p in job.parts) == 120
    joined = list(batch_results(poll_batch(job, poll=FAST)))
    assert [row["input"]["n"] for row in joined] == list(range(120))


def _slow_answers(path: str, body: Any) -> Any:
    # Each line takes a while, so the batch is still running when the test cancels it.
    return Delay(0.5) if path == CHAT else None


def test_cancelling_the_waiting_task_cancels_the_batch(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    openai_env.handler = _slow_answers
    job = submit_batch(step_file, rows_file)

    async def scenario() -> BatchJob:
        running = asyncio.Event()

        def progress(current: BatchJob) -> None:
            if current.status == "in_progress":
                running.set()

        waiting = asyncio.create_task(apoll_batch(job, poll=FAST, on_progress=progress))
        await asyncio.wait_for(running.wait(), timeout=60)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return await abatch_status(job.id)

    after = asyncio.run(scenario())
    assert _calls(openai_env, "POST", f"/v1/batches/{job.parts[0].batch_id}/cancel")
    assert after.status in ("cancelling", "cancelled")
    ended = poll_batch(job.id, poll=FAST)
    assert ended.status == "cancelled"
    joined = list(batch_results(ended))
    assert len(joined) == 120
    unanswered = [row for row in joined if not row["ok"]]
    assert unanswered
    assert all(row["error"]["code"] == "batch_cancelled" for row in unanswered)


def test_cancel_on_cancel_false_leaves_the_batch_running(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    openai_env.handler = _slow_answers
    job = submit_batch(step_file, rows_file)

    async def scenario() -> None:
        waiting = asyncio.create_task(apoll_batch(job, poll=FAST, cancel_on_cancel=False))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
    assert not [r for r in openai_env.requests if r.path.endswith("/cancel")]
    assert batch_status(job.id).status not in ("cancelling", "cancelled")
    from chatstep.batch.api import cancel_batch

    cancel_batch(job.id)


def test_results_before_the_end_say_to_wait(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    openai_env.handler = _slow_answers
    job = submit_batch(step_file, rows_file)
    with pytest.raises(ConfigError, match="wait for it first"):
        batch_results(job.id)
    from chatstep.batch.api import cancel_batch

    cancel_batch(job.id)


def test_embeddings_batch(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "embed.yaml"
    step.write_text("type: embedding\nmodel: text-embedding-3-small\ninput: '{{ inputs.text }}'\n")
    job = submit_batch(step, [{"text": f"t{n}"} for n in range(5)])
    assert job.endpoint == "/v1/embeddings"
    joined = list(batch_results(poll_batch(job, poll=FAST)))
    assert all(row["ok"] for row in joined)
    assert all(row["response"]["data"][0]["embedding"] for row in joined)
    assert "content" not in joined[0]


def test_ready_made_request_lines_keep_their_custom_ids(openai_env: TestServer) -> None:
    lines = [
        {
            "custom_id": f"request-{n}",
            "method": "POST",
            "url": CHAT,
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{n}"}]},
        }
        for n in (3, 1, 2)
    ]
    job = submit_batch(None, lines)
    joined = list(batch_results(poll_batch(job, poll=FAST)))
    assert [row["custom_id"] for row in joined] == ["request-3", "request-1", "request-2"]
    assert [row["content"] for row in joined] == ["echo: q3", "echo: q1", "echo: q2"]


def test_a_bad_row_fails_before_anything_is_uploaded(
    openai_env: TestServer, step_file: Path
) -> None:
    with pytest.raises(ConfigError, match=r"rows\[1\].*inputs\.text"):
        submit_batch(step_file, [{"n": 0, "text": "a"}, {"n": 1}])
    assert not openai_env.requests
    assert list_batches() == []


def test_the_local_model_cannot_batch(step_file: Path) -> None:
    with pytest.raises(ConfigError, match="Batch API needs an OpenAI-compatible endpoint"):
        submit_batch(step_file, [{"n": 0, "text": "a"}])


def test_wait_shows_every_status_in_order(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    openai_env.configure(batch_progress="polls")
    job = submit_batch(step_file, rows_file)
    seen: list[str] = []
    poll_batch(job, poll=FAST, on_progress=lambda j: seen.append(j.status))
    assert [s for n, s in enumerate(seen) if n == 0 or seen[n - 1] != s] == [
        "in_progress",
        "finalizing",
        "completed",
    ]


def test_an_expired_batch_reports_the_rows_it_never_ran(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    openai_env.configure(batch_expire_after_lines=100)
    done = poll_batch(submit_batch(step_file, rows_file), poll=FAST)
    assert done.status == "expired"
    joined = list(batch_results(done))
    assert all(row["ok"] for row in joined[:100])
    assert [row["error"]["code"] for row in joined[100:]] == ["batch_expired"] * 20
    assert "completion window expired" in joined[100]["error"]["message"]


def test_refused_uploads_and_creates_are_retried_once_each(
    openai_env: TestServer, step_file: Path, rows_file: Path
) -> None:
    openai_env.enqueue(Fail(503), path="/v1/files")
    openai_env.enqueue(Fail(429, retry_after=0), path="/v1/batches")
    job = submit_batch(step_file, rows_file)
    assert len(_calls(openai_env, "POST", "/v1/files")) == 2
    assert len(_calls(openai_env, "POST", "/v1/batches")) == 2
    assert len(job.parts) == 1
    assert poll_batch(job, poll=FAST).status == "completed"


def test_rows_must_share_one_model(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "per-row-model.yaml"
    step.write_text("model: '{{ inputs.model }}'\nprompt: hi\n")
    with pytest.raises(ConfigError, match=r"rows\[1\]\.model.*one model"):
        submit_batch(step, [{"model": "gpt-4o-mini"}, {"model": "gpt-4o"}])


def test_json_schema_rows_are_parsed_and_validated_like_map(
    openai_env: TestServer, tmp_path: Path
) -> None:
    from chatstep.testing import Respond

    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["good", "bad"]}},
        "required": ["label"],
        "additionalProperties": False,
    }
    step = {
        "model": "gpt-4o-mini",
        "prompt": "Label: {{ inputs.text }}",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "label", "strict": True, "schema": schema},
        },
    }

    def answer(path: str, body: Any) -> Any:
        if path != CHAT:
            return None
        text = body["messages"][-1]["content"]
        if "broken" in text:
            return Respond(content='{"label": "meh"}')
        return Respond(content='{"label": "good"}')

    openai_env.handler = answer
    rows = [{"text": "fine"}, {"text": "broken"}, {"text": "also fine"}]
    job = submit_batch(step, rows)
    assert job.response_format is not None
    assert BatchJournal().get(job.id).response_format == job.response_format
    poll_batch(job.id, poll=FAST)
    results = batch_results(job.id, tmp_path / "out.jsonl")
    joined = list(results)
    assert [r["parsed"] for r in joined] == [{"label": "good"}, None, {"label": "good"}]
    assert [r["ok"] for r in joined] == [True, False, True]
    assert joined[1]["error"]["code"] == "schema_mismatch"
    assert "'meh' is not one of" in joined[1]["error"]["message"]
    assert joined[1]["content"] == '{"label": "meh"}'  # what was paid for is kept
    assert (results.succeeded, results.failed) == (2, 1)


def test_text_rows_have_no_parsed_column(openai_env: TestServer, tmp_path: Path) -> None:
    job = submit_batch({"model": "gpt-4o-mini", "prompt": "{{ inputs.t }}"}, [{"t": "hi"}])
    assert job.response_format is None
    poll_batch(job.id, poll=FAST)
    (row,) = list(batch_results(job.id, tmp_path / "out.jsonl"))
    assert "parsed" not in row
    assert row["content"] == "echo: hi"
