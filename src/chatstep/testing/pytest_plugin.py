"""pytest plugin (registered as ``chatstep``): the ``openai_server`` and ``openai_env`` fixtures.

``openai_server`` is one :class:`~chatstep.testing.TestServer` per session, reset before each
test; a test fails at teardown if the server saw a request or response that does not match the
OpenAI spec, unless it called ``openai_server.allow_spec_violations()``. ``openai_env`` also
points ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` at it.

The server is imported lazily so that merely having chatstep installed costs pytest nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from chatstep.testing.server import TestServer

__all__ = ["FAKE_API_KEY", "openai_env", "openai_server"]

FAKE_API_KEY = "sk-test-chatstep-0000-fake"
"""The API key ``openai_env`` sets: shaped like a key, accepted by the test server, never real."""


@pytest.fixture(scope="session")
def _chatstep_openai_server_session() -> Iterator[TestServer]:
    from chatstep.testing.server import TestServer

    with TestServer() as server:
        yield server


@pytest.fixture
def openai_server(_chatstep_openai_server_session: TestServer) -> Iterator[TestServer]:
    """The session's OpenAI-compatible test server, reset for this test."""
    server = _chatstep_openai_server_session
    server.reset()
    yield server
    violations = server.spec_violations
    allowed = server.state.violations_allowed
    server.reset()
    if violations and not allowed:
        listed = "\n".join(f"  - {violation}" for violation in violations)
        pytest.fail(
            f"the OpenAI test server saw {len(violations)} spec violation(s):\n{listed}\n"
            "Fix the request or the scripted answer, or call "
            "openai_server.allow_spec_violations() if the test expects them.",
            pytrace=False,
        )


@pytest.fixture
def openai_env(openai_server: TestServer, monkeypatch: pytest.MonkeyPatch) -> TestServer:
    """The test server, with ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` pointing at it."""
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_API_KEY)
    return openai_server
