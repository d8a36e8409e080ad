"""Spec checking: bad requests are refused and recorded, bad answers are recorded."""

from __future__ import annotations

import httpx
import openai
import pytest

from chatstep.testing import Respond, TestServer

USER = [{"role": "user", "content": "hi"}]


def test_temperature_out_of_range_is_a_400_naming_the_field(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.allow_spec_violations()
    openai_server.enqueue(Respond(content="not used"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=USER, temperature=5)
    assert caught.value.param == "temperature"
    assert "$.temperature" in caught.value.message
    assert "maximum" in caught.value.message
    (violation,) = openai_server.spec_violations
    assert violation.direction == "request"
    assert violation.schema == "CreateChatCompletionRequest"
    assert violation.location == "$.temperature"
    # A refused request does not use up the script.
    assert openai_server.pending() == 1


def test_missing_model_is_refused(openai_server: TestServer) -> None:
    openai_server.allow_spec_violations()
    response = httpx.post(f"{openai_server.base_url}/chat/completions", json={"messages": USER})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model"
    assert "'model' is a required property" in error["message"]
    assert openai_server.spec_violations[0].location == "$.model"


def test_bad_message_role_and_bad_embedding_input_are_refused(openai_server: TestServer) -> None:
    openai_server.allow_spec_violations()
    url = openai_server.base_url
    bad_role = {"model": "m", "messages": [{"role": "robot", "content": "x"}]}
    assert httpx.post(f"{url}/chat/completions", json=bad_role).status_code == 400
    assert httpx.post(f"{url}/embeddings", json={"model": "m", "input": []}).status_code == 400
    assert httpx.post(f"{url}/moderations", json={"inputs": "x"}).status_code == 400
    assert [v.schema for v in openai_server.spec_violations] == [
        "CreateChatCompletionRequest",
        "CreateEmbeddingRequest",
        "CreateModerationRequest",
    ]


def test_invalid_json_is_refused(openai_server: TestServer) -> None:
    openai_server.allow_spec_violations()
    response = httpx.post(
        f"{openai_server.base_url}/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "parse the JSON body" in response.json()["error"]["message"]
    assert openai_server.spec_violations[0].direction == "request"


def test_nullable_fields_sent_as_null_are_accepted(openai_server: TestServer) -> None:
    body = {
        "model": "m",
        "messages": USER,
        "stop": None,
        "n": None,
        "stream_options": None,
        "max_completion_tokens": None,
        "temperature": None,
        "logit_bias": None,
    }
    response = httpx.post(f"{openai_server.base_url}/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert openai_server.spec_violations == []


def test_a_scripted_body_that_breaks_the_spec_is_recorded(openai_server: TestServer) -> None:
    openai_server.allow_spec_violations()
    openai_server.enqueue(Respond(body={"id": "x", "object": "chat.completion", "choices": []}))
    response = httpx.post(
        f"{openai_server.base_url}/chat/completions", json={"model": "m", "messages": USER}
    )
    assert response.status_code == 200  # sent anyway: the test asked for it
    (violation,) = openai_server.spec_violations
    assert violation.direction == "response"
    assert violation.schema == "CreateChatCompletionResponse"
    assert "required" in violation.message


def test_a_bad_stream_chunk_is_recorded(openai_server: TestServer) -> None:
    openai_server.allow_spec_violations()
    openai_server.enqueue(Respond(body=[{"object": "chat.completion.chunk"}]))
    body = {"model": "m", "messages": USER, "stream": True}
    httpx.post(f"{openai_server.base_url}/chat/completions", json=body)
    (violation,) = openai_server.spec_violations
    assert violation.schema == "CreateChatCompletionStreamResponse"


def test_validate_false_sends_malformed_bodies_silently(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.enqueue(Respond(body="{truncated", validate=False))
    response = httpx.post(
        f"{openai_server.base_url}/chat/completions", json={"model": "m", "messages": USER}
    )
    assert response.text == "{truncated"
    assert openai_server.spec_violations == []


def test_a_non_json_body_is_a_violation_unless_opted_out(openai_server: TestServer) -> None:
    openai_server.allow_spec_violations()
    openai_server.enqueue(Respond(body="{truncated"))
    httpx.post(f"{openai_server.base_url}/chat/completions", json={"model": "m", "messages": USER})
    assert openai_server.spec_violations[0].message == "the response body is not valid JSON"


def test_a_server_without_validation_checks_nothing() -> None:
    with TestServer(validate=False) as server:
        response = httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": "m", "messages": USER, "temperature": 5},
        )
        assert response.status_code == 200
        assert server.spec_violations == []
