"""Every endpoint of the test server, through the official OpenAI SDK and raw HTTP."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from chatstep.testing import TestServer

Assembler = Callable[[list[Any]], dict[str, Any]]
USER = [{"role": "user", "content": "hello there world"}]


def test_chat_completion_default_answer_echoes_the_last_user_message(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second question"},
    ]
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "echo: second question"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 6
    assert completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == 9
    assert openai_server.requests[-1].body["messages"] == messages


def test_chat_text_parts_are_joined(client: openai.OpenAI) -> None:
    content = [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]
    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": content}]
    )
    assert completion.choices[0].message.content == "echo: part one part two"


def test_n_gives_indexed_choices(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=USER, n=3)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]


def test_streaming_reassembles_to_the_non_streamed_answer(
    client: openai.OpenAI, assemble: Assembler
) -> None:
    whole = client.chat.completions.create(model="gpt-4o", messages=USER)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert len(chunks) > 3, "content should arrive in several deltas"
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[-1].choices == []
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assembled = assemble(chunks)
    assert assembled["content"] == whole.choices[0].message.content
    assert assembled["finish_reason"] == "stop"
    assert assembled["usage"] == whole.usage.model_dump() if whole.usage else False


def test_streaming_without_include_usage_sends_no_usage(
    openai_server: TestServer, assemble: Assembler
) -> None:
    body = {"model": "gpt-4o", "messages": USER, "stream": True}
    with httpx.stream("POST", f"{openai_server.base_url}/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert assemble(chunks)["content"] == "echo: hello there world"


def test_embeddings_float_are_deterministic_unit_vectors(client: openai.OpenAI) -> None:
    first = client.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
    )
    again = client.embeddings.create(
        model="text-embedding-3-small", input="alpha", encoding_format="float"
    )
    assert [item.index for item in first.data] == [0, 1]
    vector = first.data[0].embedding
    assert len(vector) == 16
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-9)
    assert again.data[0].embedding == vector
    assert first.data[1].embedding != vector
    assert first.usage.prompt_tokens == 2


def test_embeddings_dimensions_and_base64(openai_server: TestServer, client: openai.OpenAI) -> None:
    url = f"{openai_server.base_url}/embeddings"
    raw = httpx.post(
        url, json={"model": "m", "input": "alpha", "encoding_format": "base64", "dimensions": 8}
    ).json()
    encoded = raw["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = struct.unpack("<8f", base64.b64decode(encoded))
    floats = httpx.post(url, json={"model": "m", "input": "alpha", "dimensions": 8}).json()
    assert decoded == pytest.approx(floats["data"][0]["embedding"], rel=1e-6)
    # The SDK asks for base64 by default and decodes it.
    sdk = client.embeddings.create(model="m", input="alpha", dimensions=8)
    assert sdk.data[0].embedding == pytest.approx(floats["data"][0]["embedding"], rel=1e-6)


def test_embeddings_accept_token_arrays(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="m", input=[[1, 2, 3], [4]], encoding_format="float")
    assert len(result.data) == 2


def test_moderations_flag_listed_words(client: openai.OpenAI) -> None:
    result = client.moderations.create(input=["I will kill them", "a nice day"])
    flagged, clean = result.results
    assert flagged.flagged is True
    assert flagged.categories.violence is True
    assert flagged.category_scores.violence > 0.5
    assert clean.flagged is False
    assert all(0 <= score <= 1 for score in clean.category_scores.model_dump().values())
    assert result.model == "omni-moderation-latest"


def test_moderation_of_a_single_string(client: openai.OpenAI) -> None:
    result = client.moderations.create(input="you idiot", model="omni-moderation-2024-09-26")
    assert len(result.results) == 1
    assert result.results[0].categories.harassment is True
    assert result.model == "omni-moderation-2024-09-26"


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert "gpt-4o-mini" in ids
    model = client.models.retrieve("gpt-4o-mini")
    assert model.id == "gpt-4o-mini"
    assert model.object == "model"


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


def test_unknown_path_is_openai_shaped_404(openai_server: TestServer) -> None:
    response = httpx.post(f"{openai_server.base_url}/completions-v9", json={})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/completions-v9)"
    assert openai_server.requests[-1].path == "/v1/completions-v9"


def test_requests_are_recorded_in_order_with_redacted_credentials(
    openai_server: TestServer,
) -> None:
    url = openai_server.base_url
    key = "sk-secret-abcdefgh1234"
    httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {key}", "X-Trace": "t1"})
    httpx.post(f"{url}/embeddings", json={"model": "m", "input": "x"})
    first, second = openai_server.requests
    assert (first.method, first.path, first.body) == ("GET", "/v1/models", None)
    assert first.headers["x-trace"] == "t1"
    assert first.headers["authorization"] == "Bearer ...1234"
    assert key not in repr(openai_server.requests)
    assert (second.method, second.path) == ("POST", "/v1/embeddings")
    assert second.body == {"model": "m", "input": "x"}


def test_responses_carry_a_request_id(openai_server: TestServer) -> None:
    response = httpx.get(f"{openai_server.base_url}/models")
    assert response.headers["x-request-id"].startswith("req_")


def test_api_key_is_enforced_when_configured() -> None:
    with TestServer(api_key="sk-right-key-000") as server:
        right = openai.OpenAI(base_url=server.base_url, api_key="sk-right-key-000", max_retries=0)
        wrong = openai.OpenAI(base_url=server.base_url, api_key="sk-wrong-key-000", max_retries=0)
        assert right.models.list().data
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.models.list()
        assert caught.value.code == "invalid_api_key"


def test_server_restarts_and_context_manager(openai_server: TestServer) -> None:
    server = TestServer()
    server.start()
    try:
        first_url = server.base_url
        assert httpx.get(f"{first_url}/models").status_code == 200
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{first_url}/models")
    with server:
        assert httpx.get(f"{server.base_url}/models").status_code == 200


def test_the_package_docstring_example_runs() -> None:
    import chatstep.testing

    after = (chatstep.testing.__doc__ or "").split("::\n", 1)[1].splitlines()
    code: list[str] = []
    for line in after:
        if line and not line.startswith("    "):
            break
        code.append(line[4:])
    assert any("TestServer" in line for line in code)
    exec(compile("\n".join(code), "chatstep.testing docstring", "exec"), {})
