"""``type: completion`` steps on ``/v1/completions`` over real HTTP (the project's test server).

run, stream, cache, history, faults, map, flows and batch all send a completion step to the
legacy endpoint, and what comes back is checked like a chat answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from typer.testing import CliRunner

from chatstep import (
    AsyncRunner,
    ConfigError,
    Delta,
    InvalidResponseError,
    StepResult,
    map_step,
    run_flow,
    run_step,
)
from chatstep.cli.app import app
from chatstep.errors import APIConnectionError, InternalServerError
from chatstep.storage.history import History
from chatstep.testing import Fail, Respond, TestServer

COMPLETIONS = "/v1/completions"
STEP: dict[str, Any] = {
    "type": "completion",
    "model": "gpt-3.5-turbo-instruct",
    "prompt": "Tagline for {{ inputs.product }}:",
    "max_tokens": 8,
}


def _posts(server: TestServer) -> list[Any]:
    return [r for r in server.requests if r.method == "POST"]


def test_run_sends_the_legacy_endpoint_and_content_is_the_text(openai_env: TestServer) -> None:
    step = {**STEP, "suffix": " -- end", "seed": 7, "user": "u-1", "logit_bias": {"50256": -100}}
    result = run_step(step, {"product": "tea"})
    assert isinstance(result, StepResult)
    [sent] = _posts(openai_env)
    assert sent.path == COMPLETIONS
    assert sent.body == {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "Tagline for tea:",
        "suffix": " -- end",
        "max_tokens": 8,
        "logit_bias": {"50256": -100},
        "seed": 7,
        "user": "u-1",
    }
    assert result.content == " echo: Tagline for tea:"
    assert result.response["object"] == "text_completion"
    # The SDK's own model of the answer accepts it: the shape is the API's.
    assert openai.types.Completion.model_validate(result.response).choices[0].text == result.content
    assert result.usage["prompt_tokens"] == 3
    assert result.cost is not None
    assert result.cost > 0


def test_prompts_n_echo_and_logprobs_come_back_in_api_order(openai_env: TestServer) -> None:
    step = {**STEP, "prompt": ["one {{ inputs.product }}", "two"], "n": 2, "best_of": 3}
    result = run_step({**step, "echo": True, "logprobs": 2}, {"product": "x"})
    assert isinstance(result, StepResult)
    assert result.contents == [
        "one x echo: one x",
        "one x echo: one x",
        "two echo: two",
        "two echo: two",
    ]
    logprobs = result.response["choices"][0]["logprobs"]
    assert logprobs["tokens"][0] == "one "
    assert len(logprobs["top_logprobs"][0]) == 2
    assert _posts(openai_env)[0].body["best_of"] == 3


def test_stream_assembles_to_the_plain_answer(openai_env: TestServer) -> None:
    plain = run_step(STEP, {"product": "a kettle that sings"})
    deltas: list[Delta] = []
    streamed = run_step(STEP, {"product": "a kettle that sings"}, on_delta=deltas.append)
    assert isinstance(plain, StepResult)
    assert isinstance(streamed, StepResult)
    pieces = [d.content for d in deltas if d.content]
    assert len(pieces) > 3
    assert "".join(pieces) == plain.content
    assert streamed.response["choices"] == plain.response["choices"]
    assert streamed.usage == plain.usage
    assert not streamed.usage_estimated
    body = _posts(openai_env)[-1].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_a_200_without_choices_is_an_invalid_response_never_a_success(
    openai_env: TestServer,
) -> None:
    empty = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    openai_env.enqueue(Respond(body={**empty, "choices": []}), path=COMPLETIONS)
    with pytest.raises(InvalidResponseError, match="no choices"):
        run_step({**STEP, "max_retries": 0}, {"product": "x"})
    # A chat-shaped choice (no text) is not an answer either.
    chat_choice = {"index": 0, "message": {"role": "assistant", "content": "hi"}}
    openai_env.enqueue(
        Respond(body={**empty, "choices": [chat_choice]}, validate=False), path=COMPLETIONS
    )
    openai_env.allow_spec_violations()
    with pytest.raises(InvalidResponseError, match="has no text"):
        run_step({**STEP, "max_retries": 0}, {"product": "x"})


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("empty_answer", InvalidResponseError),
        ("error_200", InternalServerError),
        ("malformed", APIConnectionError),
        ("500", InternalServerError),
    ],
)
def test_shared_fault_kinds_fail_typed_then_answer(
    openai_env: TestServer, fault: str, error: type[Exception]
) -> None:
    openai_env.configure(fault_rate=1.0, faults=(fault,))
    with pytest.raises(error):
        run_step({**STEP, "max_retries": 0}, {"product": "x"})
    openai_env.configure(fault_rate=0.0)
    result = run_step({**STEP, "max_retries": 0}, {"product": "x"})
    assert isinstance(result, StepResult)
    assert result.content


def test_a_stream_cut_midway_is_an_error_and_is_billed(openai_env: TestServer) -> None:
    openai_env.configure(fault_rate=1.0, faults=("truncated_stream",))
    with pytest.raises(APIConnectionError, match="before the answer finished"):
        run_step({**STEP, "max_retries": 0, "stream": True}, {"product": "a b c d e f"})


def test_retry_after_a_503_then_cache_and_history(openai_env: TestServer, tmp_path: Path) -> None:
    openai_env.enqueue(Fail(503), path=COMPLETIONS)
    history = History(tmp_path / "h.db")

    async def go() -> list[Any]:
        async with AsyncRunner(history=history, cache=str(tmp_path / "c.db")) as runner:
            runner.sleep = _no_sleep
            first = await runner.run(STEP, {"product": "x"})
            deltas: list[Delta] = []
            second = await runner.run(STEP, {"product": "x"}, on_delta=deltas.append)
            return [first, second, deltas]

    import asyncio

    first, second, deltas = asyncio.run(go())
    assert first.attempts == 2
    assert not first.cached
    assert second.cached
    assert second.content == first.content
    assert "".join(d.content or "" for d in deltas) == first.content  # replayed to the stream
    assert len(_posts(openai_env)) == 2  # the 503, then the answer; the cache hit sent nothing
    logged = history.recent(10)
    assert logged
    assert all(e.endpoint == "completions" for e in logged)
    assert [e.cached for e in history.search("Tagline echo")] == [True, False]  # prompt, text


async def _no_sleep(seconds: float) -> None:
    return None


def test_best_of_cannot_be_streamed_even_when_the_run_asks(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError, match="best_of"):
        run_step({**STEP, "best_of": 2}, {"product": "x"}, stream=True)
    assert _posts(openai_env) == []


def test_map_over_rows(openai_env: TestServer) -> None:
    rows = [{"product": f"item {i}"} for i in range(5)]
    out = map_step(STEP, rows, concurrency=3)
    assert [r["content"] for r in out] == [f" echo: Tagline for item {i}:" for i in range(5)]
    assert all(r["cost"] for r in out)
    assert {r.path for r in _posts(openai_env)} == {COMPLETIONS}


def test_flow_task_and_cli_run(openai_env: TestServer, tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "id: f\nnamespace: t\ninputs:\n  - id: product\n    type: STRING\ntasks:\n"
        "  - id: tag\n    type: chatstep.completion\n    model: gpt-3.5-turbo-instruct\n"
        "    prompt: 'Tagline: {{ inputs.product }}'\n"
        "  - id: out\n    type: io.kestra.plugin.core.debug.Return\n"
        "    format: '{{ outputs.tag.choices[0].text }}'\n"
    )
    run = run_flow(flow, {"product": "tea"})
    assert run.state == "SUCCESS"
    assert run.task("out").output == {"value": " echo: Tagline: tea"}
    assert run.task("tag").summary() == {"content": " echo: Tagline: tea"}
    step = tmp_path / "s.yaml"
    step.write_text(json.dumps(STEP))
    out = CliRunner().invoke(app, ["run", str(step), "-i", "product=tea"])
    assert out.exit_code == 0, out.output
    assert "echo: Tagline for tea:" in out.stdout


def test_batch_lines_target_the_completions_url(openai_env: TestServer, tmp_path: Path) -> None:
    from chatstep.batch.api import PollSchedule, batch_results, poll_batch, submit_batch

    step = tmp_path / "s.yaml"
    step.write_text(json.dumps(STEP))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"product": f"p{i}"}) + "\n" for i in range(4)))
    job = submit_batch(step, rows)
    created = [r for r in _posts(openai_env) if r.path == "/v1/batches"]
    assert created[0].body["endpoint"] == COMPLETIONS
    uploads = [r for r in _posts(openai_env) if r.path == "/v1/files"]
    assert uploads
    done = poll_batch(job.id, poll=PollSchedule(initial=0.05, factor=1.5, maximum=0.5))
    assert done.status == "completed"
    joined = list(batch_results(job.id))
    assert [row["content"] for row in joined] == [f" echo: Tagline for p{i}:" for i in range(4)]
    assert all(row["ok"] and row["cost"] for row in joined)
