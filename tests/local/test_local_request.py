"""Reading chat requests for the local model: conversation turns, tools and field errors."""

from __future__ import annotations

from typing import Any

import pytest

from chatstep.backends.local.request import read_chat_request, read_embedding_request
from chatstep.errors import BadRequestError, NotFoundError

pytestmark = pytest.mark.local


def turns(*messages: dict[str, Any]) -> list[dict[str, str]]:
    return read_chat_request({"model": "local", "messages": list(messages)}).turns


def test_system_text_joins_the_next_user_turn_and_roles_alternate() -> None:
    assert turns(
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use French."},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "there"}]},
    ) == [
        {"role": "system", "content": "Be brief.\n\nUse French."},
        {"role": "user", "content": "Hi\n\nthere"},
    ]
    # A trailing system message is shown with the last user turn.
    assert turns({"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief."}) == [
        {"role": "user", "content": "Be brief.\n\nHi"}
    ]


def test_tool_calls_and_results_become_text_turns() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "[1, 2]"}}
    assert turns(
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
    ) == [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "Called add with [1, 2]"},
        {"role": "user", "content": "Result of add: 3"},
    ]


def test_sampling_defaults_follow_openai() -> None:
    request = read_chat_request({"model": "local", "messages": [{"role": "user", "content": "x"}]})
    assert request.sampling.temperature == 1.0
    assert request.sampling.top_p == 1.0
    assert request.n == 1
    assert request.max_tokens is None
    assert request.mode == "text"
    request = read_chat_request(
        {
            "model": "local",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 5,
            "max_completion_tokens": 9,
            "stop": "END",
            "seed": 4,
        }
    )
    assert (request.max_tokens, request.stop, request.sampling.seed) == (9, ["END"], 4)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "assistant", "tool_calls": ["x"]}]}, "messages[0].tool_calls[0]"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias[5]"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0]"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
    ],
)
def test_field_errors_name_the_field(body: dict[str, Any], field: str) -> None:
    full = {"model": "local", "messages": [{"role": "user", "content": "x"}], **body}
    with pytest.raises(BadRequestError) as error:
        read_chat_request(full)
    assert error.value.message.startswith(f"{field}:")
    param = error.value.body["param"]
    assert param
    assert field.startswith(param.split("[", maxsplit=1)[0])


def test_unknown_models_and_embedding_inputs() -> None:
    with pytest.raises(NotFoundError, match="gemma-3-270m"):
        read_chat_request({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(BadRequestError, match="token arrays"):
        read_embedding_request({"model": "local", "input": [[1, 2, 3]]})
    with pytest.raises(BadRequestError, match="encoding_format"):
        read_embedding_request({"model": "local", "input": "x", "encoding_format": "hex"})
    request = read_embedding_request({"model": "local", "input": "x", "dimensions": 8})
    assert (request.texts, request.dimensions, request.base64) == (["x"], 8, False)


def test_schema_grammars_enforce_json_strings_declared_keys_and_integer_ranges() -> None:
    from chatstep.backends.local.request import schema_grammar

    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            "count": {"type": "integer", "minimum": 0},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["stars", "name"],
        "additionalProperties": True,
    }
    grammar = schema_grammar(schema, "tools[t].parameters")
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines() if " ::= " in line)
    # JSON strings hold no raw control characters (a raw newline made answers unparsable).
    assert rules["char"].startswith('[^"\\\\\\x7F\\x00-\\x1F]')
    # Declared properties only: the extra-key rule also matched declared names.
    assert not any(name.startswith("additional") for name in rules)
    assert rules["stars"] == '"1" | "2" | "3" | "4" | "5"'
    assert rules["count"] == "chatstep-uint0"
    assert rules["score"] == "chatstep-unit"
    # Properties keep the schema's order, so the model decides the first ones first.
    triage = {
        "type": "object",
        "properties": {"urgency": {"enum": ["now", "later"]}, "reply": {"type": "string"}},
        "required": ["urgency", "reply"],
    }
    root = next(line for line in schema_grammar(triage, "p").splitlines() if "root" in line)
    assert root.index("urgency-kv") < root.index("reply-kv")
