"""Issue 10: what OpenAI-compatible servers really send, over real HTTP, never a silent success.

Each kind of the issue has its example here, through ``AsyncRunner``/``run_step``, ``chatstep run``,
``map`` (the row fails and stays retryable) and flows.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from chatstep import (
    APITimeoutError,
    AsyncRunner,
    BadRequestError,
    InternalServerError,
    InvalidJSONError,
    InvalidResponseError,
    RateLimitError,
    RetryPolicy,
    StepResult,
    run_step,
)
from chatstep.cli.app import app
from chatstep.flows.api import run_flow
from chatstep.mapping.run import map_step
from chatstep.testing import Fail, Respond, TestServer, Trickle
from chatstep.testing.faults import (
    chat_completion,
    chunks_of,
    empty_choices,
    error_in_success,
    fenced_json,
    mid_stream_error,
    object_arguments,
    parallel_calls_at_one_index,
)

FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02)
STEP: dict[str, Any] = {"model": "gpt-4o-mini", "prompt": "x"}
FINAL = {**STEP, "max_retries": 0}
cli = CliRunner()


def _run(step: dict[str, Any], **kwargs: Any) -> StepResult:
    async def main() -> StepResult:
        async with AsyncRunner(retry=FAST, history=False) as runner:
            result = await runner.run(step, **kwargs)
            assert isinstance(result, StepResult)
            return result

    return asyncio.run(main())


def _chat_requests(server: TestServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


# -- 1. a 2xx body that is not a completion -------------------------------------------------------


def test_200_error_object_is_the_server_error_it_names(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(error_in_success("overloaded", code="overloaded", type="server_error"))
    with pytest.raises(InternalServerError) as caught:
        run_step(FINAL)
    assert caught.value.code == "overloaded"
    assert caught.value.body is not None
    assert caught.value.body["message"] == "overloaded"


def test_200_error_with_code_502_is_retried_like_a_502(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(error_in_success("Provider returned error", code=502, type=None))
    openai_env.enqueue(Respond(content="ok"))
    result = _run(STEP)
    assert result.content == "ok"
    assert result.attempts == 2
    openai_env.enqueue(error_in_success("Provider returned error", code=502, type=None))
    with pytest.raises(InternalServerError) as caught:
        run_step(FINAL)
    assert caught.value.status_code == 502


def test_200_rate_limit_object_is_a_rate_limit_error(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(error_in_success("slow down", code="rate_limit_exceeded", type="requests"))
    with pytest.raises(RateLimitError):
        run_step(FINAL)


def test_empty_choices_is_an_invalid_response_and_retried(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(empty_choices())
    with pytest.raises(InvalidResponseError, match="no choices"):
        run_step(FINAL)
    openai_env.enqueue(empty_choices(), Respond(content="second"))
    assert _run(STEP).content == "second"


def test_a_choice_without_message_is_invalid(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    body = chat_completion({"content": "x"})
    del body["choices"][0]["message"]
    openai_env.enqueue(Respond(body=body, validate=False))
    with pytest.raises(InvalidResponseError, match=r"choices\[0\] has no message"):
        run_step(FINAL)


def test_embeddings_and_moderations_need_their_collections(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(
        Respond(body={"object": "list", "data": []}, validate=False), path="embeddings"
    )
    with pytest.raises(InvalidResponseError, match="no data"):
        run_step(
            {"type": "embedding", "model": "text-embedding-3-small", "input": "x", "max_retries": 0}
        )
    openai_env.enqueue(
        Respond(body={"id": "modr-1", "model": "m"}, validate=False), path="moderations"
    )
    with pytest.raises(InvalidResponseError, match="no results"):
        run_step(
            {
                "type": "moderation",
                "model": "omni-moderation-latest",
                "input": "x",
                "max_retries": 0,
            }
        )


def test_bad_answers_are_never_cached(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(empty_choices())
    step = {**FINAL, "cache": True}
    with pytest.raises(InvalidResponseError):
        run_step(step)
    assert run_step(step).content == "echo: x"
    assert run_step(step).cached
    assert _chat_requests(openai_env) == 2


def test_a_stream_without_any_choice_is_invalid(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    only_usage = {**chunks_of([{"delta": {}}])[0], "choices": [], "usage": {"total_tokens": 1}}
    openai_env.enqueue(Respond(body=[only_usage], validate=False))
    with pytest.raises(InvalidResponseError, match="without any choice"):
        run_step(FINAL, stream=True)


def test_the_cli_exits_5_on_a_200_error(openai_env: TestServer, tmp_path: Path) -> None:
    openai_env.allow_spec_violations()
    step = tmp_path / "s.yaml"
    step.write_text(yaml.safe_dump(FINAL))
    openai_env.enqueue(error_in_success())
    out = cli.invoke(app, ["run", str(step)])
    assert out.exit_code == 5, out.output
    assert "InternalServerError" in out.output or "overloaded" in out.output
    assert "Traceback" not in out.output


def test_map_rows_with_200_errors_fail_and_retry_failed_repairs_them(
    openai_env: TestServer, tmp_path: Path
) -> None:
    openai_env.allow_spec_violations()

    def broken_odd_rows(path: str, body: Any) -> Any:
        row = int(str(body["messages"][-1]["content"]).split()[1])
        if row % 3 == 0:
            return error_in_success(code=502, type=None)
        return empty_choices() if row % 3 == 1 else None

    openai_env.handler = broken_odd_rows
    step = {"model": "gpt-4o-mini", "prompt": "row {{ inputs.id }}", "max_retries": 0}
    rows = [{"id": i} for i in range(9)]
    journal = tmp_path / "run.journal"
    first = map_step(step, rows, journal=journal, history=False)
    assert [r["error"] is None for r in first] == [i % 3 == 2 for i in range(9)]
    assert "InternalServerError" in first[0]["error"]
    assert "InvalidResponseError" in first[1]["error"]
    assert first.stats.failed == 6
    openai_env.handler = None
    again = map_step(step, rows, journal=journal, retry_failed=True, history=False)
    assert all(r["error"] is None for r in again)
    assert [r["content"] for r in again] == [f"echo: row {i}" for i in range(9)]


def test_map_with_20_percent_broken_answers_gets_every_row_right(serve_faults: TestServer) -> None:
    step = {"model": "gpt-4o-mini", "prompt": "row {{ inputs.id }}"}
    out = map_step(step, [{"id": i} for i in range(200)], concurrency=16, retry=FAST, history=False)
    assert [r["content"] for r in out] == [f"echo: row {i}" for i in range(200)]
    faults = serve_faults.stats.faults
    assert faults.get("error_200", 0) > 0
    assert faults.get("empty_answer", 0) > 0


@pytest.fixture
def serve_faults(monkeypatch: pytest.MonkeyPatch) -> Any:
    with TestServer(fault_rate=0.2, faults=("error_200", "empty_answer"), seed=7) as server:
        server.allow_spec_violations()
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-wire-0000-fake")
        yield server


def test_a_flow_task_fails_on_a_200_error(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(error_in_success(), error_in_success())
    flow = {
        "id": "f",
        "tasks": [
            {
                "id": "ask",
                "type": "chatstep.chat",
                "model": "gpt-4o-mini",
                "prompt": "hi",
                "retry": {"max_retries": 1, "interval": 0.01},
            }
        ],
    }
    with pytest.raises(InternalServerError):
        run_flow(flow)
    assert _chat_requests(openai_env) == 2


# -- 3. an error object inside a stream ------------------------------------------------------------


def test_a_stream_error_before_delivery_is_retried(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(mid_stream_error(), Respond(content="whole"))
    result = _run(STEP, stream=True)
    assert result.content == "whole"
    assert result.attempts == 2


def test_a_stream_error_after_delivery_is_typed_and_keeps_its_body(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(mid_stream_error("Hel"))
    seen: list[str] = []
    with pytest.raises(InternalServerError) as caught:
        run_step(STEP, on_delta=lambda d: seen.append(d.content or ""))
    assert "".join(seen) == "Hel"
    assert caught.value.code == "overloaded"
    assert caught.value.body is not None
    assert caught.value.body["type"] == "server_error"
    assert _chat_requests(openai_env) == 1  # delivered text is never repeated by a retry


def test_vllm_gateway_timeout_event_is_a_504(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(mid_stream_error(vllm=True))
    with pytest.raises(InternalServerError) as caught:
        run_step(FINAL, stream=True)
    assert caught.value.status_code == 504
    assert caught.value.body is not None
    assert caught.value.body["type"] == "GatewayTimeout"


def test_stream_error_fault_kind_is_retried_in_a_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    with TestServer(fault_rate=1.0, faults=("stream_error",)) as server:
        server.allow_spec_violations()
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-wire-0000-fake")
        with pytest.raises(InternalServerError):
            _run({**STEP, "max_retries": 2}, stream=True)
        assert server.stats.faults["stream_error"] == 3


# -- 2a. parallel tool calls at one index ----------------------------------------------------------


def test_parallel_calls_at_index_0_stay_two_calls(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    calls = [
        ("call_a", "get_weather", {"city": "Oslo"}),
        ("call_b", "get_weather", {"city": "Lima"}),
    ]
    openai_env.enqueue(parallel_calls_at_one_index(calls))
    streamed = run_step(STEP, stream=True)
    openai_env.enqueue(parallel_calls_at_one_index(calls, stream=False))
    whole = run_step(STEP)
    assert isinstance(streamed, StepResult)
    assert isinstance(whole, StepResult)
    got = [(c.id, c.name, c.arguments) for c in streamed.tool_calls]
    assert got == [(cid, name, args) for cid, name, args in calls]
    assert streamed.message["tool_calls"] == whole.message["tool_calls"]


def test_reasoning_content_deltas_are_kept(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    deltas = [
        {"delta": {"role": "assistant", "reasoning_content": "Think"}},
        {"delta": {"reasoning_content": "ing.", "reasoning": "r"}},
        {"delta": {"content": "Answer", "reasoning_content": None}},
        {"delta": {}, "finish_reason": "stop"},
    ]
    openai_env.enqueue(Respond(body=chunks_of(deltas), validate=False))
    result = run_step(STEP, stream=True)
    assert result.message["reasoning_content"] == "Thinking."
    assert result.message["reasoning"] == "r"
    assert result.content == "Answer"


# -- 4. tool-call arguments that are not a JSON string --------------------------------------------


def test_object_arguments_are_accepted(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(object_arguments("get_weather", {"city": "Oslo"}))
    result = run_step(STEP)
    assert isinstance(result, StepResult)
    (call,) = result.tool_calls
    assert call.arguments == {"city": "Oslo"}
    assert json.loads(call.raw_arguments) == {"city": "Oslo"}
    assert result.response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == {
        "city": "Oslo"
    }


def test_empty_arguments_are_an_empty_object_and_others_invalid(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    openai_env.enqueue(object_arguments("ping", ""), object_arguments("ping", 42))
    assert run_step(STEP).tool_calls[0].arguments == {}
    result = run_step(STEP)
    with pytest.raises(InvalidJSONError, match=r"tool_calls\[0\] \(ping\)"):
        result.tool_calls  # noqa: B018


def test_legacy_function_call_with_object_arguments(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    body = chat_completion(
        {"function_call": {"name": "f", "arguments": {"a": 1}}}, finish_reason="function_call"
    )
    openai_env.enqueue(Respond(body=body, validate=False))
    assert run_step(STEP).tool_calls[0].arguments == {"a": 1}


def test_cli_prints_object_arguments_without_a_traceback(
    openai_env: TestServer, tmp_path: Path
) -> None:
    openai_env.allow_spec_violations()
    step = tmp_path / "s.yaml"
    step.write_text(yaml.safe_dump(STEP))
    openai_env.enqueue(object_arguments("get_weather", {"city": "Oslo"}))
    out = cli.invoke(app, ["run", str(step)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    openai_env.enqueue(object_arguments("get_weather", [1]))
    out = cli.invoke(app, ["run", str(step)])
    assert out.exit_code == 6, out.output
    assert "Traceback" not in out.output


# -- 5. JSON output in a Markdown fence ------------------------------------------------------------

JSON_STEP = {**STEP, "response_format": {"type": "json_object"}}


@pytest.mark.parametrize("language", ["json", ""])
def test_fenced_json_parses_and_the_response_keeps_the_fence(
    openai_env: TestServer, language: str
) -> None:
    openai_env.enqueue(fenced_json({"a": 1}, language=language))
    result = run_step(JSON_STEP)
    assert result.parsed == {"a": 1}
    assert result.content is not None
    assert result.content.startswith("```")


def test_fenced_json_is_validated_against_the_schema(openai_env: TestServer) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    openai_env.enqueue(fenced_json({"a": 2}))
    assert run_step({**STEP, "response_format": fmt}).parsed == {"a": 2}


def test_prose_around_a_fence_is_still_invalid_json(openai_env: TestServer) -> None:
    openai_env.enqueue(fenced_json({"a": 1}, prose="Here you go:\n"))
    with pytest.raises(InvalidJSONError):
        run_step(JSON_STEP)


# -- 7. the timeout is per attempt, in total -------------------------------------------------------


def _wait_for_cut(server: TestServer) -> int:
    # The server notices the hang-up at its next write (every 0.5 s): wait for that, bounded.
    deadline = time.monotonic() + 30
    while server.stats.trickles_cut == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.stats.trickles_cut


def test_a_trickled_body_cannot_stretch_the_timeout(openai_env: TestServer) -> None:
    openai_env.enqueue(Trickle(6, 0.5))
    with pytest.raises(APITimeoutError, match="in total"):
        run_step({**FINAL, "timeout": 2})
    assert _wait_for_cut(openai_env) == 1  # the client hung up before the trickle ended


def test_a_stream_of_keep_alives_times_out_on_the_gap(openai_env: TestServer) -> None:
    openai_env.enqueue(Trickle(6, 0.5))
    with pytest.raises(APITimeoutError, match="no event"):
        run_step({**FINAL, "timeout": 2}, stream=True)
    assert _wait_for_cut(openai_env) == 1


def test_stream_timeout_caps_a_stream_in_total(openai_env: TestServer) -> None:
    openai_env.enqueue(Trickle(6, 0.5))
    with pytest.raises(APITimeoutError, match="stream_timeout"):
        run_step({**FINAL, "timeout": 30, "stream_timeout": 1}, stream=True)
    assert _wait_for_cut(openai_env) == 1


# -- 8. x-should-retry -----------------------------------------------------------------------------


def test_x_should_retry_true_retries_a_final_status(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(400, headers={"x-should-retry": "true"}), Respond(content="ok"))
    assert _run(STEP).attempts == 2


def test_x_should_retry_false_stops_a_retryable_status(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(503, headers={"x-should-retry": "false"}), Respond(content="never"))
    with pytest.raises(InternalServerError) as caught:
        _run(STEP)
    assert caught.value.should_retry is False
    assert _chat_requests(openai_env) == 1


def test_a_400_without_the_header_is_final(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(400))
    with pytest.raises(BadRequestError):
        _run(STEP)


def test_history_logs_a_200_error_as_a_failure(openai_env: TestServer, tmp_path: Path) -> None:
    from chatstep.storage.history import History

    openai_env.allow_spec_violations()
    history = History(tmp_path / "h.db")
    openai_env.enqueue(error_in_success(), empty_choices())

    async def main() -> None:
        async with AsyncRunner(retry=FAST, history=history) as runner:
            for _ in range(2):
                with pytest.raises((InternalServerError, InvalidResponseError)):
                    await runner.run(FINAL)

    asyncio.run(main())
    entries = history.recent()
    assert len(entries) == 2
    assert all(e.error is not None and e.response is None for e in entries)


def test_x_should_retry_false_on_a_200_error_body_is_final(openai_env: TestServer) -> None:
    openai_env.allow_spec_violations()
    body = {"error": {"message": "upstream down", "code": 502}}
    no_retry = Respond(body=body, headers={"x-should-retry": "false"}, validate=False)
    openai_env.enqueue(no_retry, Respond(content="never"))
    with pytest.raises(InternalServerError) as caught:
        _run(STEP)
    assert caught.value.should_retry is False
    assert caught.value.request_id is not None
    assert _chat_requests(openai_env) == 1
