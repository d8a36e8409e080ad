"""Token counting and request token estimates."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chatstep.accounting import tokens
from chatstep.accounting.tokens import (
    DEFAULT_COMPLETION_TOKENS,
    IMAGE_HIGH_DETAIL_TOKENS,
    IMAGE_LOW_DETAIL_TOKENS,
    approximate_tokens,
    count_tokens,
    encoding_for_model,
    estimate_prompt_tokens,
    estimate_request_tokens,
    tokenizer_available,
)

# The six messages of OpenAI's token-counting cookbook, with the prompt_tokens the API reported
# for them: 124 on gpt-4o / gpt-4o-mini (o200k) and 129 on gpt-4 / gpt-3.5-turbo (cl100k).
COOKBOOK_MESSAGES: list[dict[str, str]] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

# The cookbook's tool example: the API reported 101 prompt tokens on gpt-4o, 105 on gpt-4.
WEATHER_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]

needs_tokenizer = pytest.mark.skipif(not tokenizer_available(), reason="bpe-openai not installed")


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("llama3.2:1b", "o200k_base"),
        ("", "o200k_base"),
    ],
)
def test_encoding_for_model(model: str, encoding: str) -> None:
    assert encoding_for_model(model) == encoding


@needs_tokenizer
def test_count_tokens_known_values() -> None:
    assert count_tokens("", "gpt-4o") == 0
    assert count_tokens("Hello world", "gpt-4o") == 2
    # Special-token text is ordinary text in a prompt.
    assert count_tokens("<|endoftext|>", "gpt-4o") > 1
    # The two vocabularies differ on non-Latin text.
    text = "我们的目标是为每一位用户提供最好的服务"
    assert count_tokens(text, "gpt-4o") < count_tokens(text, "gpt-4")


@needs_tokenizer
@pytest.mark.parametrize(
    ("model", "api_prompt_tokens"),
    [("gpt-4o", 124), ("gpt-4o-mini", 124), ("gpt-4", 129), ("gpt-3.5-turbo", 129)],
)
def test_plain_text_messages_match_openai_counts(model: str, api_prompt_tokens: int) -> None:
    body = {"model": model, "messages": COOKBOOK_MESSAGES}
    assert estimate_prompt_tokens(body) == api_prompt_tokens


@needs_tokenizer
@pytest.mark.parametrize(("model", "api_prompt_tokens"), [("gpt-4o", 101), ("gpt-4", 105)])
def test_tool_schemas_overestimate_within_bound(model: str, api_prompt_tokens: int) -> None:
    body = {"model": model, "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS}
    estimate = estimate_prompt_tokens(body)
    # Documented bound: compact JSON over-counts by 10-40%, never under-counts.
    assert api_prompt_tokens <= estimate <= api_prompt_tokens * 1.4


def test_request_budget_uses_max_tokens_times_n() -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": COOKBOOK_MESSAGES}
    prompt = estimate_prompt_tokens(body)
    assert estimate_request_tokens(body) == prompt + DEFAULT_COMPLETION_TOKENS
    assert estimate_request_tokens(body, default_completion_tokens=10) == prompt + 10
    body["max_tokens"] = 50
    assert estimate_request_tokens(body) == prompt + 50
    body["max_completion_tokens"] = 70  # wins over the deprecated max_tokens
    body["n"] = 3
    assert estimate_request_tokens(body) == prompt + 210


@needs_tokenizer
def test_content_parts_images_and_files() -> None:
    text_only = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Describe this."}]}
    base = estimate_prompt_tokens(text_only)

    def with_parts(*parts: dict[str, Any]) -> int:
        content = [{"type": "text", "text": "Describe this."}, *parts]
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
        return estimate_prompt_tokens(body)

    low = {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}}
    high = {"type": "image_url", "image_url": {"url": "https://x/a.png"}}
    pdf = {"type": "file", "file": {"file_id": "file-abc"}}
    assert with_parts(low) == base + IMAGE_LOW_DETAIL_TOKENS
    assert with_parts(high) == base + IMAGE_HIGH_DETAIL_TOKENS
    assert with_parts(low, high) == base + IMAGE_LOW_DETAIL_TOKENS + IMAGE_HIGH_DETAIL_TOKENS
    assert with_parts(pdf) == base + tokens.FILE_PART_TOKENS


@needs_tokenizer
def test_tool_calls_and_response_format_are_counted() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    plain = estimate_prompt_tokens({"model": "gpt-4o", "messages": messages})
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'},
    }
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ]
    with_calls = estimate_prompt_tokens({"model": "gpt-4o", "messages": messages})
    assert with_calls > plain + 2 * tokens.TOKENS_PER_MESSAGE + count_tokens(
        '{"location": "Paris"}', "gpt-4o"
    )
    schema = {
        "name": "weather",
        "schema": {"type": "object", "properties": {"celsius": {"type": "number"}}},
    }
    structured = {
        "model": "gpt-4o",
        "messages": messages,
        "response_format": {"type": "json_schema", "json_schema": schema},
    }
    assert estimate_prompt_tokens(structured) > with_calls + 10


@needs_tokenizer
def test_embeddings_and_moderations_inputs() -> None:
    text = "The food was delicious and the waiter was friendly."
    n = count_tokens(text, "text-embedding-3-small")
    body: dict[str, Any] = {"model": "text-embedding-3-small", "input": text}
    assert estimate_request_tokens(body, "embeddings") == n
    body["input"] = [text, text]
    assert estimate_request_tokens(body, "embeddings") == 2 * n
    body["input"] = [[1, 2, 3], [4, 5]]  # token ids
    assert estimate_request_tokens(body, "embeddings") == 5
    moderation = {"model": "omni-moderation-latest", "input": text}
    assert estimate_request_tokens(moderation, "moderations") == count_tokens(text, "gpt-4o")


def test_unknown_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        estimate_prompt_tokens({"model": "gpt-4o"}, "audio.speech")


def test_legacy_completions_count_every_prompt_and_the_suffix_per_prompt() -> None:
    one = estimate_prompt_tokens(
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Hello there"}, "completions"
    )
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": ["Hello there"] * 3,
        "suffix": "Hello there",
    }
    assert estimate_prompt_tokens(body, "completions") == 6 * one


def test_approximation_error_bound_on_prose() -> None:
    prose = (
        "A step is a typed, validated definition: model, prompt or messages, parameters, "
        "tools, output format and connection. Its string fields are templates rendered "
        "against the run's inputs and the outputs of earlier steps. "
    ) * 20
    assert approximate_tokens("") == 0
    assert approximate_tokens("abcd") == 1
    if tokenizer_available():
        exact = count_tokens(prose, "gpt-4o")
        assert 0.9 * exact <= approximate_tokens(prose) <= 1.35 * exact


def test_fallback_when_tokenizer_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_bindings_state", [None])
    monkeypatch.setattr(tokens, "_counters", {})
    tokens._count_cached.cache_clear()
    try:
        assert not tokenizer_available()
        assert count_tokens("x" * 400, "gpt-4o") == 100
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "y" * 40}]}
        # 3 per message + role "user" (1) + 10 for the content + 3 reply priming.
        assert estimate_prompt_tokens(body) == 3 + 1 + 10 + 3
    finally:
        tokens._count_cached.cache_clear()


@needs_tokenizer
def test_counting_from_many_threads_agrees() -> None:
    body = {"model": "gpt-4o", "messages": COOKBOOK_MESSAGES}
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(200):
            n = estimate_prompt_tokens(body)
            with lock:
                results.append(n)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results) == {124}
    assert len(results) == 1600


@needs_tokenizer
@pytest.mark.parametrize(
    "messages",
    [
        COOKBOOK_MESSAGES,
        [{"role": "user", "content": "naïve café " * 50 + "日本語のテキスト" * 30}],
        [{"role": "user", "content": [{"type": "text", "text": "1234567890" * 40}]}],
        [{"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": '{"a": [1, 2]}'}}
        ]}],
    ],
)  # fmt: skip
def test_the_byte_bound_is_never_below_the_exact_count(messages: list[Any]) -> None:
    from chatstep.accounting.tokens import chat_prompt_token_bound

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    for extra in ({}, {"tools": tools}):
        body = {"model": "gpt-4o-mini", "messages": messages, **extra}
        assert chat_prompt_token_bound(body) >= estimate_prompt_tokens(body)
