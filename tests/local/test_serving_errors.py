"""How ``create_serving_app`` maps any backend's errors to HTTP, with a scripted backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from chatstep.backends.base import JSON, Backend, Reply, StreamReply
from chatstep.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BackendUnavailableError,
    BadRequestError,
    InternalServerError,
    PermissionDeniedError,
    RateLimitError,
)
from chatstep.serving.model_app import create_serving_app

pytestmark = pytest.mark.local


class ScriptedBackend:
    """A real Backend whose every call raises ``error`` (or streams then fails with it)."""

    name = "scripted"

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.chunks_before_error = 0
        self.seen_timeout: float | None = None
        self.stream_closed = False

    async def complete(self, body: JSON, *, timeout: float) -> Reply:
        self.seen_timeout = timeout
        if self.error is not None:
            raise self.error
        return Reply({"echo": body}, headers={"x-request-id": "req_1", "content-length": "99"})

    async def stream(self, body: JSON, *, timeout: float) -> StreamReply:
        async def chunks() -> AsyncIterator[JSON]:
            try:
                for index in range(self.chunks_before_error):
                    yield {"index": index}
                if self.error is not None:
                    raise self.error
            finally:
                self.stream_closed = True

        return StreamReply(chunks())

    async def embed(self, body: JSON, *, timeout: float) -> Reply:
        return await self.complete(body, timeout=timeout)

    async def moderate(self, body: JSON, *, timeout: float) -> Reply:
        return await self.complete(body, timeout=timeout)

    async def list_models(self, *, timeout: float) -> Reply:
        return Reply({"object": "list", "data": []})

    async def aclose(self) -> None:
        return None


@pytest.fixture
def scripted(serve_app: Any) -> Any:
    backend = ScriptedBackend()
    assert isinstance(backend, Backend)
    with serve_app(create_serving_app(backend, timeout=42.0)) as served:
        backend.url = served.base_url  # type: ignore[attr-defined]
        yield backend


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequestError("messages: bad", status_code=400, code="invalid_value"), 400),
        (AuthenticationError("key refused"), 401),
        (PermissionDeniedError("not for you"), 403),
        (RateLimitError("slow down", retry_after=2.5), 429),
        (InternalServerError("upstream broke", status_code=503), 503),
        (APITimeoutError("too slow"), 504),
        (APIConnectionError("unreachable"), 502),
        (APIError("odd"), 500),
        (BackendUnavailableError("not here"), 501),
        (RuntimeError("a bug with sk-abcdefghijklmnop inside"), 500),
    ],
)
def test_errors_become_their_http_status(scripted: Any, error: Exception, status: int) -> None:
    scripted.error = error
    response = httpx.post(f"{scripted.url}/chat/completions", json={"model": "m"})
    assert response.status_code == status
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert "sk-abcdefghijklmnop" not in response.text
    if isinstance(error, RateLimitError):
        assert response.headers["retry-after"] == "3"


def test_the_openai_client_raises_its_own_exceptions(scripted: Any) -> None:
    client = openai.OpenAI(base_url=scripted.url, api_key="unused", max_retries=0)
    scripted.error = BadRequestError(
        "messages: too long",
        status_code=400,
        code="context_length_exceeded",
        body={"message": "too long", "type": "invalid_request_error", "param": "messages"},
    )
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert error.value.code == "context_length_exceeded"
    assert error.value.param == "messages"


def test_client_timeout_and_forwarded_headers(scripted: Any) -> None:
    client = openai.OpenAI(base_url=scripted.url, api_key="unused", max_retries=0, timeout=17)
    raw = client.embeddings.with_raw_response.create(model="m", input="x")
    assert scripted.seen_timeout == 17
    assert raw.headers["x-request-id"] == "req_1"
    httpx.post(f"{scripted.url}/embeddings", json={"model": "m", "input": "x"})
    assert scripted.seen_timeout == 42.0


def test_a_failure_mid_stream_is_an_error_event(scripted: Any) -> None:
    scripted.chunks_before_error = 2
    scripted.error = InternalServerError("model crashed", status_code=500)
    body = {"model": "m", "messages": [], "stream": True}
    with httpx.stream("POST", f"{scripted.url}/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line]
    assert events[:2] == ['data: {"index":0}', 'data: {"index":1}']
    assert '"model crashed"' in events[2]
    assert "[DONE]" not in events[-1]
    assert scripted.stream_closed


def test_a_finished_stream_is_closed_and_ends_with_done(scripted: Any) -> None:
    scripted.chunks_before_error = 1
    body = {"model": "m", "messages": [], "stream": True}
    with httpx.stream("POST", f"{scripted.url}/chat/completions", json=body) as response:
        events = [line for line in response.iter_lines() if line]
    assert events == ['data: {"index":0}', "data: [DONE]"]
    assert scripted.stream_closed
