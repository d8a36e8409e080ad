"""Streaming: deltas arrive in order and assemble into the non-streamed answer."""

from __future__ import annotations

import asyncio

from chatstep import Delta, StepResult, astream_step, run_step
from chatstep.testing import Respond, TestServer


def _comparable(result: StepResult) -> list[dict[str, object]]:
    out = []
    for choice in result.response["choices"]:
        message = choice["message"]
        out.append(
            {
                "content": message.get("content"),
                "tool_calls": [
                    (c["id"], c["function"]["name"], c["function"]["arguments"])
                    for c in message.get("tool_calls") or []
                ],
                "finish_reason": choice["finish_reason"],
            }
        )
    return out


def test_stream_deltas_in_order_and_assembled_equals_plain(openai_env: TestServer) -> None:
    text = "The quick brown fox jumps over the lazy dog"
    openai_env.enqueue(Respond(content=text), Respond(content=text))
    plain = run_step({"model": "gpt-4o-mini", "prompt": "x"})
    deltas: list[Delta] = []
    streamed = run_step(
        {"model": "gpt-4o-mini", "prompt": "x"}, stream=True, on_delta=deltas.append
    )
    assert isinstance(plain, StepResult)
    assert isinstance(streamed, StepResult)
    pieces = [d.content for d in deltas if d.content]
    assert len(pieces) > 2
    assert "".join(pieces) == text
    assert _comparable(streamed) == _comparable(plain)
    assert streamed.usage["total_tokens"] == plain.usage["total_tokens"]
    body = openai_env.requests[-1].body
    assert body is not None
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_streamed_tool_call_arguments_assemble(openai_env: TestServer) -> None:
    call = {"id": "call_abc", "name": "lookup", "arguments": {"city": "Paris", "days": 3}}
    openai_env.enqueue(Respond(tool_calls=[call]), Respond(tool_calls=[call]))
    step = {"model": "gpt-4o", "prompt": "x", "tools": [{"function": {"name": "lookup"}}]}
    plain = run_step(step)
    streamed = run_step(step, stream=True)
    assert isinstance(plain, StepResult)
    assert isinstance(streamed, StepResult)
    assert _comparable(streamed) == _comparable(plain)
    assert streamed.tool_calls[0].arguments == {"city": "Paris", "days": 3}


def test_async_iterator(openai_env: TestServer) -> None:
    async def main() -> tuple[list[str], StepResult]:
        stream = astream_step({"model": "gpt-4o-mini", "prompt": "one two three"})
        seen = [d.content async for d in stream if d.content]
        assert isinstance(stream.result, StepResult)
        return seen, stream.result

    seen, result = asyncio.run(main())
    assert "".join(seen) == result.content == "echo: one two three"


def test_async_callback(openai_env: TestServer) -> None:
    got: list[str] = []

    async def on_delta(delta: Delta) -> None:
        await asyncio.sleep(0)
        if delta.content:
            got.append(delta.content)

    result = run_step({"model": "gpt-4o-mini", "prompt": "a b"}, on_delta=on_delta)
    assert "".join(got) == result.content  # type: ignore[union-attr]
