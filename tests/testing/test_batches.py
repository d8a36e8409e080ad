"""Files and Batch API: upload, run, progress, per-line errors, cancel, expiry, validation."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
import openai
import pytest

from chatstep.testing import Delay, Fail, TestServer

CHAT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def _line(custom_id: str, text: str, url: str = CHAT, **body: Any) -> dict[str, Any]:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": payload}


def _upload(client: openai.OpenAI, lines: list[Any], purpose: str = "batch") -> str:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(text.encode())), purpose=purpose)
    return uploaded.id


def _submit(client: openai.OpenAI, lines: list[Any], endpoint: str = CHAT) -> Any:
    file_id = _upload(client, lines)
    return client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,
        completion_window="24h",  # type: ignore[arg-type]
    )


def _wait(client: openai.OpenAI, batch_id: str) -> Any:
    for _ in range(2000):
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        time.sleep(0.01)
    raise AssertionError(f"batch {batch_id} never ended")


def _jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


# -- files --------------------------------------------------------------------------------


def test_files_upload_retrieve_list_download_delete(client: openai.OpenAI) -> None:
    first = client.files.create(file=("a.jsonl", io.BytesIO(b'{"x": 1}\n')), purpose="batch")
    second = client.files.create(file=("b.txt", io.BytesIO(b"hello")), purpose="user_data")
    assert first.object == "file"
    assert (first.filename, first.bytes, first.purpose) == ("a.jsonl", 9, "batch")
    assert client.files.retrieve(first.id).filename == "a.jsonl"
    assert client.files.content(second.id).content == b"hello"
    assert {f.id for f in client.files.list()} == {first.id, second.id}
    assert [f.id for f in client.files.list(purpose="batch")] == [first.id]
    deleted = client.files.delete(first.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(first.id)


def test_an_upload_with_a_bad_purpose_breaks_the_spec(openai_server: TestServer) -> None:
    openai_server.allow_spec_violations()
    response = httpx.post(
        f"{openai_server.base_url}/files",
        files={"file": ("a.jsonl", b"{}\n")},
        data={"purpose": "homework"},
    )
    assert response.status_code == 400
    assert openai_server.spec_violations[0].schema == "CreateFileRequest"
    assert openai_server.requests[0].body == {"file": "a.jsonl", "purpose": "homework"}


# -- running batches ----------------------------------------------------------------------


def test_a_batch_runs_every_line_and_writes_the_output_file(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    batch = _submit(client, [_line("r1", "first"), _line("r2", "second")])
    assert batch.status == "validating"
    assert batch.endpoint == CHAT
    done = _wait(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 2, "completed": 2, "failed": 0}
    assert done.error_file_id is None
    assert done.completed_at
    assert done.in_progress_at
    assert done.finalizing_at
    assert done.model == "gpt-4o-mini"
    output = _jsonl(client, done.output_file_id)
    assert [entry["custom_id"] for entry in output] == ["r1", "r2"]
    first = output[0]
    assert first["error"] is None
    assert first["response"]["status_code"] == 200
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "echo: first"
    assert done.usage is not None
    assert done.usage.input_tokens == 2
    lines = [r for r in openai_server.requests if r.path == CHAT]
    assert [r.headers["x-chatstep-custom-id"] for r in lines] == ["r1", "r2"]
    assert {r.headers["x-chatstep-batch-id"] for r in lines} == {batch.id}


def test_scripts_and_the_handler_apply_per_line(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    def handler(path: str, body: Any) -> Any:
        if "refuse me" in json.dumps(body):
            return Fail(400, message="refused", code="row_refused")
        return None

    openai_server.handler = handler
    openai_server.enqueue(Fail(500))  # the first line
    batch = _submit(client, [_line("a", "one"), _line("b", "refuse me"), _line("c", "three")])
    done = _wait(client, batch.id)
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 3, "completed": 1, "failed": 2}
    errors = {entry["custom_id"]: entry for entry in _jsonl(client, done.error_file_id)}
    assert errors["a"]["response"]["status_code"] == 500
    assert errors["b"]["response"]["status_code"] == 400
    assert errors["b"]["response"]["body"]["error"]["code"] == "row_refused"
    assert [e["custom_id"] for e in _jsonl(client, done.output_file_id)] == ["c"]


def test_faults_apply_per_line_but_rate_limits_do_not(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.configure(fault_rate=1.0, faults=["503", "reset"], rpm=1, latency=30.0)
    batch = _submit(client, [_line(f"r{i}", f"row {i}") for i in range(4)])
    done = _wait(client, batch.id)
    assert done.request_counts is not None
    assert done.request_counts.failed == 4
    statuses = {e["response"]["status_code"] for e in _jsonl(client, done.error_file_id)}
    assert statuses <= {500, 503}
    assert openai_server.stats.rate_limited == 0


def test_an_embeddings_batch(client: openai.OpenAI) -> None:
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": f"text {i}"},
        }
        for i in range(3)
    ]
    done = _wait(client, _submit(client, lines, endpoint="/v1/embeddings").id)
    output = _jsonl(client, done.output_file_id)
    assert [len(e["response"]["body"]["data"][0]["embedding"]) for e in output] == [16] * 3


def test_polls_mode_moves_one_status_per_retrieve(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.configure(batch_progress="polls")
    batch = _submit(client, [_line("r1", "x")])
    seen = [batch.status] + [client.batches.retrieve(batch.id).status for _ in range(4)]
    assert seen == ["validating", "in_progress", "finalizing", "completed", "completed"]


def test_an_invalid_input_file_fails_the_batch(client: openai.OpenAI) -> None:
    lines = [
        _line("r1", "ok"),
        "{not json",
        _line("r1", "again"),
        _line("r3", "x", url="/v1/embeddings"),
        {"custom_id": "r4", "method": "POST", "url": CHAT},
    ]
    done = _wait(client, _submit(client, lines).id)
    assert done.status == "failed"
    assert done.failed_at
    assert done.errors is not None
    found = [(e.code, e.line) for e in done.errors.data or []]
    assert found == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("mismatched_endpoint", 4),
        ("missing_required_parameter", 5),
    ]


def test_expiry_leaves_the_rest_as_batch_expired(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.configure(batch_expire_after_lines=2)
    done = _wait(client, _submit(client, [_line(f"r{i}", "x") for i in range(5)]).id)
    assert done.status == "expired"
    assert done.expired_at
    assert [e["custom_id"] for e in _jsonl(client, done.output_file_id)] == ["r0", "r1"]
    errors = _jsonl(client, done.error_file_id)
    assert [e["custom_id"] for e in errors] == ["r2", "r3", "r4"]
    assert all(e["response"] is None for e in errors)
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}


def test_cancelling_a_running_batch_keeps_partial_results(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.handler = lambda path, body: Delay(0.1)
    batch = _submit(client, [_line(f"r{i}", "x") for i in range(50)])
    for _ in range(2000):
        if client.batches.retrieve(batch.id).status == "in_progress":
            break
        time.sleep(0.01)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at
    done = _wait(client, batch.id)
    assert done.status == "cancelled"
    assert done.request_counts is not None
    assert done.request_counts.completed < 50
    assert len(_jsonl(client, done.output_file_id)) == done.request_counts.completed
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_cancelling_before_it_runs_in_polls_mode(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.configure(batch_progress="polls")
    batch = _submit(client, [_line("r1", "x")])
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled"
    assert done.output_file_id is None
    assert not [r for r in openai_server.requests if r.path == CHAT]


def test_listing_batches_newest_first(client: openai.OpenAI) -> None:
    ids = [_submit(client, [_line("r", str(i))]).id for i in range(3)]
    listed = client.batches.list(limit=2)
    assert [b.id for b in listed.data] == ids[::-1][:2]
    assert listed.has_more is True
    rest = client.batches.list(after=ids[1])
    assert [b.id for b in rest.data] == [ids[0]]


def test_refused_batches(client: openai.OpenAI, openai_server: TestServer) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    wrong_purpose = _upload(client, [_line("r", "x")], purpose="user_data")
    with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
        client.batches.create(input_file_id=wrong_purpose, endpoint=CHAT, completion_window="24h")
    good = _upload(client, [_line("r", "x")])
    with pytest.raises(openai.BadRequestError, match="runs batches for"):
        client.batches.create(input_file_id=good, endpoint="/v1/responses", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_a_line_that_breaks_the_spec_is_a_400_line(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.allow_spec_violations()
    done = _wait(client, _submit(client, [_line("r1", "x", temperature=9)]).id)
    (error,) = _jsonl(client, done.error_file_id)
    assert error["response"]["status_code"] == 400
    assert "$.temperature" in error["response"]["body"]["error"]["message"]
    assert openai_server.spec_violations[0].location == "$.temperature"


def test_reset_forgets_files_and_batches(client: openai.OpenAI, openai_server: TestServer) -> None:
    batch = _submit(client, [_line("r", "x")])
    openai_server.reset()
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch.id)
    assert list(client.files.list()) == []
