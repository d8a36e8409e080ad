"""``type: completion`` step definitions: loading, the API's cross-field rules, rendered values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatstep import ChatCompletion, Completion, ConfigError, load_step
from chatstep.core.request import build_request
from chatstep.core.runner import AsyncRunner
from chatstep.testing.spec import SpecValidator

BASE = {"type": "completion", "model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}


def test_the_type_selects_the_step_and_every_field_reaches_the_body() -> None:
    step = load_step(
        {
            **BASE,
            "suffix": "!",
            "bestOf": 4,
            "n": 2,
            "logprobs": 5,
            "maxTokens": 30,
            "temperature": 0.5,
            "topP": 0.9,
            "stop": ["\n", "."],
            "presencePenalty": 1,
            "frequencyPenalty": -1,
            "logitBias": {"50256": -100},
            "seed": 3,
            "user": "u",
        }
    )
    assert isinstance(step, Completion)
    assert load_step({**BASE, "type": "chatstep.completion"}).kind == "completion"
    request = build_request(step)
    assert request.endpoint == "completions"
    assert request.path == "/completions"
    assert SpecValidator().errors("CreateCompletionRequest", request.body) == []
    assert request.body["best_of"] == 4
    assert "messages" not in request.body
    assert not isinstance(step, ChatCompletion)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"best_of": 2, "n": 3}, "best_of (2) must be at least n (3)"),
        ({"best_of": 3, "stream": True}, "best_of (3) cannot be streamed"),
        ({"echo": True, "suffix": "x"}, "echo and suffix cannot be used together"),
        ({"max_tokens": 0}, "max_tokens is 0"),
        ({"logprobs": 6}, "logprobs"),
        ({"prompt": "   "}, "prompt: is empty"),
        ({"prompt": ["ok", ""]}, "prompt[1] is empty"),
        ({"prompt": []}, "prompt"),
        ({"logit_bias": {"abc": 1}}, "not a token id"),
        ({"logit_bias": {"1": 0.5}}, "logit_bias"),
        ({"messages": [{"role": "user", "content": "x"}]}, "messages: is not a known field"),
        ({"tools": []}, "tools: is not a known field"),
    ],
)
def test_what_the_api_refuses_is_refused_at_load_naming_the_field(
    extra: dict[str, object], said: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_step({**BASE, **extra})


def test_echo_makes_max_tokens_0_a_prompt_scoring_call() -> None:
    step = load_step({**BASE, "echo": True, "max_tokens": 0, "logprobs": 0})
    assert build_request(step).body["max_tokens"] == 0


def test_rules_apply_to_rendered_values_too(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "type: completion\nmodel: m\nbackend: openai\nbase_url: http://127.0.0.1:9/v1\n"
        "prompt: '{{ inputs.text }}'\nn: '{{ inputs.n }}'\nbest_of: 2\n"
    )
    runner = AsyncRunner(history=False)
    _, request, _ = runner.prepare(path, {"text": "hello", "n": "2"})
    assert request.body == {"model": "m", "prompt": "hello", "best_of": 2, "n": 2}
    with pytest.raises(ConfigError, match="best_of"):
        runner.prepare(path, {"text": "hello", "n": "3"})
    with pytest.raises(ConfigError, match="is empty"):
        runner.prepare(path, {"text": "", "n": "1"})
