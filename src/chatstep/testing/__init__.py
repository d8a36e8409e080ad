"""An OpenAI-compatible test server for chatstep's tests and for users' own pipeline tests.

::

    from chatstep.testing import Fail, Respond, TestServer

    with TestServer() as server:
        server.enqueue(Fail(429, retry_after=1), Respond(content="hi"))
        ...  # point the client at server.base_url
        assert server.requests[-1].body["model"] == "gpt-4o-mini"

Unscripted requests get deterministic default answers (``"echo: <last user message>"``...).
Every request and response body is checked against the official OpenAI OpenAPI spec; see
``server.spec_violations``. With pytest, use the ``openai_server`` and ``openai_env`` fixtures.
"""

from chatstep.testing.app import create_app
from chatstep.testing.script import Delay, Drop, Fail, Respond
from chatstep.testing.server import TestServer
from chatstep.testing.spec import SpecViolation
from chatstep.testing.state import RecordedRequest, ServerState

__all__ = [
    "Delay",
    "Drop",
    "Fail",
    "RecordedRequest",
    "Respond",
    "ServerState",
    "SpecViolation",
    "TestServer",
    "create_app",
]
