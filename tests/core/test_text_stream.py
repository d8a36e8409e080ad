"""Streamed ``text_completion`` events join into exactly the non-streamed answer."""

from __future__ import annotations

from typing import Any

from chatstep.core.text_completion import TextChunkAssembler


def _event(index: int, text: str, tokens: list[str], reason: str | None = None) -> dict[str, Any]:
    logprobs = {
        "tokens": tokens,
        "token_logprobs": [-0.5] * len(tokens),
        "top_logprobs": [{t: -0.5} for t in tokens],
        "text_offset": [0] * len(tokens),
    }
    choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": reason}
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 5,
        "model": "m",
        "choices": [choice],
    }


def test_interleaved_choices_with_logprobs_assemble_per_choice() -> None:
    assembler = TextChunkAssembler()
    events = [
        _event(0, "Hel", ["Hel"]),
        _event(1, "Bye", ["Bye"]),
        _event(0, "lo", ["lo"]),
        _event(1, "", [], "length"),
        _event(0, "!", ["!"], "stop"),
        {"id": "cmpl-1", "object": "text_completion", "choices": [], "usage": {"total_tokens": 9}},
    ]
    pieces = [d.content for e in events for d in assembler.add(e)]
    assert pieces == ["Hel", "Bye", "lo", "", "!"]
    assert assembler.finished
    answer = assembler.response()
    assert [c["text"] for c in answer["choices"]] == ["Hello!", "Bye"]
    assert answer["choices"][0]["logprobs"]["tokens"] == ["Hel", "lo", "!"]
    assert answer["choices"][1]["finish_reason"] == "length"
    assert answer["usage"] == {"total_tokens": 9}
    assert (answer["object"], answer["id"], answer["created"]) == ("text_completion", "cmpl-1", 5)


def test_a_choice_without_its_finish_is_not_finished() -> None:
    assembler = TextChunkAssembler()
    assembler.add(_event(0, "Hel", ["Hel"]))
    assert assembler.has_choices
    assert not assembler.finished
