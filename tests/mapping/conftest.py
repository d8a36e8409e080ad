"""Fixtures for mapping tests: a test server with service conditions, and an environment on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from chatstep.core.retry import RetryPolicy
from chatstep.testing import TestServer

FAKE_KEY = "sk-test-mapping-0000-fake"
# Quick retries: the tests exercise retrying, not waiting.
FAST_RETRY = RetryPolicy(initial_delay=0.01, max_delay=0.05, max_retry_after=5.0)

ServerFactory = Callable[..., TestServer]


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerFactory]:
    """Start a TestServer with the given conditions and point OPENAI_* at it."""
    with ExitStack() as stack:

        def start(**conditions: Any) -> TestServer:
            server = stack.enter_context(TestServer(**conditions))
            monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
            monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
            return server

        yield start


def chat_bodies(server: TestServer) -> list[dict[str, Any]]:
    """Bodies of the chat requests the server received, in arrival order."""
    return [
        r.body
        for r in server.requests
        if r.path.endswith("/chat/completions") and isinstance(r.body, dict)
    ]


def prompt_of(body: dict[str, Any]) -> str:
    """The last user message of a chat body."""
    return str(body["messages"][-1]["content"])
