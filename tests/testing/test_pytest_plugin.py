"""The pytest plugin, run in a child pytest the way a user's test suite would use it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

USER_TESTS = """
import os

import httpx
import openai

from chatstep.testing import Respond


URLS = []


def test_scripted(openai_server):
    URLS.append(openai_server.base_url)
    openai_server.enqueue(Respond(content="scripted"))
    client = openai.OpenAI(base_url=openai_server.base_url, api_key="sk-x", max_retries=0)
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert answer.choices[0].message.content == "scripted"


def test_reset_between_tests(openai_server):
    assert openai_server.requests == []
    assert openai_server.pending() == 0


def test_env(openai_env):
    assert os.environ["OPENAI_BASE_URL"] == openai_env.base_url
    assert os.environ["OPENAI_API_KEY"].startswith("sk-test-")
    client = openai.OpenAI(max_retries=0)
    assert client.models.list().data


def test_violation_fails(openai_server):
    httpx.post(f"{openai_server.base_url}/chat/completions", json={"messages": []})


def test_violation_allowed(openai_server):
    openai_server.allow_spec_violations()
    httpx.post(f"{openai_server.base_url}/chat/completions", json={"messages": []})


def test_same_server_for_the_session(openai_server):
    assert URLS == [openai_server.base_url]
"""


def test_fixtures_in_a_user_test_suite(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("OPENAI_BASE_URL", None)
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "chatstep.testing.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rA",
            "test_user.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "6 passed, 1 error" in output, output
    assert "ERROR at teardown of test_violation_fails" in output, output
    assert "spec violation(s)" in output
    assert "$.model" in output
    assert "PASSED test_user.py::test_violation_allowed" in output
