"""Default answers: deterministic, shaped by the request, and valid against the spec."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatstep.testing import TestServer
from chatstep.testing.completions import stream_chunks
from chatstep.testing.instances import instance_for
from chatstep.testing.spec import SpecValidator
from chatstep.testing.synth import default_chat_completion, default_embeddings, default_moderation

USER = [{"role": "user", "content": "what is the weather like today"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 12},
        "age": {"type": "integer", "exclusiveMinimum": 17},
        "score": {"type": "number", "minimum": 0.5, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3, "uniqueItems": True},
        "kind": {"const": "person"},
        "nickname": {"type": ["string", "null"]},
        "address": {"$ref": "#/$defs/address"},
        "pet": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/pet"}]},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "score", "tags", "kind", "nickname", "address", "pet", "active"],
    "additionalProperties": False,
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "string", "maxLength": 3}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        },
        "pet": {"type": "object", "properties": {"species": {"enum": ["cat", "dog"]}}},
    },
}

REQUESTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "n": {"n": 3},
    "max_tokens": {"max_tokens": 2},
    "max_completion_tokens": {"max_completion_tokens": 3},
    "stop": {"stop": ["weather"]},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
    "json_object": {"response_format": {"type": "json_object"}},
    "json_schema": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "person", "strict": True, "schema": PERSON_SCHEMA},
        }
    },
    "tool_required": {"tools": [WEATHER_TOOL], "tool_choice": "required"},
    "tool_named": {
        "tools": [{"type": "function", "function": {"name": "noop"}}, WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "tool_auto": {"tools": [WEATHER_TOOL], "tool_choice": "auto"},
    "functions": {
        "functions": [{"name": "lookup", "parameters": {"type": "object", "properties": {}}}],
        "function_call": {"name": "lookup"},
    },
    "service_tier": {"service_tier": "auto"},
}


@pytest.fixture(scope="module")
def validator() -> SpecValidator:
    return SpecValidator()


@pytest.mark.parametrize("name", list(REQUESTS))
def test_default_chat_answers_and_their_chunks_match_the_spec(
    validator: SpecValidator, name: str
) -> None:
    request = {"model": "gpt-4o", "messages": USER, **REQUESTS[name]}
    assert validator.errors("CreateChatCompletionRequest", request) == []
    completion = default_chat_completion(request, "chatcmpl-x")
    assert validator.errors("CreateChatCompletionResponse", completion) == []
    for chunk in stream_chunks(completion, include_usage=True):
        assert validator.errors("CreateChatCompletionStreamResponse", chunk) == []


@pytest.mark.parametrize("name", list(REQUESTS))
@pytest.mark.parametrize("stream", [False, True])
def test_default_answers_over_http_raise_no_violation(
    openai_server: TestServer, name: str, stream: bool
) -> None:
    body = {"model": "gpt-4o", "messages": USER, "stream": stream, **REQUESTS[name]}
    response = httpx.post(f"{openai_server.base_url}/chat/completions", json=body)
    assert response.status_code == 200
    assert openai_server.spec_violations == []


def _answer(**extra: Any) -> dict[str, Any]:
    request = {"model": "gpt-4o", "messages": USER, **extra}
    return default_chat_completion(request, "chatcmpl-x")


def test_answers_are_deterministic() -> None:
    first, second = _answer(), _answer()
    first.pop("created")
    second.pop("created")
    assert first == second


def test_max_tokens_cuts_the_content() -> None:
    choice = _answer(max_tokens=3)["choices"][0]
    assert choice["message"]["content"] == "echo: what is"
    assert choice["finish_reason"] == "length"
    assert _answer(max_tokens=100)["choices"][0]["finish_reason"] == "stop"


def test_stop_sequences_cut_the_content() -> None:
    assert _answer(stop="weather")["choices"][0]["message"]["content"] == "echo: what is the "


def test_json_schema_answer_is_an_instance_of_the_schema() -> None:
    content = _answer(**REQUESTS["json_schema"])["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), PERSON_SCHEMA)


def test_json_object_answer_is_an_object() -> None:
    content = _answer(**REQUESTS["json_object"])["choices"][0]["message"]["content"]
    assert json.loads(content) == {"echo": "what is the weather like today"}


@pytest.mark.parametrize("name", ["tool_required", "tool_named"])
def test_forced_tool_use_calls_the_tool_with_valid_arguments(name: str) -> None:
    choice = _answer(**REQUESTS[name])["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])


def test_auto_tool_choice_answers_in_text() -> None:
    choice = _answer(**REQUESTS["tool_auto"])["choices"][0]
    assert choice["message"]["content"].startswith("echo: ")
    assert "tool_calls" not in choice["message"]


def test_allowed_tools_in_required_mode_calls_one_of_them() -> None:
    choice = _answer(
        tools=[WEATHER_TOOL],
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            },
        },
    )["choices"][0]
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_legacy_function_call_is_answered_with_a_function_call() -> None:
    choice = _answer(**REQUESTS["functions"])["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"] == {"name": "lookup", "arguments": "{}"}


def test_logprobs_cover_the_content() -> None:
    choice = _answer(logprobs=True, top_logprobs=2)["choices"][0]
    tokens = choice["logprobs"]["content"]
    assert "".join(token["token"] for token in tokens) == choice["message"]["content"]
    assert all(len(token["top_logprobs"]) == 2 for token in tokens)


def test_embeddings_and_moderations_match_the_spec(validator: SpecValidator) -> None:
    embeddings = default_embeddings({"model": "m", "input": ["a", "b"], "dimensions": 4})
    assert validator.errors("CreateEmbeddingResponse", embeddings) == []
    assert [len(item["embedding"]) for item in embeddings["data"]] == [4, 4]
    moderation = default_moderation(
        {
            "input": [
                {"type": "text", "text": "so much gore"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ]
        },
        "modr-1",
    )
    assert validator.errors("CreateModerationResponse", moderation) == []
    (result,) = moderation["results"]
    assert result["categories"]["violence/graphic"] is True
    assert result["category_applied_input_types"]["violence"] == ["text", "image"]
    assert result["category_applied_input_types"]["hate"] == ["text"]


# -- schema instances ----------------------------------------------------------------------

_leaf = st.sampled_from(
    [
        {"type": "string"},
        {"type": "string", "minLength": 10, "maxLength": 12},
        {"type": "integer", "minimum": -3, "maximum": 3},
        {"type": "integer", "exclusiveMinimum": 5},
        {"type": "number", "exclusiveMaximum": 0},
        {"type": "number", "multipleOf": 0.25, "minimum": 1.1},
        {"type": "boolean"},
        {"type": "null"},
        {"enum": ["a", "b", 3]},
        {"const": {"fixed": True}},
        {"type": ["integer", "null"]},
        {},
    ]
)


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.sampled_from(["a", "b", "c", "d"])
    objects = st.builds(
        lambda props, closed: {
            "type": "object",
            "properties": props,
            "required": sorted(props),
            "additionalProperties": not closed,
        },
        st.dictionaries(names, children, max_size=3),
        st.booleans(),
    )
    arrays = st.builds(
        lambda items, low, unique: {
            "type": "array",
            "items": items,
            "minItems": low,
            "uniqueItems": unique,
        },
        children,
        st.integers(0, 2),
        st.booleans(),
    )
    unions = st.builds(lambda a, b: {"anyOf": [{"type": "null"}, a, b]}, children, children)
    one_of = st.builds(lambda a: {"oneOf": [a, {"type": "null"}]}, children)
    return objects | arrays | unions | one_of


@given(schema=st.recursive(_leaf, _extend, max_leaves=8))
@settings(max_examples=300, deadline=None)
def test_generated_instances_validate(schema: dict[str, Any]) -> None:
    instance = instance_for(schema)
    if not jsonschema.Draft202012Validator(schema).is_valid(instance):
        # Some generated schemas cannot be met (three unique booleans) or are ambiguous
        # (oneOf branches that overlap); the instance must still be valid without those.
        jsonschema.validate(instance, _relaxed(schema))
    assert instance_for(schema) == instance


def _relaxed(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_relaxed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {("anyOf" if k == "oneOf" else k): _relaxed(v) for k, v in schema.items()}
    out.pop("uniqueItems", None)
    return out


def test_refs_allof_and_recursion() -> None:
    schema = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["value"],
            },
            "base": {
                "type": "object",
                "properties": {"id": {"type": "string"}},
                "required": ["id"],
            },
        },
        "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"tree": {"$ref": "#/$defs/node"}}}],
    }
    instance = instance_for(schema)
    jsonschema.validate(instance, schema)
    assert instance["id"] == "example"
    assert instance["tree"]["value"] == 0


def test_an_external_ref_is_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match="inline the referenced schema"):
        instance_for({"$ref": "https://example.com/schema.json"})
