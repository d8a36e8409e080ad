"""An OpenAI-compatible test server for chatstep's tests and for users' own pipeline tests.

::

    import openai

    from chatstep.testing import Fail, Respond, TestServer

    with TestServer() as server:
        server.enqueue(Fail(429, retry_after_ms=10), Respond(content="hi"))
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=1)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        assert answer.choices[0].message.content == "hi"
        assert [r.body["model"] for r in server.requests] == ["gpt-4o-mini"] * 2

Unscripted requests get deterministic default answers (``"echo: <last user message>"``...;
the legacy ``/v1/completions`` continues each prompt with ``" echo: <prompt>"``).
Every request and response body is checked against the official OpenAI OpenAPI spec (see
``server.spec_violations``). ``TestServer(rpm=..., tpm=..., latency=..., fault_rate=...)``
behaves like a busy endpoint; the Files and Batch APIs run batches through the same answers,
and the Fine-tuning API trains jobs whose ``ft:`` models then answer.
With pytest, use the ``openai_server`` and ``openai_env`` fixtures. Answers that are wrong on the
wire (a 200 carrying an error, empty choices, error events in a stream...) come from
:mod:`chatstep.testing.faults`; Azure-style paths (``/openai/deployments/{name}/...``) are served.
"""

from chatstep.testing.app import create_app
from chatstep.testing.conditions import Conditions
from chatstep.testing.script import Delay, Drop, Fail, Respond, Trickle
from chatstep.testing.server import TestServer
from chatstep.testing.spec import SpecViolation
from chatstep.testing.state import RecordedRequest, ServerState, ServerStats

__all__ = [
    "Conditions",
    "Delay",
    "Drop",
    "Fail",
    "RecordedRequest",
    "Respond",
    "ServerState",
    "ServerStats",
    "SpecViolation",
    "TestServer",
    "Trickle",
    "create_app",
]
