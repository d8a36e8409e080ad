"""Property: a stream, cut the ways real servers cut it, assembles to exactly the whole answer.

Hypothesis generates ``chat.completion`` bodies (content, parallel tool calls, vendor fields such
as ``reasoning_content``, n > 1, logprobs, usage) and cuts each into chunks as OpenAI, vLLM,
Ollama, llama.cpp and OpenRouter do: a usage-only last chunk, chunks with no choices, keep-alive
SSE comments, fields repeated or blank in later chunks, parallel calls all at ``index: 0`` told
apart by their ids, choices interleaved. Both forms go through the real test server and
chatstep; the streamed result must equal the non-streamed one field by field.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatstep import StepResult, run_step
from chatstep.testing import Respond, TestServer

STEP = {"model": "gpt-4o-mini", "prompt": "x", "max_retries": 0}
JSON = dict[str, Any]

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_name = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
_args = st.dictionaries(_name, st.integers() | _text, max_size=3).map(json.dumps) | st.just("")


@st.composite
def _logprobs(draw: st.DrawFn) -> JSON | None:
    if not draw(st.booleans()):
        return None
    tokens = draw(st.lists(_text, min_size=1, max_size=4))
    entries = [{"token": t, "logprob": -0.5, "bytes": None, "top_logprobs": []} for t in tokens]
    return {"content": entries, "refusal": None}


@st.composite
def _choice(draw: st.DrawFn, index: int, ids: Any) -> JSON:
    calls = [
        {"id": next(ids), "type": "function", "function": {"name": draw(_name), "arguments": a}}
        for a in draw(st.lists(_args, max_size=3))
    ]
    content = draw(st.none() | _text) if calls else draw(_text)
    message: JSON = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if draw(st.booleans()):
        message["reasoning_content"] = draw(_text.filter(bool))
    choice: JSON = {
        "index": index,
        "message": message,
        "logprobs": draw(_logprobs()),
        "finish_reason": "tool_calls" if calls else draw(st.sampled_from(["stop", "length"])),
    }
    if draw(st.booleans()):
        choice["stop_reason"] = draw(st.none() | st.integers(0, 9))  # vLLM's extra field
    return choice


@st.composite
def completions(draw: st.DrawFn) -> JSON:
    ids = iter(f"call_{i}" for i in range(1000))
    n = draw(st.integers(1, 3))
    body: JSON = {
        "id": "chatcmpl-prop",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [draw(_choice(i, ids)) for i in range(n)],
    }
    if draw(st.booleans()):
        body["system_fingerprint"] = "fp_x"
    if draw(st.booleans()):
        body["provider"] = "OpenRouterUpstream"  # an unknown top-level field
    if draw(st.booleans()):
        body["usage"] = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    return body


def _pieces(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=4)))
    bounds = [0, *[c for c in cuts if c < len(text)], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [text]


@st.composite
def _choice_events(draw: st.DrawFn, choice: JSON, same_index: bool, repeat: bool) -> list[JSON]:
    """The deltas of one choice, as ``choices`` entries, in order."""
    i = choice["index"]
    message = choice["message"]
    events: list[JSON] = []

    def event(delta: JSON, **more: Any) -> None:
        entry = {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
        if "stop_reason" in choice:
            entry["stop_reason"] = None  # blank until the last chunk
        entry.update(more)
        events.append(entry)

    first: JSON = {"role": "assistant"}
    if message["content"] == "" or (message["content"] is not None and draw(st.booleans())):
        first["content"] = ""  # a blank opening piece (the only one of an empty answer)
    event(first)
    for piece in _pieces(draw, message.get("reasoning_content", "")):
        if piece:
            event({"reasoning_content": piece, **({"role": "assistant"} if repeat else {})})
    content = message["content"]
    if content:
        pieces = _pieces(draw, content)
        logprobs = choice["logprobs"]
        tokens = list(logprobs["content"]) if logprobs else []
        for n, piece in enumerate(pieces):
            more: JSON = {}
            if logprobs:
                share = tokens if n == len(pieces) - 1 else tokens[:1]
                tokens = tokens[len(share) :]
                more["logprobs"] = {"content": share, "refusal": None}
            blank = {"reasoning_content": None} if "reasoning_content" in message else {}
            event({"content": piece, **blank}, **more)
    elif choice["logprobs"]:
        event({}, logprobs=choice["logprobs"])
    for position, call in enumerate(message.get("tool_calls") or []):
        slot = 0 if same_index else position
        fn = call["function"]
        head = {"index": slot, "id": call["id"], "type": "function"}
        event({"tool_calls": [{**head, "function": {"name": fn["name"], "arguments": ""}}]})
        for piece in _pieces(draw, fn["arguments"]):
            part: JSON = {"index": slot, "function": {"arguments": piece}}
            if repeat:
                part.update(id=call["id"], type="function")
                part["function"]["name"] = fn["name"]
            event({"tool_calls": [part]})
    final: JSON = {"finish_reason": choice["finish_reason"]}
    if "stop_reason" in choice:
        final["stop_reason"] = choice["stop_reason"]
    event({"content": None} if repeat else {}, **final)
    return events


@st.composite
def streams(draw: st.DrawFn, body: JSON) -> list[Any]:
    """SSE events for ``body``: choices interleaved, with comments, empty chunks and usage."""
    same_index = draw(st.booleans())
    repeat = draw(st.booleans())
    queues = [draw(_choice_events(c, same_index, repeat)) for c in body["choices"]]
    head = {k: v for k, v in body.items() if k not in ("choices", "usage", "object")}
    head["object"] = "chat.completion.chunk"
    with_usage = "usage" in body
    events: list[Any] = []
    while any(queues):
        pick = draw(st.sampled_from([q for q in queues if q]))
        chunk = {**head, "choices": [pick.pop(0)]}
        if with_usage:
            chunk["usage"] = None
        events.append(chunk)
        extra = draw(st.sampled_from(["none", "none", "comment", "empty"]))
        if extra == "comment":
            events.append(": keep-alive")
        elif extra == "empty":
            events.append({**head, "choices": []})
    if with_usage:
        events.append({**head, "choices": [], "usage": body["usage"]})
    return events


@st.composite
def cases(draw: st.DrawFn) -> tuple[JSON, list[Any]]:
    body = draw(completions())
    return body, draw(streams(body))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
def test_streamed_answers_assemble_to_the_whole_answer(
    openai_env: TestServer, case: tuple[JSON, list[Any]]
) -> None:
    body, events = case
    openai_env.allow_spec_violations()
    openai_env.enqueue(Respond(body=body, validate=False), Respond(body=events, validate=False))
    whole = run_step(STEP)
    streamed = run_step(STEP, stream=True)
    assert isinstance(whole, StepResult)
    assert isinstance(streamed, StepResult)
    assert whole.response == body
    received = dict(streamed.response)
    if streamed.usage_estimated:
        # The server sent no usage: chatstep counts it locally (for the bill) and says so.
        assert "usage" not in body
        assert received.pop("usage")["prompt_tokens"] > 0
    assert received == whole.response
    assert [c.arguments for c in streamed.tool_calls] == [c.arguments for c in whole.tool_calls]
