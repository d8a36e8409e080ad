"""Azure OpenAI (issue 10, item 6): deployment URLs with ``?api-version=``, the SDK's Azure env
conventions, the ``api-key`` header, ``extra_query``, and the Batch API on the same connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatstep import ConfigError, StepResult, run_step
from chatstep.batch.api import PollSchedule, batch_results, poll_batch, submit_batch
from chatstep.batch.client import BatchClient
from chatstep.core.connection import resolve_connection, split_base_url
from chatstep.secrets import default_secret_store
from chatstep.steps.definitions import ChatCompletion
from chatstep.testing import TestServer

AZURE_KEY = "azure-test-key-0123456789abcdef"
VERSION = "2024-10-21"

FAST_POLL = PollSchedule(initial=0.05, factor=1.5, maximum=0.5)


@pytest.fixture
def azure() -> Iterator[TestServer]:
    with TestServer(api_key=AZURE_KEY) as server:
        yield server


def _root(server: TestServer) -> str:
    return server.base_url.removesuffix("/v1")


def _chat_paths(server: TestServer) -> list[tuple[str, dict[str, str]]]:
    return [(r.path, r.query) for r in server.requests if r.path.endswith("/chat/completions")]


def test_split_base_url_moves_the_query_out() -> None:
    assert split_base_url("https://h/openai/deployments/d?api-version=X&a=1") == (
        "https://h/openai/deployments/d",
        (("api-version", "X"), ("a", "1")),
    )
    assert split_base_url("https://h/v1") == ("https://h/v1", ())


def test_a_deployment_url_with_api_version_reaches_the_deployment(azure: TestServer) -> None:
    base_url = f"{_root(azure)}/openai/deployments/dep1?api-version={VERSION}"
    result = run_step(
        {"model": "gpt-4o-mini", "prompt": "hi", "base_url": base_url, "api_key": AZURE_KEY}
    )
    assert isinstance(result, StepResult)
    assert result.content == "echo: hi"
    assert _chat_paths(azure) == [
        ("/openai/deployments/dep1/chat/completions", {"api-version": VERSION})
    ]
    headers = azure.requests[-1].headers
    assert "api-key" in headers
    assert "authorization" not in headers


def test_the_sdk_azure_environment_is_honoured(
    azure: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", _root(azure))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", VERSION)
    result = run_step({"model": "dep2", "prompt": "hi", "extra_query": {"tenant": "t1"}})
    assert result.content == "echo: hi"
    assert _chat_paths(azure) == [
        ("/openai/deployments/dep2/chat/completions", {"api-version": VERSION, "tenant": "t1"})
    ]


def test_api_version_field_wins_and_streams_work(azure: TestServer) -> None:
    step = {
        "model": "dep3",
        "prompt": "hi",
        "base_url": f"{_root(azure)}/openai",
        "api_version": "2025-01-01-preview",
        "api_key": AZURE_KEY,
    }
    assert run_step(step, stream=True).content == "echo: hi"
    assert _chat_paths(azure) == [
        ("/openai/deployments/dep3/chat/completions", {"api-version": "2025-01-01-preview"})
    ]


def test_a_wrong_azure_key_is_refused(azure: TestServer) -> None:
    base_url = f"{_root(azure)}/openai/deployments/dep1?api-version={VERSION}"
    with pytest.raises(Exception, match="401"):
        run_step({"model": "m", "prompt": "hi", "base_url": base_url, "api_key": "wrong-key-0000"})


def test_an_azure_host_without_api_version_is_a_config_error() -> None:
    step = ChatCompletion(
        model="m", prompt="x", base_url="https://res.openai.azure.com/openai", api_key="k" * 20
    )
    with pytest.raises(ConfigError, match="api_version"):
        resolve_connection(step, default_secret_store())


def test_a_plain_base_url_query_becomes_default_query(openai_server: TestServer) -> None:
    step = {
        "model": "m",
        "prompt": "hi",
        "base_url": f"{openai_server.base_url}?route=eu",
        "api_key": "sk-test-plain-0000",
    }
    assert run_step(step).content == "echo: hi"
    assert _chat_paths(openai_server) == [("/v1/chat/completions", {"route": "eu"})]


def test_the_batch_client_uses_the_azure_connection(azure: TestServer, tmp_path: Path) -> None:
    step = ChatCompletion(
        model="dep1",
        prompt="x",
        base_url=f"{_root(azure)}/openai?api-version={VERSION}",
        api_key=AZURE_KEY,
    )
    conn = resolve_connection(step, default_secret_store())
    upload = tmp_path / "in.jsonl"
    upload.write_text("")

    async def main() -> list[str]:
        async with BatchClient(conn) as client:
            listed = await client.recent()
            return [str(b.get("id")) for b in listed]

    assert asyncio.run(main()) == []
    (request,) = [r for r in azure.requests if r.path == "/openai/batches"]
    assert request.query["api-version"] == VERSION
    assert "api-key" in request.headers


def test_a_batch_job_submits_waits_and_joins_on_azure(
    azure: TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", _root(azure))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", VERSION)
    rows = [{"text": f"row {i}"} for i in range(3)]
    job = submit_batch({"model": "dep1", "prompt": "{{ inputs.text }}"}, rows)
    assert job.connection.api_version == VERSION
    done = poll_batch(job.id, poll=FAST_POLL)
    assert done.status == "completed"
    results = batch_results(job.id, rows=rows)
    assert [r["content"] for r in results] == [f"echo: row {i}" for i in range(3)]
    # Every HTTP call went to Azure paths (batch lines are recorded under their /v1 url).
    http = [r for r in azure.requests if r.path != "/v1/chat/completions"]
    assert {r.path.split("/")[2] for r in http} == {"files", "batches"}
    assert all(r.path.startswith("/openai/") for r in http)
