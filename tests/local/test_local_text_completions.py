"""``type: completion`` steps on the embedded model (offline), and ``/v1/completions`` served by
``create_serving_app`` and by ``chatstep serve``, driven by the official OpenAI client."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from chatstep import Delta, StepResult, run_step
from chatstep.backends.local.backend import LocalBackend
from chatstep.errors import BadRequestError

pytestmark = pytest.mark.local

STEP: dict[str, Any] = {
    "type": "completion",
    "model": "local",
    "prompt": "The three primary colors are red,",
    "max_tokens": 6,
    "temperature": 0,
    "seed": 1,
}


def test_a_completion_step_runs_offline_and_streams_the_same_text(spec: Any) -> None:
    plain = run_step(STEP)  # no key, no base URL: the embedded model
    assert isinstance(plain, StepResult)
    assert plain.request.endpoint == "completions"
    assert plain.response["object"] == "text_completion"
    assert spec.errors("CreateCompletionResponse", plain.response) == []
    assert plain.content
    assert 0 < plain.usage["completion_tokens"] <= 6
    assert plain.usage["prompt_tokens"] > 5
    deltas: list[Delta] = []
    streamed = run_step(STEP, on_delta=deltas.append)
    assert isinstance(streamed, StepResult)
    assert "".join(d.content or "" for d in deltas) == plain.content
    assert streamed.content == plain.content  # greedy: the same text
    assert streamed.usage == plain.usage


def test_prompts_times_n_with_echo_come_back_in_order() -> None:
    step = {**STEP, "prompt": ["One, two,", "A, B,"], "n": 2, "echo": True, "max_tokens": 3}
    result = run_step(step)
    assert isinstance(result, StepResult)
    texts = result.contents
    assert len(texts) == 4
    heads = ["One, two,", "One, two,", "A, B,", "A, B,"]
    assert all(text and text.startswith(head) for text, head in zip(texts, heads, strict=True))
    assert texts[0] == texts[1]  # greedy: seed + j changes nothing


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("suffix", " end.", "does not insert text"),
        ("logprobs", 1, "does not return log probabilities"),
        ("best_of", 3, "does not rank candidates"),
        ("prompt", [1, 2, 3], "takes text, not token arrays"),
    ],
)
def test_what_the_model_cannot_do_is_a_400_naming_the_field(
    backend: LocalBackend, field: str, value: Any, said: str
) -> None:
    body = {"model": "local", "prompt": "x", field: value}
    with pytest.raises(BadRequestError, match=said) as caught:
        asyncio.run(backend.complete_text(body, timeout=60))
    assert caught.value.body["param"] == ("prompt" if field == "prompt" else field)


def test_a_prompt_over_the_window_is_refused_before_tokenizing_megabytes(
    backend: LocalBackend, local_model: Any
) -> None:
    huge = "word " * (local_model.n_ctx * 8)  # 40 characters a token: refused untokenized
    with pytest.raises(BadRequestError, match="cannot fit") as caught:
        asyncio.run(backend.complete_text({"model": "local", "prompt": huge}, timeout=60))
    assert caught.value.code == "context_length_exceeded"
    near = "word " * local_model.n_ctx  # tokenized, then refused naming both sizes
    with pytest.raises(BadRequestError, match=f"context window of {local_model.n_ctx}"):
        asyncio.run(backend.complete_text({"model": "local", "prompt": near}, timeout=60))


def test_served_completions_answer_the_openai_client(client: openai.OpenAI, spec: Any) -> None:
    params: dict[str, Any] = {
        "model": "local",
        "prompt": "Once upon a time",
        "max_tokens": 5,
        "temperature": 0,
    }
    answer = client.completions.create(**params)
    assert answer.object == "text_completion"
    assert spec.errors("CreateCompletionResponse", answer.model_dump(exclude_unset=True)) == []
    pieces = [
        event.choices[0].text
        for event in client.completions.create(**params, stream=True)
        if event.choices
    ]
    assert "".join(pieces) == answer.choices[0].text
    with pytest.raises(openai.BadRequestError, match="suffix"):
        client.completions.create(**params, suffix="The end.")


def test_chatstep_serve_answers_completions_create(start_serve: Any) -> None:
    served = start_serve()
    served.wait_until_serving()
    client = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    answer = client.completions.create(
        model="local", prompt="Water boils at", max_tokens=4, temperature=0
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None
    assert answer.usage.completion_tokens <= 4
