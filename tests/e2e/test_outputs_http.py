"""Results: conveniences, JSON output checks, and later steps addressing earlier outputs."""

from __future__ import annotations

import pytest

from chatstep import (
    InvalidJSONError,
    SchemaMismatchError,
    StepResult,
    TruncatedOutputError,
    run_step,
)
from chatstep.testing import Respond, TestServer

TRIAGE_FUNCTIONS = [
    {
        "name": "respond_to_review",
        "parameters": [
            {
                "name": "response_urgency",
                "type": "string",
                "required": True,
                "enumValues": ["reply_immediately", "reply_later"],
            },
            {"name": "response_text", "type": "string", "required": True},
        ],
    }
]


def test_tool_call_arguments_addressed_from_a_later_step(openai_env: TestServer) -> None:
    openai_env.enqueue(
        Respond(
            tool_calls=[
                {
                    "name": "respond_to_review",
                    "arguments": {
                        "response_urgency": "reply_immediately",
                        "response_text": "Sorry!",
                    },
                }
            ]
        )
    )
    triage = run_step(
        {"id": "triage", "model": "gpt-4o", "prompt": "bad product", "functions": TRIAGE_FUNCTIONS}
    )
    assert isinstance(triage, StepResult)
    # .response keeps arguments as the API sent them; .tool_calls decodes them.
    raw = triage.response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert isinstance(raw, str)
    assert triage.tool_calls[0].arguments["response_urgency"] == "reply_immediately"
    follow = run_step(
        {
            "model": "gpt-4o-mini",
            "prompt": (
                "tool={{ outputs.triage.choices[0].message.tool_calls[0].function.arguments"
                ".response_urgency }} "
                "fn={{ outputs.triage.choices[0].message.function_call.arguments.response_text }} "
                "raw={{ outputs.triage.choices[0].message.tool_calls[0].function.arguments }}"
            ),
        },
        outputs={"triage": triage},
    )
    sent = openai_env.requests[-1].body["messages"][0]["content"]  # type: ignore[index]
    assert sent == f"tool=reply_immediately fn=Sorry! raw={raw}"
    assert follow.content == f"echo: {sent}"


def test_invalid_tool_arguments_fail_when_indexed(openai_env: TestServer) -> None:
    openai_env.enqueue(Respond(tool_calls=[{"name": "f", "arguments": "{not json"}]))
    first = run_step(
        {"id": "a", "model": "gpt-4o", "prompt": "x", "tools": [{"function": {"name": "f"}}]}
    )
    with pytest.raises(InvalidJSONError, match=r"tool_calls\[0\] \(f\)"):
        run_step(
            {
                "model": "gpt-4o",
                "prompt": "{{ outputs.a.choices[0].message.tool_calls[0].function.arguments.x }}",
            },
            outputs={"a": first},
        )
    # Printing the raw string still works.
    out = run_step(
        {
            "model": "gpt-4o",
            "prompt": "{{ outputs.a.choices[0].message.tool_calls[0].function.arguments }}",
        },
        outputs={"a": first},
    )
    assert out.content == "echo: {not json"


def test_truncated_json_is_a_clear_error(openai_env: TestServer) -> None:
    openai_env.enqueue(Respond(content='{"a": "unfinish', finish_reason="length"))
    with pytest.raises(TruncatedOutputError, match="cut off") as info:
        run_step(
            {"model": "gpt-4o-mini", "prompt": "x", "response_format": {"type": "json_object"}}
        )
    assert isinstance(info.value.result, StepResult)  # nothing is lost


def test_invalid_json_and_schema_mismatch(openai_env: TestServer) -> None:
    openai_env.enqueue(Respond(content="not json at all"))
    with pytest.raises(InvalidJSONError):
        run_step(
            {"model": "gpt-4o-mini", "prompt": "x", "response_format": {"type": "json_object"}}
        )
    openai_env.enqueue(Respond(content='{"u": "maybe"}'))
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "u",
            "schema": {
                "type": "object",
                "properties": {"u": {"enum": ["yes", "no"]}},
                "required": ["u"],
            },
        },
    }
    with pytest.raises(SchemaMismatchError, match=r"\['u'\]"):
        run_step({"model": "gpt-4o-mini", "prompt": "x", "response_format": fmt})


def test_json_object_mode(openai_env: TestServer) -> None:
    openai_env.enqueue(Respond(content='{"k": [1, 2]}'))
    result = run_step(
        {"model": "gpt-4o-mini", "prompt": "json", "response_format": {"type": "json_object"}}
    )
    assert isinstance(result, StepResult)
    assert result.parsed == {"k": [1, 2]}


def test_response_shape_and_usage(openai_env: TestServer) -> None:
    result = run_step({"model": "gpt-4o-mini", "prompt": "shape"})
    assert isinstance(result, StepResult)
    for key in ("id", "object", "created", "model", "choices", "usage"):
        assert key in result.response
    assert (
        result.usage["total_tokens"]
        == result.usage["prompt_tokens"] + result.usage["completion_tokens"]
    )
    as_dict = result.to_dict()
    assert as_dict["content"] == "echo: shape"


def test_moderation_and_embedding(openai_env: TestServer) -> None:
    from chatstep import EmbeddingResult, ModerationResult

    mod = run_step({"type": "moderation", "input": ["I will kill you", "have a nice day"]})
    assert isinstance(mod, ModerationResult)
    assert [r["flagged"] for r in mod.results] == [True, False]
    assert mod.flagged
    emb = run_step(
        {
            "type": "embedding",
            "model": "text-embedding-3-small",
            "input": ["a", "b"],
            "dimensions": 8,
        }
    )
    assert isinstance(emb, EmbeddingResult)
    assert [len(v) for v in emb.vectors] == [8, 8]
    assert openai_env.requests[-1].body == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "dimensions": 8,
    }


def test_list_models(openai_env: TestServer) -> None:
    import asyncio

    from chatstep import AsyncRunner

    async def main() -> list[str]:
        async with AsyncRunner() as runner:
            return [m["id"] for m in await runner.list_models()]

    ids = asyncio.run(main())
    assert ids
    assert openai_env.requests[-1].path == "/v1/models"
