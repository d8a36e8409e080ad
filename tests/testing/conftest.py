"""Fixtures for the test server's own tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

import openai
import pytest

from chatstep.testing import TestServer

# The plugin is registered through an entry point once chatstep is installed; when the tests run
# from a source tree (PYTHONPATH=src) its fixtures are imported here instead.
if not any(ep.value == "chatstep.testing.pytest_plugin" for ep in entry_points(group="pytest11")):
    from chatstep.testing.pytest_plugin import (  # noqa: F401
        _chatstep_openai_server_session,
        openai_env,
        openai_server,
    )


@pytest.fixture
def client(openai_server: TestServer) -> Iterator[openai.OpenAI]:
    """An OpenAI SDK client on the test server, with the SDK's own retries off."""
    with openai.OpenAI(base_url=openai_server.base_url, api_key="sk-fake", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def assemble() -> Callable[[list[Any]], dict[str, Any]]:
    """Reassembles streamed chat chunks (see :func:`assemble_chunks`)."""
    return assemble_chunks


def assemble_chunks(chunks: list[Any]) -> dict[str, Any]:
    """Reassemble streamed chat chunks (SDK objects or dicts) into message, finish, usage."""
    content: str | None = None
    refusal: str | None = None
    calls: dict[int, dict[str, Any]] = {}
    function_call: dict[str, str] | None = None
    finish: str | None = None
    usage: Any = None
    for chunk in chunks:
        data = chunk if isinstance(chunk, dict) else chunk.model_dump()
        if data.get("usage"):
            usage = data["usage"]
        for choice in data["choices"]:
            delta = choice["delta"]
            if delta.get("content") is not None:
                content = (content or "") + delta["content"]
            if delta.get("refusal") is not None:
                refusal = (refusal or "") + delta["refusal"]
            for part in delta.get("tool_calls") or []:
                call = calls.setdefault(
                    part["index"],
                    {"id": None, "type": None, "function": {"name": None, "arguments": ""}},
                )
                if part.get("id"):
                    call["id"] = part["id"]
                if part.get("type"):
                    call["type"] = part["type"]
                function = part.get("function") or {}
                if function.get("name"):
                    call["function"]["name"] = function["name"]
                call["function"]["arguments"] += function.get("arguments") or ""
            if delta.get("function_call"):
                function_call = function_call or {"name": "", "arguments": ""}
                function_call["name"] += delta["function_call"].get("name") or ""
                function_call["arguments"] += delta["function_call"].get("arguments") or ""
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    return {
        "content": content or None,
        "refusal": refusal,
        "tool_calls": [calls[i] for i in sorted(calls)] or None,
        "function_call": function_call,
        "finish_reason": finish,
        "usage": usage,
    }
