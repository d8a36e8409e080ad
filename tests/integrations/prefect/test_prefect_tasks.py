"""chatstep tasks in real Prefect flow runs under ``prefect_test_harness``, against the test server.

Runs in its own virtualenv (``ci/integration.sh prefect``); skipped where Prefect is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("prefect", reason="needs the [prefect] extra")

from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from chatstep.core.result import StepResult
from chatstep.integrations.prefect import ChatstepConnection, chatstep_task, run_chat_step
from chatstep.testing import Respond, TestServer

BLOCK_KEY = "sk-test-prefect-block-0000-pf01"


@pytest.fixture(scope="module", autouse=True)
def _harness() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # The temporary server migrates a fresh SQLite database first: slow on small machines.
        with prefect_test_harness(server_startup_timeout=300):
            yield


def _artifacts() -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        return {a.key: a for a in client.read_artifacts() if a.key}


def test_flow_with_two_chatstep_tasks_and_a_block(openai_server: TestServer) -> None:
    ChatstepConnection(api_key=BLOCK_KEY, base_url=openai_server.base_url).save(
        "test-endpoint", overwrite=True
    )
    openai_server.enqueue(Respond(content="A late parcel, great sound."))
    summarize = chatstep_task(
        {"id": "summarize", "model": "gpt-4o-mini", "prompt": "Summarize: {{ inputs.review }}"},
        connection="test-endpoint",
    )
    reply = chatstep_task(
        {
            "id": "reply",
            "model": "gpt-4o-mini",
            "prompt": "Reply to: {{ outputs.summarize.choices[0].message.content }}",
            "response_format": {"type": "json_object"},
        },
        retries=1,
    )

    @flow
    def triage(review: str) -> tuple[StepResult, StepResult]:
        summary = summarize(inputs={"review": review})
        answer = reply(outputs={"summarize": summary}, connection="test-endpoint")
        return summary, answer

    summary, answer = triage("The parcel was late but the sound is great.")
    # Results come back as chatstep's Python objects.
    assert isinstance(summary, StepResult)
    assert summary.content == "A late parcel, great sound."
    assert isinstance(answer, StepResult)
    assert answer.parsed == {"echo": "Reply to: A late parcel, great sound."}

    first, second = openai_server.requests
    assert first.body["messages"] == [
        {"role": "user", "content": "Summarize: The parcel was late but the sound is great."}
    ]
    assert second.body["messages"] == [
        {"role": "user", "content": "Reply to: A late parcel, great sound."}
    ]
    assert second.body["response_format"] == {"type": "json_object"}
    assert first.headers["authorization"] == "Bearer ..." + BLOCK_KEY[-4:]

    artifacts = _artifacts()
    usage = artifacts["chatstep-usage-summarize"]
    assert usage.type == "table"
    data = json.loads(usage.data) if isinstance(usage.data, str) else usage.data
    (row,) = data
    assert row["step"] == "summarize"
    assert row["model"] == "gpt-4o-mini"
    assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"] > 0
    assert usage.task_run_id is not None
    assert "chatstep-usage-reply" in artifacts


def test_run_chat_step_in_a_users_own_task(openai_env: TestServer) -> None:
    ask = task(run_chat_step)

    @flow
    def one(text: str) -> str | None:
        result = ask({"model": "gpt-4o-mini", "prompt": "{{ inputs.t }}"}, {"t": text})
        assert isinstance(result, StepResult)
        return result.content

    # No block: the connection comes from OPENAI_BASE_URL / OPENAI_API_KEY (openai_env).
    assert one("hello") == "echo: hello"
    assert openai_env.requests[-1].body["messages"] == [{"role": "user", "content": "hello"}]


async def _async_flow_body(server: TestServer) -> str | None:
    step_task = chatstep_task({"model": "gpt-4o-mini", "prompt": "async {{ inputs.x }}"})
    connection = ChatstepConnection(api_key=BLOCK_KEY, base_url=server.base_url)
    result = step_task(inputs={"x": 1}, connection=connection)
    return result.content


def test_chatstep_task_in_an_async_flow(openai_server: TestServer) -> None:
    import asyncio

    @flow
    async def async_flow() -> str | None:
        return await _async_flow_body(openai_server)

    assert asyncio.run(async_flow()) == "echo: async 1"


@pytest.mark.filterwarnings("error::FutureWarning")  # no artifact outside a run
def test_run_chat_step_outside_prefect(openai_env: TestServer) -> None:
    result = run_chat_step({"model": "gpt-4o-mini", "prompt": "plain"})
    assert isinstance(result, StepResult)
    assert result.content == "echo: plain"
