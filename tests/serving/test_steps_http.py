"""``steps_app`` served by uvicorn, called with httpx, in front of the test server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatstep.storage.history import History
from chatstep.testing import Delay, Fail, Respond, TestServer

from .conftest import ServedSteps

Serve = Callable[..., ServedSteps]


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event, parsed data) of every server-sent event in ``text``."""
    events = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_a_step_answers_with_its_result(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer
) -> None:
    served = serve_steps(step_dir)
    answer = httpx.post(served.url("/steps/summarize"), json={"text": "long words"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["content"] == "echo: Summarize in one sentence: long words"
    assert result["step_id"] == "summarize"
    assert result["usage"]["total_tokens"] > 0
    assert result["cost"] > 0
    assert result["answered_by"] == {
        "candidate": "step",
        "model": "gpt-4o-mini",
        "base_url": openai_env.base_url,
    }
    assert result["response"]["object"] == "chat.completion"
    assert result["tool_calls"] == []
    (sent,) = openai_env.requests
    assert sent.body["temperature"] == 0
    assert "sk-test" not in answer.text


def test_json_output_and_tool_calls(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer
) -> None:
    served = serve_steps(step_dir)
    openai_env.enqueue(Respond(content='{"urgency": "now", "reply": "Sorry!"}'))
    triage = httpx.post(served.url("/steps/triage"), json={"review": "broken"}).json()
    assert triage["parsed"] == {"urgency": "now", "reply": "Sorry!"}
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
    }
    openai_env.enqueue(Respond(tool_calls=[call]))
    lookup = httpx.post(served.url("/steps/lookup"), json={"query": "x"}).json()
    assert lookup["tool_calls"] == [{"id": "call_1", "name": "lookup", "arguments": {"q": "x"}}]


def test_stream_sends_deltas_then_the_result(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir)
    with httpx.stream(
        "POST", served.url("/steps/summarize?stream=true"), json={"text": "a b c"}
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = sse_events(answer.read().decode())
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result"
    assert kinds.count("delta") >= 2
    text = "".join(data.get("content", "") for kind, data in events if kind == "delta")
    result = events[-1][1]
    assert text == result["content"] == "echo: Summarize in one sentence: a b c"
    assert result["usage"]["completion_tokens"] > 0


def test_stream_sends_tool_call_events(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer
) -> None:
    served = serve_steps(step_dir)
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "y"}'},
    }
    openai_env.enqueue(Respond(tool_calls=[call]))
    answer = httpx.post(served.url("/steps/lookup?stream=1"), json={"query": "y"})
    events = sse_events(answer.text)
    fragments = [data for kind, data in events if kind == "tool_call"]
    assert fragments
    arguments = "".join(
        part["function"].get("arguments", "")
        for fragment in fragments
        for part in fragment["tool_calls"]
    )
    assert json.loads(arguments) == {"q": "y"}
    assert events[-1][0] == "result"
    assert events[-1][1]["tool_calls"][0]["arguments"] == {"q": "y"}


def test_a_stream_failing_before_its_first_delta_gets_a_status(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer
) -> None:
    served = serve_steps(step_dir)
    openai_env.enqueue(Fail(500))
    answer = httpx.post(served.url("/steps/summarize?stream=true"), json={"text": "x"})
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "upstream_unavailable"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "text", "missing_input"),
        ({"text": "x", "colour": "red"}, "colour", "unknown_input"),
        ({"text": "x", "temperature": "hot"}, "temperature", "invalid_input"),
        ({"text": "x", "temperature": 7}, "temperature", "invalid_input"),
    ],
)
def test_bad_inputs_are_422_naming_the_input(
    serve_steps: Serve,
    step_dir: Path,
    openai_env: TestServer,
    body: dict[str, Any],
    param: str,
    code: str,
) -> None:
    served = serve_steps(step_dir)
    answer = httpx.post(served.url("/steps/summarize"), json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert param in error["message"]
    assert openai_env.requests == []  # nothing was sent, nothing paid


def test_every_input_problem_is_listed(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir)
    error = httpx.post(served.url("/steps/summarize"), json={"txt": "x"}).json()["error"]
    assert {(d["param"], d["code"]) for d in error["details"]} == {
        ("txt", "unknown_input"),
        ("text", "missing_input"),
    }


def test_malformed_requests(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir, max_body_bytes=1000)
    post = served.url("/steps/summarize")
    assert httpx.post(post, content=b"[1, 2]").status_code == 400
    assert httpx.post(post, content=b"{not json").status_code == 400
    too_big = httpx.post(post, json={"text": "x" * 2000})
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "body_too_large"
    missing = httpx.post(served.url("/steps/nope"), json={})
    assert missing.status_code == 404
    assert "summarize" in missing.json()["error"]["message"]
    assert httpx.post(served.url("/steps/summarize?stream=maybe"), json={}).status_code == 400
    assert httpx.get(served.url("/elsewhere")).status_code == 404


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Fail(429, retry_after=7), 429, "rate_limit_exceeded"),
        (Fail(500), 503, "upstream_unavailable"),
        (Fail(503), 503, "upstream_unavailable"),
        (Fail(401), 502, "upstream_refused"),
        (Fail(404, code="model_not_found"), 502, "upstream_refused"),
        (Fail(400, code="context_length_exceeded"), 422, "context_length_exceeded"),
    ],
)
def test_upstream_failures_map_to_statuses(
    serve_steps: Serve,
    step_dir: Path,
    openai_env: TestServer,
    fault: Fail,
    status: int,
    code: str,
) -> None:
    served = serve_steps(step_dir)
    openai_env.enqueue(fault)
    answer = httpx.post(served.url("/steps/summarize"), json={"text": "x"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert "Traceback" not in answer.text
    if status == 429:
        assert answer.headers["retry-after"] == "7"


def test_a_429_without_retry_after_still_says_when(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer
) -> None:
    served = serve_steps(step_dir)
    openai_env.enqueue(Fail(429))
    answer = httpx.post(served.url("/steps/summarize"), json={"text": "x"})
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) >= 1


def test_the_cost_cap_is_402(serve_steps: Serve, step_dir: Path, openai_env: TestServer) -> None:
    served = serve_steps(step_dir, max_cost=1e-9)
    answer = httpx.post(served.url("/steps/summarize"), json={"text": "x"})
    assert answer.status_code == 402
    assert answer.json()["error"]["code"] == "budget_exceeded"
    assert openai_env.requests == []


def test_auth_on(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir, api_key="s3rvice-key")
    post = served.url("/steps/summarize")
    assert httpx.post(post, json={"text": "x"}).status_code == 401
    wrong = httpx.post(post, json={"text": "x"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "s3rvice-key" not in wrong.text
    assert httpx.get(served.url("/openapi.json")).status_code == 401
    good = {"Authorization": "Bearer s3rvice-key"}
    assert httpx.post(post, json={"text": "x"}, headers=good).status_code == 200
    document = httpx.get(served.url("/openapi.json"), headers=good).json()
    assert document["security"] == [{"bearer": []}]


def test_auth_off(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir)
    answer = httpx.post(served.url("/steps/summarize"), json={"text": "x"})
    assert answer.status_code == 200


def test_list_and_openapi(serve_steps: Serve, step_dir: Path) -> None:
    from openapi_spec_validator import validate

    served = serve_steps(step_dir)
    listing = {s["id"]: s for s in httpx.get(served.url("/steps")).json()}
    assert sorted(listing) == ["lookup", "summarize", "triage"]
    assert listing["summarize"]["inputs"] == {
        "required": ["text"],
        "optional": ["style", "temperature"],
    }
    assert listing["summarize"]["description"] == "Summarize a text in one sentence."
    assert listing["triage"]["output"] == "json_schema"
    document = httpx.get(served.url("/openapi.json")).json()
    validate(document)
    schemas = document["components"]["schemas"]
    assert schemas["summarizeInputs"]["required"] == ["text"]
    assert schemas["summarizeInputs"]["additionalProperties"] is False
    assert set(schemas["summarizeInputs"]["properties"]) == {"text", "style", "temperature"}
    assert schemas["triageResult"]["properties"]["parsed"]["$ref"] == (
        "#/components/schemas/triageOutput"
    )
    urgency = schemas["triageOutput"]["properties"]["urgency"]["$ref"]
    assert urgency == "#/components/schemas/triageOutput/$defs/urgency"
    operation = document["paths"]["/steps/summarize"]["post"]
    assert operation["summary"] == "Summarize a text in one sentence."
    assert {"200", "422", "429", "503"} <= set(operation["responses"])


def test_the_output_schema_describes_real_answers(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer
) -> None:
    import jsonschema
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    served = serve_steps(step_dir)
    document = httpx.get(served.url("/openapi.json")).json()
    openai_env.enqueue(Respond(content='{"urgency": "later", "reply": "Thanks"}'))
    result = httpx.post(served.url("/steps/triage"), json={"review": "fine"}).json()
    registry = Registry().with_resource("urn:doc", DRAFT202012.create_resource(document))
    schema = {"$ref": "urn:doc#/components/schemas/triageResult"}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(result)
    bad = {**result, "parsed": {"urgency": "someday", "reply": "x"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema, registry=registry).validate(bad)


def _peak(entered: list[float], seconds: float) -> int:
    """Most requests that entered within any ``seconds`` (each is in flight that long)."""
    entered = sorted(entered)
    return max(sum(1 for other in entered if start <= other < start + seconds) for start in entered)


def test_concurrency_is_shared_by_every_step(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer
) -> None:
    # Each upstream answer takes 0.4 s; with --concurrency 2 no 0.4 s window may hold more
    # than two arrivals, across both steps.
    entered: list[float] = []

    def slow(path: str, body: Any) -> Any:
        entered.append(time.monotonic())
        return Delay(0.4)

    openai_env.handler = slow
    served = serve_steps(step_dir, concurrency=2)
    calls = [("summarize", {"text": "a"}), ("lookup", {"query": "b"})] * 3
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(
            pool.map(
                lambda c: httpx.post(served.url(f"/steps/{c[0]}"), json=c[1], timeout=60), calls
            )
        )
    assert [a.status_code for a in answers] == [200] * len(calls)
    assert len(entered) == len(calls)
    assert _peak(entered, 0.4) == 2


def test_a_full_queue_is_503(serve_steps: Serve, step_dir: Path, openai_env: TestServer) -> None:
    openai_env.handler = lambda path, body: Delay(0.5)
    served = serve_steps(step_dir, concurrency=1, max_queue=0)
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.post(served.url("/steps/summarize"), json={"text": "x"}),
                range(4),
            )
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 200
    assert 503 in statuses
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.json()["error"]["code"] == "server_busy"
    assert busy.headers["retry-after"] == "1"


def test_history_records_each_call_with_its_step(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer
) -> None:
    served = serve_steps(step_dir)
    assert httpx.post(served.url("/steps/summarize"), json={"text": "x"}).status_code == 200
    openai_env.enqueue(Fail(500))
    assert httpx.post(served.url("/steps/summarize"), json={"text": "y"}).status_code == 503
    httpx.post(served.url("/steps/lookup"), json={"query": "q"})
    served.stop()  # the app's shutdown flushes the history
    rows = History().recent(limit=10)
    assert sorted(row.step or "" for row in rows) == ["lookup", "summarize", "summarize"]
    failed = [row for row in rows if row.error]
    assert len(failed) == 1
    assert "500" in (failed[0].error or "")


def test_no_history_logs_nothing(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir, history=False)
    httpx.post(served.url("/steps/summarize"), json={"text": "x"})
    served.stop()
    assert History().recent(limit=10) == []


def test_a_stream_failing_midway_ends_with_an_error_event(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer
) -> None:
    from chatstep.testing.faults import mid_stream_error

    served = serve_steps(step_dir)
    openai_env.enqueue(mid_stream_error("Hel"))
    answer = httpx.post(served.url("/steps/summarize?stream=true"), json={"text": "x"})
    assert answer.status_code == 200  # the headers went out with the first delta
    events = sse_events(answer.text)
    assert events[0] == ("delta", {"choice": 0, "content": "Hel"})
    kind, data = events[-1]
    assert kind == "error"
    assert data["status"] == 503
    assert data["error"]["code"] == "upstream_unavailable"
    assert "result" not in [k for k, _ in events]


def test_guard_and_fallbacks(serve_steps: Serve, tmp_path: Path, openai_env: TestServer) -> None:
    guarded = {
        "model": "gpt-4o-mini",
        "prompt": "{{ inputs.text }}",
        "guard": {"input": True, "output": False},
        "max_retries": 0,
        "fallbacks": [{"model": "gpt-4o"}],
    }
    served = serve_steps({"reply": guarded})
    flagged = httpx.post(served.url("/steps/reply"), json={"text": "I will kill you"})
    assert flagged.status_code == 422
    assert flagged.json()["error"]["code"] == "input_flagged"
    assert "violence" in flagged.json()["error"]["message"]
    openai_env.enqueue(Fail(503))
    answer = httpx.post(served.url("/steps/reply"), json={"text": "tea?"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["answered_by"]["candidate"] == "fallbacks[0]"
    assert result["answered_by"]["model"] == "gpt-4o"
    assert len(result["fallback_errors"]) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_stops_the_upstream_call(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer, stream: bool
) -> None:
    # The upstream keeps the connection busy for a minute; the client gives up after 0.5 s.
    # Its slot (the only one) comes back and the upstream request is abandoned.
    from chatstep.testing import Trickle

    openai_env.enqueue(Trickle(seconds=60, interval=0.05))
    served = serve_steps(step_dir, concurrency=1, max_queue=0)
    url = served.url("/steps/summarize" + ("?stream=true" if stream else ""))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={"text": "x"}, timeout=0.5)
    deadline = time.monotonic() + 30
    while openai_env.stats.trickles_cut < 1:
        assert time.monotonic() < deadline, "the upstream call went on after the hang-up"
        time.sleep(0.02)
    while (answer := httpx.post(url, json={"text": "y"})).status_code == 503:
        assert time.monotonic() < deadline, "the slot never came back"
    assert answer.status_code == 200


def test_the_app_serves_again_after_its_shutdown(step_dir: Path, openai_env: TestServer) -> None:
    from starlette.testclient import TestClient

    from chatstep import steps_app

    app = steps_app(step_dir, concurrency=2, rpm=600)
    for text in ("one", "two"):  # each `with` runs the app's lifespan on a new event loop
        with TestClient(app) as client:
            answer = client.post("/steps/summarize", json={"text": text})
            assert answer.status_code == 200, answer.text
