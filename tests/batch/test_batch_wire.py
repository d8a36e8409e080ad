"""Batch lines that are wrong on the wire (issue 10): a 200 carrying an error or no choices is a
failed row in the joined results, never a success."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatstep.batch.api import batch_results, poll_batch, submit_batch
from chatstep.testing import TestServer
from chatstep.testing.faults import empty_choices, error_in_success

from .conftest import FAST


def test_2xx_lines_without_an_answer_fail_their_rows(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    openai_env.allow_spec_violations()

    def broken(path: str, body: Any) -> Any:
        if not path.endswith("/chat/completions"):
            return None
        text = str(body["messages"][-1]["content"])
        if text.startswith("Item 1:"):
            return error_in_success(code=502, type=None)
        return empty_choices() if text.startswith("Item 2:") else None

    openai_env.handler = broken
    rows = [{"n": n, "text": f"t{n}"} for n in range(4)]
    job = submit_batch(step_file, rows)
    assert poll_batch(job.id, poll=FAST).status == "completed"
    results = batch_results(job.id, rows=rows)
    joined = list(results)
    assert [r["ok"] for r in joined] == [True, False, False, True]
    assert joined[1]["error"]["status_code"] == 502
    assert joined[2]["error"]["type"] == "InvalidResponseError"
    assert (results.succeeded, results.failed) == (2, 2)
