"""Scripted answers: Respond, Fail, Delay, Drop, per-path queues and the handler."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from chatstep.testing import Delay, Drop, Fail, Respond, TestServer

Assembler = Callable[[list[Any]], dict[str, Any]]
USER = [{"role": "user", "content": "hi"}]


def chat(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.create(model="gpt-4o-mini", messages=USER, **extra)


def test_respond_content_builds_a_full_completion(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.enqueue(Respond(content="scripted answer"), Respond(content="second"))
    first = chat(client)
    assert first.choices[0].message.content == "scripted answer"
    assert first.choices[0].finish_reason == "stop"
    assert first.model == "gpt-4o-mini"
    assert first.id.startswith("chatcmpl-")
    assert first.system_fingerprint
    assert first.usage is not None
    assert first.usage.completion_tokens == 2
    assert chat(client).choices[0].message.content == "second"
    # The queue is used up: the default answer again.
    assert chat(client).choices[0].message.content == "echo: hi"


def test_respond_tool_calls_get_ids_and_type(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.enqueue(
        Respond(
            tool_calls=[
                {"name": "get_weather", "arguments": {"city": "Paris"}},
                {"name": "get_time", "arguments": '{"tz": "UTC"}'},
            ]
        )
    )
    message = chat(client).choices
    assert message[0].finish_reason == "tool_calls"
    calls = message[0].message.tool_calls
    assert calls is not None
    assert [call.type for call in calls] == ["function", "function"]
    assert calls[0].id.startswith("call_")
    assert calls[0].id != calls[1].id
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert calls[1].function.arguments == '{"tz": "UTC"}'
    assert message[0].message.content is None


@pytest.mark.parametrize(
    "item",
    [
        Respond(content="a longer scripted answer with several words"),
        Respond(
            content="let me check",
            tool_calls=[
                {"name": "lookup", "arguments": {"query": "weather in Paris", "days": 3}},
                {"name": "second_tool", "arguments": {}},
            ],
        ),
        Respond(function_call={"name": "legacy", "arguments": {"x": [1, 2, 3]}}),
        Respond(refusal="I cannot help with that."),
        Respond(content="cut short", finish_reason="length"),
    ],
    ids=["content", "tool-calls", "function-call", "refusal", "length"],
)
def test_a_streamed_item_reassembles_to_the_same_answer(
    client: openai.OpenAI, openai_server: TestServer, assemble: Assembler, item: Respond
) -> None:
    openai_server.enqueue(item, item)
    whole = chat(client).choices[0]
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    streamed = assemble(chunks)
    assert streamed["content"] == whole.message.content
    assert streamed["refusal"] == whole.message.refusal
    assert streamed["finish_reason"] == whole.finish_reason
    # Ids are fresh per completion; everything else must match.
    expected_calls = [call.model_dump() for call in whole.message.tool_calls or []]
    for call in [*expected_calls, *(streamed["tool_calls"] or [])]:
        assert call.pop("id").startswith("call_")
    assert (streamed["tool_calls"] or []) == expected_calls
    expected_function = whole.message.function_call
    assert streamed["function_call"] == (
        expected_function.model_dump() if expected_function else None
    )


def test_streamed_tool_call_ids_and_names_come_once(
    openai_server: TestServer, client: openai.OpenAI
) -> None:
    openai_server.enqueue(Respond(tool_calls=[{"name": "f", "arguments": {"a": "x" * 30}}]))
    parts = [
        part
        for chunk in chat(client, stream=True)
        for choice in chunk.choices
        for part in choice.delta.tool_calls or []
    ]
    assert len(parts) > 2, "arguments should be split across deltas"
    assert parts[0].id
    assert parts[0].function
    assert parts[0].function.name == "f"
    assert all(part.id is None for part in parts[1:])
    assert all(part.function is None or part.function.name is None for part in parts[1:])
    assert {part.index for part in parts} == {0}


def test_respond_choices_usage_and_headers(openai_server: TestServer) -> None:
    openai_server.enqueue(
        Respond(
            choices=["first", {"content": "second", "finish_reason": "length"}],
            usage={"prompt_tokens": 7, "completion_tokens": 11},
            headers={"x-custom": "yes"},
        )
    )
    response = httpx.post(
        f"{openai_server.base_url}/chat/completions", json={"model": "m", "messages": USER}
    )
    body = response.json()
    assert response.headers["x-custom"] == "yes"
    assert [c["message"]["content"] for c in body["choices"]] == ["first", "second"]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][1]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}


def test_respond_finish_reason_alone_keeps_the_default_message(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.enqueue(Respond(finish_reason="content_filter"))
    choice = chat(client).choices[0]
    assert choice.message.content == "echo: hi"
    assert choice.finish_reason == "content_filter"


def test_respond_body_is_sent_as_is(openai_server: TestServer) -> None:
    body = {
        "id": "chatcmpl-raw",
        "object": "chat.completion",
        "created": 1,
        "model": "raw-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "raw", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    openai_server.enqueue(Respond(body=body))
    answer = httpx.post(
        f"{openai_server.base_url}/chat/completions", json={"model": "m", "messages": USER}
    ).json()
    assert answer == body


def test_respond_list_body_streams_raw_chunks(openai_server: TestServer) -> None:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "raw"}, "finish_reason": None}],
    }
    openai_server.enqueue(Respond(body=[chunk, chunk]))
    body = {"model": "m", "messages": USER, "stream": True}
    response = httpx.post(f"{openai_server.base_url}/chat/completions", json=body)
    events = [line for line in response.text.split("\n\n") if line]
    assert events == [f"data: {json.dumps(chunk)}"] * 2 + ["data: [DONE]"]


def test_handler_dict_answers_other_paths(openai_server: TestServer) -> None:
    vector = {"object": "embedding", "index": 0, "embedding": [0.5, 0.5]}
    openai_server.enqueue(
        Respond(
            body={
                "object": "list",
                "data": [vector],
                "model": "m",
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        ),
        path="/v1/embeddings",
    )
    openai_server.enqueue(Fail(500), path="embeddings")
    url = f"{openai_server.base_url}/embeddings"
    assert httpx.post(url, json={"model": "m", "input": "x"}).json()["data"] == [vector]
    assert httpx.post(url, json={"model": "m", "input": "x"}).status_code == 500
    assert (
        len(httpx.post(url, json={"model": "m", "input": "x"}).json()["data"][0]["embedding"]) == 16
    )
    assert openai_server.pending() == 0


def test_fail_sends_an_openai_error_with_retry_headers(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.enqueue(Fail(429, retry_after=2, retry_after_ms=1500))
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client)
    error = caught.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.response.headers["retry-after"] == "2"
    assert error.response.headers["retry-after-ms"] == "1500"
    assert error.body == {
        "message": "Rate limit reached. Please try again later.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_fail_statuses_map_to_sdk_errors(
    client: openai.OpenAI, openai_server: TestServer, status: int, exception: type[Exception]
) -> None:
    openai_server.enqueue(Fail(status, message="custom words", code="my_code", type="my_type"))
    with pytest.raises(exception) as caught:
        chat(client)
    assert isinstance(caught.value, openai.APIStatusError)
    assert caught.value.status_code == status
    assert caught.value.body == {
        "message": "custom words",
        "type": "my_type",
        "param": None,
        "code": "my_code",
    }


def test_delay_makes_the_client_time_out(client: openai.OpenAI, openai_server: TestServer) -> None:
    openai_server.enqueue(Delay(5, then=Respond(content="too late")))
    with pytest.raises(openai.APITimeoutError):
        chat(client, timeout=0.3)


def test_delay_then_answers(client: openai.OpenAI, openai_server: TestServer) -> None:
    openai_server.enqueue(Delay(0.05, then=Fail(503)), Delay(0.05))
    with pytest.raises(openai.InternalServerError):
        chat(client)
    assert chat(client).choices[0].message.content == "echo: hi"


@pytest.mark.parametrize("reset", [False, True])
def test_drop_is_a_connection_error(
    client: openai.OpenAI, openai_server: TestServer, reset: bool
) -> None:
    openai_server.enqueue(Drop(reset=reset))
    with pytest.raises(openai.APIConnectionError) as caught:
        chat(client)
    assert not isinstance(caught.value, openai.APITimeoutError)
    # The server is still fine afterwards.
    assert chat(client).choices[0].message.content == "echo: hi"


def test_drop_with_raw_httpx(openai_server: TestServer) -> None:
    openai_server.enqueue(Drop())
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            f"{openai_server.base_url}/chat/completions", json={"model": "m", "messages": USER}
        )


def test_handler_answers_when_the_queue_is_empty(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    seen: list[tuple[str, Any]] = []

    def handler(path: str, body: Any) -> Any:
        seen.append((path, body))
        text = body["messages"][-1]["content"]
        if text == "fail":
            return Fail(503)
        if text == "raw":
            return Respond(content="from handler")
        return None

    openai_server.handler = handler
    openai_server.enqueue(Respond(content="queued first"))
    assert chat(client).choices[0].message.content == "queued first"
    assert seen == []
    raw = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "raw"}])
    assert raw.choices[0].message.content == "from handler"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "fail"}])
    assert chat(client).choices[0].message.content == "echo: hi"
    assert [path for path, _ in seen] == ["/v1/chat/completions"] * 3


def test_reset_clears_script_requests_violations_and_handler(openai_server: TestServer) -> None:
    openai_server.enqueue(Respond(content="never used"))
    openai_server.handler = lambda path, body: None
    httpx.get(f"{openai_server.base_url}/models")
    openai_server.reset()
    assert openai_server.pending() == 0
    assert openai_server.requests == []
    assert openai_server.spec_violations == []
    assert openai_server.handler is None


def test_a_broken_script_item_is_a_500_and_a_violation(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.enqueue(Respond(tool_calls=[{"arguments": {}}]))
    with pytest.raises(openai.InternalServerError) as caught:
        chat(client)
    assert "name" in str(caught.value)
    assert len(openai_server.spec_violations) == 1
    openai_server.allow_spec_violations()


def test_enqueue_rejects_non_items(openai_server: TestServer) -> None:
    with pytest.raises(TypeError, match="Respond, Fail, Delay, Drop"):
        openai_server.enqueue("just a string")
