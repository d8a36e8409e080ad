"""The test server's ``/v1/completions``: the SDK's ``client.completions.create``, streaming,
scripted answers, the API's rules and spec validation."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from chatstep.testing import Respond, TestServer

PATH = "/v1/completions"
PARAMS: dict[str, Any] = {"model": "gpt-3.5-turbo-instruct", "prompt": "one two three"}


def test_default_answer_counts_and_cuts_like_the_api(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    answer = client.completions.create(**PARAMS, max_tokens=2, n=2, stop=["zzz"])
    assert answer.object == "text_completion"
    assert [c.text for c in answer.choices] == [" echo: one", " echo: one"]
    assert [c.finish_reason for c in answer.choices] == ["length", "length"]
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == 3
    default = client.completions.create(**PARAMS, echo=True)
    assert default.choices[0].text == "one two three echo: one two three"
    assert openai_server.requests[0].path == PATH


def test_stream_events_join_into_the_answer(client: openai.OpenAI) -> None:
    plain = client.completions.create(**PARAMS)
    events = list(
        client.completions.create(**PARAMS, stream=True, stream_options={"include_usage": True})
    )
    assert all(e.object == "text_completion" for e in events)
    assert "".join(c.text for e in events for c in e.choices) == plain.choices[0].text
    assert events[-1].choices == []
    assert events[-1].usage == plain.usage


def test_scripted_content_and_choices(client: openai.OpenAI, openai_server: TestServer) -> None:
    openai_server.enqueue(Respond(content="scripted"), Respond(choices=["a", "b"]), path=PATH)
    assert client.completions.create(**PARAMS).choices[0].text == "scripted"
    assert [c.text for c in client.completions.create(**PARAMS).choices] == ["a", "b"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"best_of": 1, "n": 2}, "best_of"),
        ({"best_of": 2, "stream": True}, "best_of"),
        ({"echo": True, "suffix": "x"}, "echo"),
    ],
)
def test_rules_beyond_the_schema_are_the_apis_400s(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(**PARAMS, **extra)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == param


def test_a_body_off_the_spec_is_refused_and_recorded(
    client: openai.OpenAI, openai_server: TestServer
) -> None:
    openai_server.allow_spec_violations()
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(**PARAMS, logprobs=9)
    [violation] = openai_server.spec_violations
    assert violation.schema == "CreateCompletionRequest"
    assert violation.location == "$.logprobs"
