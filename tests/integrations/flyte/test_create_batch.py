"""create_batch: rows through the Batch API in a local Flyte workflow; aborting cancels."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator  # noqa: UP035  (flytekit matches typing.Iterator[JSON])

from flyteidl.core.execution_pb2 import TaskExecution
from flytekit import FlyteContextManager, workflow
from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.core.type_engine import TypeEngine
from flytekit.tools.translator import get_serializable
from flytekit.types.file import JSONLFile
from flytekit.types.iterator import JSON

from chatstep.batch.api import BatchLimits
from chatstep.integrations.flyte import create_batch
from chatstep.integrations.flyte.batch import BatchConnector, BatchJobMeta, ChatStepBatchTask
from chatstep.steps.loading import load_step
from chatstep.testing import Delay, Fail, TestServer

from .conftest import load_example

CHAT = "/v1/chat/completions"


def _joined(file: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(file.download()).read_text().splitlines()]


def test_rows_from_an_iterator_give_the_joined_results_file(openai_env: TestServer) -> None:
    example = load_example("batch_workflow")
    joined = _joined(example.describe_items())
    assert [row["input"]["item"] for row in joined] == ["a teapot", "a bicycle", "a lighthouse"]
    assert [row["content"] for row in joined] == [
        f"echo: Describe {item} in five words."
        for item in ("a teapot", "a bicycle", "a lighthouse")
    ]
    assert all(row["ok"] for row in joined)
    created = [r for r in openai_env.requests if r.method == "POST" and r.path == "/v1/batches"]
    assert len(created) == 1


def test_flytekit_style_request_lines_from_a_jsonl_file(
    openai_env: TestServer, tmp_path: Path
) -> None:
    lines = [
        {
            "custom_id": f"request-{n}",
            "method": "POST",
            "url": CHAT,
            "body": {
                "model": "gpt-3.5-turbo",
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": question},
                ],
            },
        }
        for n, question in ((1, "What is 2+2?"), (2, "Who won the world series in 2020?"))
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    example = load_example("batch_workflow")
    joined = _joined(example.run_requests(requests=JSONLFile(str(data))))
    assert [row["custom_id"] for row in joined] == ["request-1", "request-2"]
    assert joined[1]["content"] == "echo: Who won the world series in 2020?"


def test_split_batches_and_a_row_error_in_a_workflow(openai_env: TestServer) -> None:
    def refuse_seven(path: str, body: Any) -> Any:
        return Fail(400, message="row seven refused") if "number 7" in json.dumps(body) else None

    openai_env.handler = refuse_seven
    numbers = create_batch(
        name="numbers",
        step={"model": "gpt-4o-mini", "prompt": "number {{ inputs.n }}"},
        limits=BatchLimits(max_requests=4),
    )

    def rows() -> Iterator[JSON]:
        for n in range(10):
            yield {"n": n}

    @workflow
    def wf(rows: Iterator[JSON]) -> JSONLFile:
        return numbers(jsonl_in=rows)  # type: ignore[no-any-return]

    joined = _joined(wf(rows=rows()))
    assert [row["input"]["n"] for row in joined] == list(range(10))
    assert [row["ok"] for row in joined] == [n != 7 for n in range(10)]
    assert "row seven refused" in joined[7]["error"]["message"]
    created = [r for r in openai_env.requests if r.method == "POST" and r.path == "/v1/batches"]
    assert len(created) == 3


def test_the_connector_creates_polls_and_delete_cancels(
    openai_env: TestServer, tmp_path: Path
) -> None:
    openai_env.handler = lambda path, body: Delay(0.5) if path == CHAT else None
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(20)))
    step = load_step({"model": "gpt-4o-mini", "prompt": "slow {{ inputs.n }}"})
    task = ChatStepBatchTask("slow-batch", step, is_json_iterator=False)
    template = get_serializable(OrderedDict(), SerializationSettings(ImageConfig()), task).template
    ctx = FlyteContextManager.current_context()
    inputs = TypeEngine.dict_to_literal_map(
        ctx, {"jsonl_in": JSONLFile(str(rows))}, {"jsonl_in": JSONLFile}
    )
    connector = BatchConnector()
    meta = asyncio.run(connector.create(template, inputs=inputs))
    assert BatchJobMeta.decode(meta.encode()) == meta
    assert "sk-" not in meta.encode().decode()
    running = asyncio.run(connector.get(meta))
    assert running.phase == TaskExecution.RUNNING
    connector.delete(meta)
    assert [r for r in openai_env.requests if r.path.endswith("/cancel")]


_SLOW_WORKFLOW = """
from typing import Iterator
from flytekit import workflow
from flytekit.types.file import JSONLFile
from flytekit.types.iterator import JSON
from chatstep.integrations.flyte import create_batch

slow = create_batch(name="slow", step={"model": "gpt-4o-mini", "prompt": "n {{ inputs.n }}"})

def rows() -> Iterator[JSON]:
    for n in range(40):
        yield {"n": n}

@workflow
def wf(rows: Iterator[JSON]) -> JSONLFile:
    return slow(jsonl_in=rows)

wf(rows=rows())
"""


def test_ctrl_c_on_a_local_workflow_cancels_its_batch(
    openai_env: TestServer, tmp_path: Path
) -> None:
    openai_env.handler = lambda path, body: Delay(0.5) if path == CHAT else None
    script = tmp_path / "slow_workflow.py"
    script.write_text(_SLOW_WORKFLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Interrupt once the connector polls the batch: by then create() has returned and
        # flytekit's Ctrl-C handler (which calls the connector's delete) is in place.
        _until(
            lambda: any(
                r.method == "GET" and r.path.startswith("/v1/batches/") for r in openai_env.requests
            ),
            run,
        )
        run.send_signal(signal.SIGINT)
        _until(lambda: any(r.path.endswith("/cancel") for r in openai_env.requests), run)
    finally:
        run.kill()
        run.communicate()


def _until(condition: Any, run: subprocess.Popen[str]) -> None:
    # Bounded wait for the subprocess to reach a point; the bound only stops a hung test.
    for _ in range(600):
        if condition():
            return
        if run.poll() is not None and not condition():
            raise AssertionError(f"the workflow exited ({run.returncode}) before that happened")
        time.sleep(0.1)
    raise AssertionError("the workflow did not get there")
