"""The moderation guard against the test server's /v1/moderations (flags words per category)."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from chatstep import AsyncRunner, FlaggedContentError, StepResult, map_step, run_step
from chatstep.storage.history import History
from chatstep.testing import Respond, TestServer

GUARDED: dict[str, Any] = {
    "id": "reply",
    "model": "gpt-4o-mini",
    "system_message": "Be kind. Never say kill.",  # the author's text is not moderated
    "prompt": "{{ inputs.text }}",
    "guard": {"input": True, "output": True},
}


def _paths(server: TestServer) -> list[str]:
    return [r.path for r in server.requests]


def test_clean_input_and_answer_pass(openai_env: TestServer) -> None:
    result = run_step(GUARDED, {"text": "Tell me about tea."})
    assert isinstance(result, StepResult)
    assert result.content
    assert _paths(openai_env) == ["/v1/moderations", "/v1/chat/completions", "/v1/moderations"]
    first, _, last = openai_env.requests
    assert first.body == {"model": "omni-moderation-latest", "input": ["Tell me about tea."]}
    assert last.body["input"] == [result.content]


def test_flagged_input_is_never_sent(openai_env: TestServer) -> None:
    with pytest.raises(FlaggedContentError) as caught:
        run_step(GUARDED, {"text": "I will kill and stab you, idiot"})
    error = caught.value
    assert error.stage == "input"
    assert error.categories[0] == "violence"  # two hits: the highest score first
    assert set(error.categories) == {"violence", "harassment"}
    assert error.scores["violence"] == pytest.approx(0.9)
    assert error.result is None
    assert "guard.input" in str(error)
    assert "violence (0.90)" in str(error)
    assert _paths(openai_env) == ["/v1/moderations"]
    again = pickle.loads(pickle.dumps(error))
    assert again.categories == error.categories


def test_flagged_answer_raises_with_the_paid_result(openai_env: TestServer) -> None:
    openai_env.enqueue(Respond(content="You should shoplift it."))
    with pytest.raises(FlaggedContentError) as caught:
        run_step(GUARDED, {"text": "How do I get a cheap phone?"})
    error = caught.value
    assert error.stage == "output"
    assert error.categories == ["illicit"]
    assert isinstance(error.result, StepResult)
    assert error.result.content == "You should shoplift it."
    assert len(_paths(openai_env)) == 3


def test_streamed_flagged_answer_never_reaches_the_caller(openai_env: TestServer) -> None:
    openai_env.enqueue(Respond(content="A bloody gore story."))
    seen: list[Any] = []
    with pytest.raises(FlaggedContentError):
        run_step(GUARDED, {"text": "A story"}, on_delta=seen.append)
    assert seen == []
    # A clean streamed answer is delivered whole once it passed.
    result = run_step(GUARDED, {"text": "A story"}, on_delta=seen.append)
    assert "".join(d.content or "" for d in seen) == result.content


def test_input_only_guard_and_another_model(openai_env: TestServer) -> None:
    step = {**GUARDED, "guard": {"output": False, "model": "text-moderation-latest"}}
    openai_env.enqueue(Respond(content="kill kill"))
    result = run_step(step, {"text": "hello"})
    assert result.content == "kill kill"
    mods = [r for r in openai_env.requests if r.path == "/v1/moderations"]
    assert [m.body["model"] for m in mods] == ["text-moderation-latest"]


def test_every_guard_call_is_in_the_history(openai_env: TestServer) -> None:
    async def main() -> None:
        async with AsyncRunner(run_id="g1") as runner:
            await runner.run(GUARDED, {"text": "hello"})

    asyncio.run(main())
    with History() as history:
        entries = history.recent(run_id="g1")
    assert sorted(e.endpoint for e in entries) == [
        "chat.completions",
        "moderations",
        "moderations",
    ]
    assert {e.step for e in entries} == {"reply", "reply.guard"}


def test_map_fails_the_flagged_row_with_its_categories(openai_env: TestServer) -> None:
    rows = [{"text": "hello"}, {"text": "you loser"}, {"text": "good day"}]
    out = map_step(GUARDED, rows, history=False)
    assert out.stats.failed == 1
    assert out.stats.done == 2
    assert "FlaggedContentError" in str(out[1])
    assert "harassment" in str(out[1])
    chats = [r for r in openai_env.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 2


def test_batch_refuses_a_guarded_step_instead_of_dropping_the_guard(
    openai_env: TestServer,
) -> None:
    from chatstep import ConfigError, submit_batch

    with pytest.raises(ConfigError) as caught:
        submit_batch(GUARDED, [{"text": "hello"}])
    assert caught.value.field == "guard"
    assert "map" in caught.value.fix
    assert openai_env.requests == []
