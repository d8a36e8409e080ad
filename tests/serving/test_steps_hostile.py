"""Hostile requests to a served steps app (found by trying to break it): every one is a 4xx
saying what is wrong, or 5xx saying the server is misconfigured; never a 500 traceback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.testing import TestServer

from .conftest import ServedSteps
from .test_steps_http import Serve, sse_events

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _chunked(*pieces: bytes) -> Iterator[bytes]:
    yield from pieces


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"text":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"text":' + b"[" * 900 + b"]" * 900 + b"}", "nested too deeply"),
        (b'{"text":' + b"9" * 5000 + b"}", "more than 4,300 digits"),
        (b'{"text": 1e999999}', "too large for a number"),
        (b'{"text": NaN}', "NaN is not JSON"),
        (b'{"text": -Infinity}', "Infinity is not JSON"),
        (b'{"text": "\\ud800 x"}', "lone surrogate"),
        (b'{"text": "\xff\xfe"}', "not UTF-8 (byte 10)"),
        (b"[1, 2]", "not an array"),
        (b"null", "not null"),
        (b'"text"', "not a string"),
        (b"text=hello", "not valid JSON"),
    ],
)
def test_hostile_bodies_are_400_saying_why(
    serve_steps: Serve, step_dir: Path, openai_env: TestServer, body: bytes, says: str
) -> None:
    served = serve_steps(step_dir)
    answer = httpx.post(served.url("/steps/summarize"), content=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_body"
    assert says in error["message"]
    assert "Traceback" not in answer.text
    assert "sys." not in error["message"]
    assert openai_env.requests == []


def test_a_chunked_body_over_max_body_is_413(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir, max_body_bytes=1000)
    pieces = [b'{"text": "', *([b"x" * 300] * 10), b'"}']
    answer = httpx.post(served.url("/steps/summarize"), content=_chunked(*pieces))
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "body_too_large"


def test_an_input_that_is_a_template_is_sent_as_text(
    serve_steps: Serve, tmp_path: Path, openai_env: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAKY_SECRET", "sk-leak-0123456789abcdef")
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "echo.yaml").write_text("model: gpt-4o-mini\nprompt: 'Say {{ inputs.text }}'\n")
    served = serve_steps(steps)
    value = "{{ secret('LEAKY_SECRET') }} {{ secrets.LEAKY_SECRET }} {% raw %}"
    answer = httpx.post(served.url("/steps/echo"), json={"text": value})
    assert answer.status_code == 200, answer.text
    (sent,) = openai_env.requests
    assert sent.body["messages"][-1]["content"] == f"Say {value}"
    assert "sk-leak" not in answer.text


def test_an_unknown_step_id_is_quoted_short(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir)
    answer = httpx.post(served.url("/steps/" + "a" * 5000), json={})
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert len(message) < 400
    assert "cut from 5,000 characters" in message
    for odd in ("..%2F..%2Fetc%2Fpasswd", "%00", "SUMMARIZE", "summarize.yaml"):
        answer = httpx.post(served.url("/steps/" + odd), json={"text": "x"})
        assert answer.status_code == 404, (odd, answer.text)


@pytest.fixture
def handbook_steps(tmp_path: Path, openai_env: TestServer) -> Path:
    docs = shutil.copytree(EXAMPLES / "rag" / "handbook", tmp_path / "handbook")
    out = CliRunner().invoke(
        app, ["index", "build", str(docs), "--step", str(EXAMPLES / "embed.yaml")]
    )
    assert out.exit_code == 0, out.output
    steps = tmp_path / "steps"
    steps.mkdir()
    shutil.copy(EXAMPLES / "rag" / "answer.yaml", steps / "answer.yaml")
    openai_env.reset()
    return steps


def _chat_system(server: TestServer) -> str:
    (chat,) = [r.body for r in server.requests if r.path.endswith("/chat/completions")]
    return str(chat["messages"][0]["content"])


def test_a_step_with_retrieve_is_served(
    serve_steps: Serve, handbook_steps: Path, openai_env: TestServer
) -> None:
    served: ServedSteps = serve_steps(handbook_steps)
    question = {"question": "How long does express delivery take?"}
    answer = httpx.post(served.url("/steps/answer"), json=question)
    assert answer.status_code == 200, answer.text
    assert answer.json()["retrieved"][0]["source"] == "shipping.md"
    assert "[shipping.md]" in _chat_system(openai_env)
    openai_env.reset()
    with httpx.stream("POST", served.url("/steps/answer?stream=1"), json=question) as streamed:
        events = sse_events(streamed.read().decode())
    assert events[-1][0] == "result", events[-1]
    assert "[shipping.md]" in _chat_system(openai_env)


def test_a_missing_index_is_the_servers_misconfiguration(
    serve_steps: Serve, tmp_path: Path, openai_env: TestServer
) -> None:
    steps = tmp_path / "steps"
    steps.mkdir()
    shutil.copy(EXAMPLES / "rag" / "answer.yaml", steps / "answer.yaml")
    served = serve_steps(steps)
    answer = httpx.post(served.url("/steps/answer"), json={"question": "express?"})
    assert answer.status_code == 500, answer.text
    assert answer.json()["error"]["code"] == "step_misconfigured"
    assert answer.json()["error"]["param"] is None
    too_long = httpx.post(served.url("/steps/answer"), json={"question": "x" * 30_000})
    assert too_long.status_code == 422, too_long.text
    assert too_long.json()["error"]["param"] == "question"


def test_auth_edge_cases(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir, api_key="s3rvice-key")
    post = served.url("/steps/summarize")
    for header in ("", "Bearer", "Basic s3rvice-key", "s3rvice-key", "Bearer s3rvice"):
        answer = httpx.post(post, json={"text": "x"}, headers={"Authorization": header})
        assert answer.status_code == 401, header
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "s3rvice-key" not in answer.text
    for header in ("bearer s3rvice-key", "BEARER  s3rvice-key"):
        answer = httpx.post(post, json={"text": "x"}, headers={"Authorization": header})
        assert answer.status_code == 200, header


def test_an_empty_api_key_is_refused_not_open(step_dir: Path) -> None:
    from chatstep.errors import ConfigError
    from chatstep.serving.steps import steps_app

    for key in ("", " ", " key"):
        with pytest.raises(ConfigError, match="api_key: is empty or starts"):
            steps_app(step_dir, api_key=key)


def test_a_step_called_with_get_is_405_saying_so(serve_steps: Serve, step_dir: Path) -> None:
    served = serve_steps(step_dir)
    answer = httpx.get(served.url("/steps/summarize"))
    assert answer.status_code == 405
    assert "method not allowed" in answer.json()["error"]["message"]
