"""The drop-in ChatGPTTask in real local Flyte workflows, against the test server."""

from __future__ import annotations

import pytest
from flytekit import workflow

from chatstep.errors import ConfigError
from chatstep.integrations.flyte import ChatGPTTask
from chatstep.testing import Fail, TestServer

from .conftest import load_example

CHAT = "/v1/chat/completions"


def _chats(server: TestServer) -> list[dict]:  # type: ignore[type-arg]
    return [r.body for r in server.requests if r.path == CHAT]


def test_flytekit_readme_workflow_with_only_the_import_changed(openai_env: TestServer) -> None:
    example = load_example("chatgpt_workflow")
    assert example.wf(message="hi") == "echo: echo: hi"
    chats = [r for r in openai_env.requests if r.path == CHAT]
    assert [c.body["model"] for c in chats] == ["gpt-3.5-turbo", "gpt-4"]
    assert chats[0].body["messages"] == [{"role": "user", "content": "hi"}]
    assert chats[0].body["temperature"] == 0.7
    assert chats[1].body["messages"] == [{"role": "user", "content": "echo: hi"}]
    assert chats[0].headers["openai-organization"] == "org-NayNG68kGnVXMJ8Ak4PMgQv7"


def test_the_interface_is_flytekits() -> None:
    task = ChatGPTTask(name="t", chatgpt_config={"model": "gpt-4o-mini"})
    assert list(task.python_interface.inputs) == ["message"]
    assert task.python_interface.inputs["message"] is str
    assert dict(task.python_interface.outputs) == {"o0": str}
    assert task.step.timeout == 60.0


def test_a_missing_model_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'model'"):
        ChatGPTTask(name="t", chatgpt_config={"temperature": 0.7})


def test_the_flyte_secret_is_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-flyte-secret-0123456789abcdef"
    with TestServer(api_key=key) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-not-this-one-0123456789abcdef")
        monkeypatch.setenv("FLYTE_OPENAI_API_KEY", key)
        ask = ChatGPTTask(name="ask", chatgpt_config={"model": "gpt-4o-mini"})

        @workflow
        def wf(message: str) -> str:
            return ask(message=message)  # type: ignore[no-any-return]

        assert wf(message="with the flyte secret") == "echo: with the flyte secret"
        assert server.requests[-1].headers["authorization"].endswith(key[-4:])


def test_chatstep_settings_system_message_base_url_timeout_and_retries(
    openai_server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-chatstep-0000-fake")
    openai_server.enqueue(Fail(503), Fail(429, retry_after=0))
    ask = ChatGPTTask(
        name="ask-briefly",
        chatgpt_config={
            "model": "gpt-4o-mini",
            "system_message": "Answer in one word.",
            "base_url": openai_server.base_url,
            "timeout": 5,
            "max_retries": 2,
        },
    )

    @workflow
    def wf(message: str) -> str:
        return ask(message=message)  # type: ignore[no-any-return]

    assert wf(message="colour of the sky?") == "echo: colour of the sky?"
    chats = _chats(openai_server)
    assert len(chats) == 3
    assert chats[-1]["messages"] == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "colour of the sky?"},
    ]


def test_a_refused_request_fails_the_task_with_chatsteps_message(openai_env: TestServer) -> None:
    openai_env.enqueue(Fail(400, message="unsupported value: temperature"))
    ask = ChatGPTTask(name="refused", chatgpt_config={"model": "gpt-4o-mini"})

    @workflow
    def wf(message: str) -> str:
        return ask(message=message)  # type: ignore[no-any-return]

    with pytest.raises(Exception, match=r"BadRequestError.*unsupported value: temperature"):
        wf(message="x")


def test_a_literal_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="api_key"):
        ChatGPTTask(name="t", chatgpt_config={"model": "m", "api_key": "sk-literal-0123456789"})


def test_unknown_config_keys_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"chatgpt_config\.temprature"):
        ChatGPTTask(name="t", chatgpt_config={"model": "m", "temprature": 0.2})
