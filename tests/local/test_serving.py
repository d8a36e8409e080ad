"""``create_serving_app(LocalBackend())`` over real HTTP, driven by the official OpenAI client."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from chatstep.backends.local.backend import LocalBackend

pytestmark = pytest.mark.local

CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "population": {"type": "integer", "minimum": 0},
    },
    "required": ["city", "population"],
    "additionalProperties": False,
}
LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_city",
        "description": "Facts about a city",
        "parameters": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "facts": {"type": "array", "items": {"type": "string", "enum": ["size", "age"]}},
            },
            "required": ["name", "facts"],
            "additionalProperties": False,
        },
    },
}
GREEDY: dict[str, Any] = {"model": "gemma-3-270m", "temperature": 0, "seed": 3}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_chat_over_http_equals_the_in_process_answer(
    client: openai.OpenAI, backend: LocalBackend, spec: Any
) -> None:
    params = {**GREEDY, "messages": user("Name a river."), "max_tokens": 12}
    served = client.chat.completions.with_raw_response.create(**params)
    body = json.loads(served.content)
    assert served.status_code == 200
    assert spec.errors("CreateChatCompletionResponse", body) == []
    in_process = asyncio.run(backend.complete(params, timeout=600)).body
    assert body["choices"] == in_process["choices"]
    assert body["usage"] == in_process["usage"]


def test_stream_over_http_assembles_to_the_answer(client: openai.OpenAI) -> None:
    params = {**GREEDY, "messages": user("Name a mountain."), "max_tokens": 20}
    whole = client.chat.completions.create(**params)
    parts = list(
        client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(part.choices[0].delta.content or "" for part in parts if part.choices)
    assert text == whole.choices[0].message.content
    assert parts[0].choices[0].delta.role == "assistant"
    assert parts[-1].usage is not None
    assert parts[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_raw_stream_is_server_sent_events_ending_in_done(served: Any, spec: Any) -> None:
    body = {**GREEDY, "messages": user("Hi"), "max_tokens": 4, "stream": True}
    with httpx.stream(
        "POST", f"{served.base_url}/chat/completions", json=body, timeout=120
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        assert event.startswith("data: ")
        assert spec.errors("CreateChatCompletionStreamResponse", json.loads(event[6:])) == []


def test_json_schema_over_http(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        **GREEDY,
        messages=user("Give a city and its population as JSON."),
        max_tokens=60,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
        },
    )
    assert answer.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), CITY_SCHEMA)


def test_forced_tool_call_over_http(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        **GREEDY,
        messages=user("Tell me how big and old Kyoto is."),
        max_tokens=80,
        tools=[LOOKUP_TOOL],
        tool_choice={"type": "function", "function": {"name": "lookup_city"}},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "lookup_city"
    jsonschema.validate(json.loads(call.function.arguments), LOOKUP_TOOL["function"]["parameters"])


def test_embeddings_over_http(client: openai.OpenAI, local_model: Any) -> None:
    result = client.embeddings.create(model="local", input=["one", "two", "three"])
    assert [item.index for item in result.data] == [0, 1, 2]
    assert all(len(item.embedding) == local_model.n_embd for item in result.data)
    assert result.usage.prompt_tokens > 0


def test_models_over_http(client: openai.OpenAI) -> None:
    names = ["gemma-3-270m", "smollm2-135m-instruct"]
    assert [model.id for model in client.models.list()] == names
    assert client.models.retrieve("gemma-3-270m").owned_by == "chatstep-local"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_context_overflow_is_a_400_naming_both_sizes(
    client: openai.OpenAI, local_model: Any
) -> None:
    n_ctx = local_model.n_ctx
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(**GREEDY, messages=user("word " * (n_ctx + 10)))
    assert error.value.status_code == 400
    assert error.value.code == "context_length_exceeded"
    assert error.value.param == "messages"
    assert f"context window is {n_ctx} tokens" in error.value.message
    assert "the prompt is" in error.value.message


def test_errors_keep_their_status_and_openai_shape(
    client: openai.OpenAI, served: Any, spec: Any
) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=user("hi"))
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as moderation:
        client.moderations.create(input="hello")
    assert moderation.value.status_code == 501
    assert "OpenAI API key" in moderation.value.message

    not_json = httpx.post(f"{served.base_url}/chat/completions", content=b"{nope", timeout=120)
    assert not_json.status_code == 400
    assert spec.errors("ErrorResponse", not_json.json()) == []
    no_route = httpx.get(f"{served.base_url}/nowhere", timeout=120)
    assert no_route.status_code == 404
    assert spec.errors("ErrorResponse", no_route.json()) == []


def test_two_concurrent_http_requests_are_both_right(client: openai.OpenAI) -> None:
    prompts = ["Count to five.", "Name four animals."]
    alone = [
        client.chat.completions.create(**GREEDY, messages=user(p), max_tokens=12)
        .choices[0]
        .message.content
        for p in prompts
    ]
    together: dict[int, str | None] = {}

    def ask(index: int) -> None:
        answer = client.chat.completions.create(
            **GREEDY, messages=user(prompts[index]), max_tokens=12
        )
        together[index] = answer.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [together[0], together[1]] == alone


def test_a_client_leaving_mid_stream_frees_the_model(
    client: openai.OpenAI, local_model: Any, tokens_once_idle: Any
) -> None:
    ends = {local_model.llama.token_eos(), *local_model.tokenize("<end_of_turn>", special=True)}
    prompt = user("Tell a long story.")
    prompt_tokens = client.chat.completions.create(**GREEDY, messages=prompt, max_tokens=1)
    stream = client.chat.completions.create(
        **GREEDY,
        messages=prompt,
        max_tokens=400,
        logit_bias={str(token): -100 for token in ends},
        stream=True,
    )
    for received, _ in enumerate(stream):
        if received == 2:
            break
    stream.close()  # the client disconnects
    assert tokens_once_idle() < prompt_tokens.usage.prompt_tokens + 200
    after = client.chat.completions.create(**GREEDY, messages=user("Hi"), max_tokens=3)
    assert after.choices[0].finish_reason in ("stop", "length")
