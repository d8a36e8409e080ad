"""Batch files without a server: rendering lines, splitting at limits, joining results in order."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from chatstep.batch.files import (
    BatchLimits,
    PartWriter,
    given_request_line,
    join_results,
    read_rows,
    request_line,
)
from chatstep.core.request import Request
from chatstep.errors import ConfigError


def _line(n: int, size: int = 10) -> bytes:
    return request_line(f"row-{n}", Request("chat.completions", {"model": "m", "x": "a" * size}))


def test_request_line_is_a_batch_input_line() -> None:
    line = json.loads(request_line("row-3", Request("embeddings", {"model": "e", "input": "hi"})))
    assert line == {
        "custom_id": "row-3",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "e", "input": "hi"},
    }


def test_split_by_request_count(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, BatchLimits(max_requests=50))
    for n in range(120):
        writer.add(_line(n))
    parts = writer.close()
    assert [(p.first_row, p.row_count) for p in parts] == [(0, 50), (50, 50), (100, 20)]
    ids = [json.loads(x)["custom_id"] for p in parts for x in p.path.read_bytes().splitlines()]
    assert ids == [f"row-{n}" for n in range(120)]


def test_split_by_bytes_never_exceeds_the_limit(tmp_path: Path) -> None:
    size = len(_line(0, 100))
    writer = PartWriter(tmp_path, BatchLimits(max_bytes=size * 3 + 5))
    for n in range(10):
        writer.add(_line(n, 100))
    parts = writer.close()
    assert [p.row_count for p in parts] == [3, 3, 3, 1]
    assert all(p.path.stat().st_size <= size * 3 + 5 for p in parts)


def test_split_by_embedding_inputs(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, BatchLimits(max_embedding_inputs=5))
    for n in range(4):
        writer.add(_line(n), inputs=2)
    assert [p.row_count for p in writer.close()] == [2, 2]


def test_a_row_over_the_byte_limit_is_an_error(tmp_path: Path) -> None:
    writer = PartWriter(tmp_path, BatchLimits(max_bytes=50))
    with pytest.raises(ConfigError, match=r"rows\[0\].*over the batch file limit"):
        writer.add(_line(0, 100))
    writer.close()


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"limits\.max_requests"):
        BatchLimits(max_requests=0)


def test_read_rows_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    rows = read_rows(path)
    assert next(rows) == {"a": 1}
    with pytest.raises(ConfigError, match=r"rows.jsonl line 3: a row must be a JSON object"):
        next(rows)


def test_given_request_lines_are_checked() -> None:
    good = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m"},
    }
    assert given_request_line(good, "rows[0]")[:2] == ("a", "/v1/chat/completions")
    with pytest.raises(ConfigError, match=r"rows\[0\].url"):
        given_request_line({**good, "url": "/v1/images"}, "rows[0]")
    with pytest.raises(ConfigError, match=r"rows\[0\].custom_id"):
        given_request_line({**good, "custom_id": None}, "rows[0]")


def _ok(cid: str, n: int) -> dict[str, Any]:
    body = {
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer {n}"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    return {"id": f"r{n}", "custom_id": cid, "response": {"status_code": 200, "body": body}}


def test_join_is_in_input_order_with_errors_on_their_rows(tmp_path: Path) -> None:
    rows = [{"n": n} for n in range(30)]
    outputs = [_ok(f"row-{n}", n) for n in range(30) if n not in (7, 11)]
    random.Random(4).shuffle(outputs)
    out_file = tmp_path / "out.jsonl"
    out_file.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    failed = {
        "id": "r7",
        "custom_id": "row-7",
        "response": {
            "status_code": 400,
            "body": {"error": {"message": "bad row", "type": "invalid_request_error", "code": "x"}},
        },
        "error": None,
    }
    err_file = tmp_path / "err.jsonl"
    err_file.write_text(json.dumps(failed) + "\n")
    dest = tmp_path / "joined.jsonl"
    summary = join_results(
        rows,
        lambda i, row: f"row-{i}",
        [out_file, err_file],
        dest,
        missing=lambda i: {"code": "not_run", "message": "never ran"},
        cost=lambda body: 0.5,
        chat=True,
    )
    joined = [json.loads(line) for line in dest.read_text().splitlines()]
    assert [j["index"] for j in joined] == list(range(30))
    assert [j["input"] for j in joined] == rows
    assert joined[0]["content"] == "answer 0"
    assert joined[0]["ok"] is True
    assert joined[7]["ok"] is False
    assert joined[7]["error"]["status_code"] == 400
    assert joined[7]["error"]["message"] == "bad row"
    assert joined[11]["error"]["code"] == "not_run"
    assert (summary.rows, summary.succeeded, summary.failed) == (30, 28, 2)
    assert summary.cost == pytest.approx(28 * 0.5)


def test_error_file_lines_fail_and_bad_2xx_bodies_fail(tmp_path: Path) -> None:
    """Issue 10, item 9: an error-file line is a failure whatever it says; a success needs a 2xx
    status and a body that passes the chat shape check."""
    rows = [{"n": n} for n in range(6)]
    outputs = [
        _ok("row-0", 0),
        {"custom_id": "row-1", "response": {"status_code": 200, "body": {"choices": []}}},
        {
            "custom_id": "row-2",
            "response": {
                "status_code": 200,
                "body": {"error": {"message": "Provider returned error", "code": 502}},
            },
        },
        {"custom_id": "row-3", "response": {"status_code": 0, "body": {}}, "error": None},
        _ok("row-5", 5),
    ]
    out_file = tmp_path / "output-0000.jsonl"
    out_file.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    err_file = tmp_path / "errors-0000.jsonl"
    issue_line = {
        "custom_id": "row-4",
        "response": {"status_code": 0, "request_id": "", "body": {}},
        "error": None,
    }
    err_file.write_text(json.dumps(issue_line) + "\n")
    dest = tmp_path / "joined.jsonl"
    summary = join_results(
        rows,
        lambda i, row: f"row-{i}",
        [out_file, err_file],
        dest,
        missing=lambda i: {"code": "not_run", "message": "never ran"},
        cost=lambda body: None,
        chat=True,
        error_files=[err_file],
        endpoint="/v1/chat/completions",
    )
    joined = [json.loads(line) for line in dest.read_text().splitlines()]
    assert [j["ok"] for j in joined] == [True, False, False, False, False, True]
    assert joined[1]["error"]["type"] == "InvalidResponseError"
    assert joined[2]["error"]["status_code"] == 502
    assert joined[2]["error"]["type"] == "InternalServerError"
    assert joined[3]["error"]["code"] == "invalid_response"
    assert joined[4]["error"]["code"] == "batch_error"
    assert "error file" in joined[4]["error"]["message"]
    assert (summary.succeeded, summary.failed) == (2, 4)


def test_a_rows_file_without_a_suffix_is_read_as_json_lines(tmp_path: Path) -> None:
    # Flyte hands a downloaded FlyteFile over under a name with no suffix.
    from chatstep.batch.files import read_rows

    path = tmp_path / "90288fa0c90191270d3d6ef0c1cb6c8e"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert list(read_rows(path)) == [{"text": "a"}, {"text": "b"}]
