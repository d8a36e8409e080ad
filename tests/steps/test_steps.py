"""Step definitions: validation, aliases, and errors that name the field."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatstep import ChatCompletion, ConfigError, Embedding, Moderation, load_step
from chatstep.core.request import build_request


def test_minimal_prompt_step() -> None:
    step = load_step({"model": "gpt-4o-mini", "prompt": "hi"})
    assert isinstance(step, ChatCompletion)
    assert build_request(step).body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_missing_model_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_step({"prompt": "hi"})
    assert info.value.field == "model"
    assert "required" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("temperature", 2.5, "less than or equal to 2"),
        ("top_p", 1.5, "less than or equal to 1"),
        ("n", 0, "greater than or equal to 1"),
        ("presence_penalty", -3, "greater than or equal to -2"),
        ("frequency_penalty", 3, "less than or equal to 2"),
        ("top_logprobs", 21, "less than or equal to 20"),
        ("stop", ["a", "b", "c", "d", "e"], "at most 4"),
        ("logit_bias", {"abc": 1}, "not a token id"),
        ("logit_bias", {"50256": 101}, "less than or equal to 100"),
        ("max_tokens", 0, "greater than or equal to 1"),
        ("service_tier", "cheap", "auto"),
        ("bogus_field", 1, "is not a known field"),
    ],
)
def test_range_checks_name_the_field(field: str, value: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_step({"model": "m", "prompt": "x", field: value})
    assert info.value.field.startswith(field)
    assert fragment in str(info.value)


def test_kestra_camel_case_aliases() -> None:
    step = load_step(
        {
            "model": "gpt-4o",
            "prompt": "x",
            "maxTokens": 10,
            "topP": 0.5,
            "presencePenalty": 0.1,
            "frequencyPenalty": 0.2,
            "logitBias": {"42": -5},
            "clientTimeout": 12,
            "apiKey": "sk-literal-key-000000",
        }
    )
    assert isinstance(step, ChatCompletion)
    body = build_request(step).body
    assert body["max_tokens"] == 10
    assert body["top_p"] == 0.5
    assert body["presence_penalty"] == 0.1
    assert body["frequency_penalty"] == 0.2
    assert body["logit_bias"] == {"42": -5}
    assert step.timeout == 12
    assert "sk-literal-key-000000" not in repr(step)


def test_messages_roles_and_parts() -> None:
    step = load_step(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "developer", "content": "be terse"},
                {
                    "role": "user",
                    "name": "ann",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/y.png", "detail": "low"},
                        },
                        {"type": "file", "file": {"file_id": "file-1"}},
                    ],
                },
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "call_1", "function": {"name": "look", "arguments": {"q": 1}}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "function", "name": "look", "content": "a cat"},
            ],
        }
    )
    messages = build_request(step).body["messages"]
    assert [m["role"] for m in messages] == ["developer", "user", "assistant", "tool", "function"]
    assert messages[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x/y.png", "detail": "low"},
    }
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == '{"q": 1}'
    assert messages[2]["content"] is None


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"role": "tool", "content": "x"}, "tool_call_id"),
        ({"role": "function", "content": "x"}, "needs name"),
        ({"role": "user"}, "needs content"),
        ({"role": "wizard", "content": "x"}, "role"),
        ({"role": "user", "content": [{"type": "video", "video": {}}]}, "content"),
    ],
)
def test_bad_messages(message: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_step({"model": "m", "messages": [message]})
    assert info.value.field.startswith("messages[0]")
    assert fragment in str(info.value)


def test_composition_order() -> None:
    step = load_step(
        {
            "model": "m",
            "system_message": "sys",
            "chat_history": [
                {"role": "user", "content": "h1"},
                {"role": "assistant", "content": "h2"},
            ],
            "prompt": "now",
        }
    )
    body = build_request(step).body
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "sys"),
        ("user", "h1"),
        ("assistant", "h2"),
        ("user", "now"),
    ]


def test_no_input_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no input"):
        load_step({"model": "m"})


def test_kestra_functions_become_tools() -> None:
    step = load_step(
        {
            "model": "m",
            "prompt": "x",
            "functions": [
                {
                    "name": "respond",
                    "description": "d",
                    "parameters": [
                        {
                            "name": "urgency",
                            "type": "STRING",
                            "description": "how urgent",
                            "required": True,
                            "enumValues": ["now", "later"],
                        },
                        {"name": "note", "type": "string"},
                    ],
                }
            ],
            "functionCall": "respond",
        }
    )
    body = build_request(step).body
    assert "functions" not in body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "respond",
                "description": "d",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "urgency": {
                            "type": "string",
                            "description": "how urgent",
                            "enum": ["now", "later"],
                        },
                        "note": {"type": "string"},
                    },
                    "required": ["urgency"],
                },
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "respond"}}


@pytest.mark.parametrize(("call", "choice"), [("auto", "auto"), ("none", "none")])
def test_function_call_modes(call: str, choice: str) -> None:
    step = load_step(
        {"model": "m", "prompt": "x", "functions": [{"name": "f"}], "function_call": call}
    )
    assert build_request(step).body["tool_choice"] == choice


def test_json_schema_and_extra_body() -> None:
    # A strict schema must close every object (OpenAI refuses {"type": "object"} alone).
    schema = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    step = load_step(
        {
            "model": "m",
            "prompt": "x",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": schema, "strict": True},
            },
            "extra_body": {"top_k": 5},
        }
    )
    body = build_request(step).body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": schema, "strict": True},
    }
    assert body["top_k"] == 5


def test_extra_body_cannot_shadow_a_field() -> None:
    step = load_step(
        {"model": "m", "prompt": "x", "temperature": 1, "extra_body": {"temperature": 0}}
    )
    with pytest.raises(ConfigError) as info:
        build_request(step)
    assert info.value.field == "extra_body.temperature"


def test_stream_request_asks_for_usage() -> None:
    step = load_step({"model": "m", "prompt": "x"})
    body = build_request(step, stream=True).body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_moderation_and_embedding_steps() -> None:
    mod = load_step({"type": "moderation", "input": ["a", "b"]})
    assert isinstance(mod, Moderation)
    assert build_request(mod).body == {"model": "omni-moderation-latest", "input": ["a", "b"]}
    emb = load_step(
        {"type": "embedding", "model": "text-embedding-3-small", "input": "a", "dimensions": 8}
    )
    assert isinstance(emb, Embedding)
    assert build_request(emb).body == {
        "model": "text-embedding-3-small",
        "input": "a",
        "dimensions": 8,
    }


def test_unknown_type() -> None:
    with pytest.raises(ConfigError) as info:
        load_step({"type": "translate", "model": "m"})
    assert info.value.field == "type"


def test_templates_allowed_in_numeric_fields_at_definition_time() -> None:
    step = load_step({"model": "m", "prompt": "x", "temperature": "{{ inputs.t }}"})
    assert isinstance(step, ChatCompletion)
    assert step.temperature == "{{ inputs.t }}"


def test_yaml_file(tmp_path: Any) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("model: gpt-4o-mini\nprompt: hello {{ inputs.name }}\n")
    step = load_step(path)
    assert isinstance(step, ChatCompletion)
    with pytest.raises(ConfigError, match="does not exist"):
        load_step(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_step(bad)


# --- property: any invalid definition is a ConfigError with a field path ------------------

_FIELDS = [
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "presence_penalty",
    "seed",
    "stop",
    "logprobs",
    "top_logprobs",
    "tool_choice",
    "response_format",
    "messages",
    "tools",
    "metadata",
    "service_tier",
    "timeout",
    "max_retries",
    "nonsense",
]
_junk = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8).filter(lambda s: "{" not in s),
    st.lists(st.integers(), max_size=6),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
    st.none(),
    st.booleans(),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(_FIELDS), value=_junk)
def test_invalid_definitions_raise_config_error_with_a_field(field: str, value: Any) -> None:
    data: dict[str, Any] = {"model": "m", "prompt": "x", field: value}
    try:
        step = load_step(data)
    except ConfigError as exc:
        assert exc.field, f"no field path in {exc}"
        return
    # Accepted: then it must build a request without any other exception type.
    try:
        build_request(step)
    except ConfigError as exc:
        assert exc.field


@settings(max_examples=200)
@given(data=st.dictionaries(st.text(max_size=10), _junk, max_size=5))
def test_random_mappings_only_ever_raise_config_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        load_step(data)
