"""Conversations over the real test server: turns, persistence, context strategies."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatstep import (
    AsyncConversation,
    ConfigError,
    Conversation,
    SlidingWindow,
    StepResult,
    Summarize,
)
from chatstep.storage.conversations import ConversationStore
from chatstep.storage.history import SCHEMA_VERSION, History, HistoryEntry
from chatstep.testing import Respond, TestServer

WORDS = "word " * 20


def sent_messages(server: TestServer) -> list[list[dict[str, Any]]]:
    return [r.body["messages"] for r in server.requests]


def test_each_turn_sends_the_whole_conversation(openai_env: TestServer) -> None:
    with Conversation("gpt-4o-mini", system="Be brief.") as chat:
        first = chat.send("hello {{ not a template }}")
        assert isinstance(first, StepResult)
        assert first.content == "echo: hello {{ not a template }}"
        chat.send("again")
        assert chat.messages == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello {{ not a template }}"},
            {"role": "assistant", "content": "echo: hello {{ not a template }}"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "echo: again"},
        ]
    assert sent_messages(openai_env)[1] == chat.messages[:4]


def test_a_failed_turn_is_not_stored(openai_env: TestServer) -> None:
    from chatstep import BadRequestError
    from chatstep.testing import Fail

    with Conversation("gpt-4o-mini") as chat:
        openai_env.enqueue(Fail(400))
        with pytest.raises(BadRequestError):
            chat.send("refused")
        assert chat.messages == []
        chat.send("fine")
        assert [m["content"] for m in chat.messages] == ["fine", "echo: fine"]


def test_a_conversation_continues_in_another_process(
    openai_env: TestServer, tmp_path: Path
) -> None:
    with Conversation("gpt-4.1-mini", system="S") as chat:
        chat.send("one")
        cid = chat.id
    script = (
        "import json, sys, chatstep\n"
        "with chatstep.Conversation.load(sys.argv[1][:12]) as c:\n"
        "    c.send('two')\n"
        "    print(json.dumps({'model': c.model, 'messages': c.messages}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, cid], capture_output=True, text=True, check=True
    )
    seen = json.loads(done.stdout)
    assert seen["model"] == "gpt-4.1-mini"
    assert [m["content"] for m in seen["messages"]] == ["S", "one", "echo: one", "two", "echo: two"]
    assert openai_env.requests[-1].body["model"] == "gpt-4.1-mini"
    # Back in this process, the turn the other one added is there.
    with Conversation.load(cid) as again:
        assert len(again.messages) == 5
        assert Conversation.latest() is not None


def test_an_unknown_id_is_a_config_error(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError, match="names no stored conversation"):
        Conversation.load("01NOSUCHCONVERSATION")


def test_from_a_step_its_prompt_wraps_each_turn(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "pirate.yaml"
    step.write_text(
        "id: pirate\nmodel: gpt-4o-mini\ntemperature: 0.2\n"
        "system_message: 'You are a {{ inputs.persona }}.'\n"
        "prompt: 'Arr: {{ inputs.text }}'\n"
    )
    with Conversation(step=step, inputs={"persona": "pirate"}) as chat:
        chat.send("hello")
        chat.send("{{ x }}")
    body = openai_env.requests[-1].body
    assert body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Arr: hello"},
        {"role": "assistant", "content": "echo: Arr: hello"},
        {"role": "user", "content": "Arr: {{ x }}"},
    ]


def test_an_embedding_step_is_refused(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError, match="needs a chat step"):
        Conversation(step={"type": "embedding", "model": "text-embedding-3-small", "input": "x"})


def test_a_step_with_retrieve_is_refused_naming_the_field(openai_env: TestServer) -> None:
    step = {
        "model": "gpt-4o-mini",
        "retrieve": {"index": "handbook", "query": "{{ inputs.text }}"},
        "system_message": "{% for c in retrieved %}{{ c.text }}{% endfor %}",
    }
    with pytest.raises(ConfigError, match=r"step\.retrieve"):
        Conversation(step=step)


def test_too_long_without_a_strategy_is_an_error_naming_both_sizes(
    openai_env: TestServer,
) -> None:
    with Conversation("gpt-4o-mini", context_window=80) as chat:
        chat.send(WORDS)
        sent = len(openai_env.requests)
        with pytest.raises(ConfigError) as caught:
            chat.send(WORDS)
        assert "context window of 'gpt-4o-mini', 80 tokens" in str(caught.value)
        assert "the prompt counts" in str(caught.value)
        assert "no context strategy" in str(caught.value)
        assert len(openai_env.requests) == sent  # nothing sent, nothing stored
        assert len(chat.messages) == 2


def test_sliding_window_drops_oldest_whole_turns_and_keeps_the_system(
    openai_env: TestServer,
) -> None:
    with Conversation(
        "gpt-4o-mini", system="S", strategy="sliding_window", context_window=150
    ) as chat:
        for n in range(6):
            chat.send(f"turn {n} {WORDS}")
        sent = openai_env.requests[-1].body["messages"]
        assert sent[0] == {"role": "system", "content": "S"}
        assert sent[-1]["content"].startswith("turn 5")
        assert sent[1]["role"] == "user"  # whole turns: never an answer without its question
        assert not any(m["content"].startswith("turn 0") for m in sent)
        # The stored conversation keeps every turn; only the request left them out.
        assert len(chat.messages) == 1 + 12


def test_sliding_window_drops_a_tool_call_with_its_result(openai_env: TestServer) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    openai_env.enqueue(Respond(tool_calls=[call]))
    with Conversation("gpt-4o-mini", strategy=SlidingWindow(), context_window=120) as chat:
        chat.send(f"use the tool {WORDS}")
        chat.add_message({"role": "tool", "tool_call_id": "call_1", "content": "42"})
        chat.send(None)  # the answer to the tool result
        chat.send(f"next {WORDS}")
        chat.send(f"last {WORDS}")
    sent = openai_env.requests[-1].body["messages"]
    roles = [m["role"] for m in sent]
    assert "tool" not in roles
    assert not any(m.get("tool_calls") for m in sent)
    assert roles[0] == "user"


def test_sliding_window_cannot_fit_one_long_message(openai_env: TestServer) -> None:
    chat = Conversation("gpt-4o-mini", strategy="sliding_window", context_window=60)
    with chat, pytest.raises(ConfigError, match=r"\d+ tokens, more than the context window"):
        chat.send(WORDS * 3)
    assert openai_env.requests == []


def test_sliding_window_gives_up_naming_both_sizes(openai_env: TestServer) -> None:
    # The system message leaves room for a short turn only: dropping turns cannot help.
    with Conversation(
        "gpt-4o-mini", system=WORDS * 2, strategy="sliding_window", context_window=60
    ) as chat:
        chat.send("hi")
        with pytest.raises(ConfigError) as caught:
            chat.send("a longer turn " + "word " * 10)
    message = str(caught.value)
    assert "even after the sliding_window strategy" in message
    assert "context window of 'gpt-4o-mini', 60 tokens" in message
    assert "the prompt counts" in message
    assert len(openai_env.requests) == 1


def test_summarize_replaces_older_turns_and_persists_the_summary(
    openai_env: TestServer,
) -> None:
    strategy = Summarize(keep_turns=1)
    with Conversation("gpt-4o-mini", system="S", strategy=strategy, context_window=300) as chat:
        for n in range(8):
            chat.send(f"turn {n} {WORDS}")
        cid = chat.id
        summary_calls = [
            r.body
            for r in openai_env.requests
            if r.body["messages"][0]["role"] == "system"
            and r.body["messages"][0]["content"].startswith("You summarize")
        ]
        assert summary_calls, "the summarize step was never called"
        assert summary_calls[0]["model"] == "gpt-4o-mini"
        assert "user: turn 0" in summary_calls[0]["messages"][1]["content"]
        messages = chat.messages
        assert messages[0] == {"role": "system", "content": "S"}
        assert messages[1]["role"] == "system"
        assert messages[1]["content"].startswith("Summary of the earlier conversation:\necho: ")
        assert not any(m["content"].startswith("turn 0") for m in messages)
        last = openai_env.requests[-1].body["messages"]
        assert last[:2] == messages[:2]
        transcript = chat.transcript()
        assert any(m["content"].startswith("turn 0") for m in transcript)  # nothing lost
    with Conversation.load(cid) as again:
        assert again.messages == messages  # the summary was stored, and so was the strategy
        assert isinstance(again._conversation.strategy, Summarize)


def test_summarize_through_a_given_step(openai_env: TestServer) -> None:
    summarizer = {
        "model": "gpt-4.1-nano",
        "prompt": "Summarize: {{ inputs.transcript }}",
        "max_tokens": 40,
    }
    strategy = Summarize(step=summarizer, keep_turns=0)
    with Conversation("gpt-4o-mini", strategy=strategy, context_window=150) as chat:
        for n in range(4):
            chat.send(f"turn {n} {WORDS}")
    models = [r.body["model"] for r in openai_env.requests]
    assert "gpt-4.1-nano" in models
    nano = next(r.body for r in openai_env.requests if r.body["model"] == "gpt-4.1-nano")
    assert nano["messages"][0]["content"].startswith("Summarize: user: turn 0")


def test_an_unknown_strategy_is_refused(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError, match="sliding_window, summarize"):
        Conversation("gpt-4o-mini", strategy="truncate")


def test_async_conversation(openai_env: TestServer) -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        async with AsyncConversation("gpt-4o-mini") as chat:
            await chat.send("a", on_delta=lambda d: seen.append(d.content or ""))
            await chat.send("b")
            assert "".join(seen) == "echo: a"
            return [m["content"] for m in chat.messages]

    assert asyncio.run(main()) == ["a", "echo: a", "b", "echo: b"]
    assert openai_env.requests[0].body["stream"] is True


def test_history_off_keeps_conversations_in_memory(
    openai_env: TestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CHATSTEP_HISTORY", "off")
    with Conversation("gpt-4o-mini") as chat:
        chat.send("x")
        with Conversation.load(chat.id) as same:
            assert len(same.messages) == 2
    assert not (tmp_path / "chatstep-home" / "history.sqlite3").exists()


def test_a_version_2_history_gains_the_conversation_tables(
    openai_env: TestServer, tmp_path: Path
) -> None:
    from chatstep.storage.history import MIGRATIONS

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:2]:
        migration(conn)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with History(path) as history:
        history.record(HistoryEntry(request={"model": "m"}))
        assert history.count() == 1
    store = ConversationStore(path)
    with Conversation("gpt-4o-mini", store=store) as chat:
        chat.send("x")
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM conversation_messages").fetchone()[0] == 2
    assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] >= 1
    conn.close()


def test_a_literal_api_key_is_never_stored(openai_env: TestServer, tmp_path: Path) -> None:
    from chatstep.testing.pytest_plugin import FAKE_API_KEY

    step = {"model": "gpt-4o-mini", "prompt": "{{ inputs.text }}", "api_key": FAKE_API_KEY}
    with Conversation(step=step) as chat:
        chat.send(f"my key is {FAKE_API_KEY}")
    data = (tmp_path / "chatstep-home" / "history.sqlite3").read_bytes()
    assert FAKE_API_KEY.encode() not in data


def test_a_strategy_or_model_given_on_load_is_kept(openai_env: TestServer) -> None:
    with Conversation("gpt-4o-mini", name="notes") as chat:
        chat.send("x")
    with Conversation.load(chat.id, model="gpt-4.1-mini", strategy="sliding_window"):
        pass
    with Conversation.load(chat.id) as again:
        assert isinstance(again._conversation.strategy, SlidingWindow)
        assert again.model == "gpt-4.1-mini"
        assert again.name == "notes"
        again.send("y")
    assert openai_env.requests[-1].body["model"] == "gpt-4.1-mini"


def test_a_new_turn_before_the_tool_results_is_refused_before_sending(
    openai_env: TestServer,
) -> None:
    # The API answers such a request with a 400, turn after turn: the conversation was stuck.
    call = {"id": "call_7", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    openai_env.enqueue(Respond(tool_calls=[call]))
    with Conversation("gpt-4o-mini") as chat:
        chat.send("use the tool")
        sent = len(openai_env.requests)
        with pytest.raises(ConfigError, match=r"call_7.*add_message"):
            chat.send("never mind")
        assert len(openai_env.requests) == sent
        chat.add_message({"role": "tool", "tool_call_id": "call_7", "content": "42"})
        chat.send(None)
        assert chat.send("thanks").content == "echo: thanks"


@pytest.mark.parametrize("cid", ["", "   ", "%", "_", "0_", "01%"])
def test_a_cid_is_matched_literally_never_as_a_pattern(openai_env: TestServer, cid: str) -> None:
    with Conversation("gpt-4o-mini") as chat:
        chat.send("hello")
    with pytest.raises(ConfigError, match="cid"):
        Conversation.load(cid)
    with Conversation.load(f" {chat.id[:6]} ") as again:  # a pasted prefix, spaces and all
        assert again.id == chat.id
