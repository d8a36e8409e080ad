"""``chatstep serve`` as a real process, answering the official OpenAI client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
import typer
from typer.testing import CliRunner

from chatstep.cli.serve import register

pytestmark = pytest.mark.local

# `register` is wired into `chatstep` by cli/app.py; a bare app keeps this test independent.
_PROGRAM = (
    "import typer\n"
    "from chatstep.cli.serve import register\n"
    "app = typer.Typer()\n"
    "app.callback()(lambda: None)\n"
    "register(app)\n"
    "app()\n"
)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


def test_serve_help_lists_its_options() -> None:
    result = CliRunner().invoke(_app(), ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--log-level"):
        assert option in result.output
    assert "127.0.0.1" in result.output
    assert "8080" in result.output


def test_importing_the_command_loads_neither_llama_nor_uvicorn() -> None:
    check = (
        "import sys\n"
        "import chatstep.cli.serve\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp'\n"
        "assert 'uvicorn' not in sys.modules, 'uvicorn'\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_serve_answers_the_openai_client(start_serve: Any) -> None:
    served = start_serve()
    served.wait_until_serving()
    client = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    names = ["gemma-3-270m", "smollm2-135m-instruct"]
    assert [model.id for model in client.models.list()] == names
    answer = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert answer.usage is not None
    assert answer.usage.completion_tokens <= 3
    banner = "Serving gemma-3-270m, smollm2-135m-instruct at http://127.0.0.1:"
    assert banner in served.log_path.read_text()
    assert "any API key" in served.log_path.read_text()


def test_a_killed_worker_fails_requests_in_flight_and_is_restarted(start_serve: Any) -> None:
    """The model runs in a worker process: SIGKILL it mid-stream, the stream ends with a 500
    error event, and the next request is answered by a new worker."""
    served = start_serve()
    served.wait_until_serving()
    client = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    first = served.worker_pid()
    stream = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Tell a long story."}],
        max_tokens=2000,
        stream=True,
    )
    chunks = iter(stream)
    next(chunks)  # generation has started
    os.kill(first, signal.SIGKILL)
    with pytest.raises(openai.APIError) as caught:
        for _ in chunks:
            pass
    assert "worker process stopped while answering (killed by SIGKILL)" in str(caught.value)

    answer = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert served.worker_pid() != first

    second = served.worker_pid()
    os.kill(second, signal.SIGKILL)
    # The server starts a new worker as soon as one dies, not only at the next request.
    served.wait_for_new_worker(second)
    again = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert again.usage is not None
    assert served.process.poll() is None


def test_off_loopback_serve_needs_an_api_key_or_no_auth() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, "serve", "--host", "0.0.0.0", "--port", "1"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--host 0.0.0.0 serves beyond this machine" in result.stderr
    assert "--api-key" in result.stderr
    assert "--no-auth" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_api_key_is_required_as_a_bearer_token(start_serve: Any) -> None:
    key = "chatstep-test-key-0123456789"
    served = start_serve("--host", "0.0.0.0", env={"CHATSTEP_SERVE_API_KEY": key})
    served.wait_until_serving(api_key=key)
    for wrong in ("unused", key[:-1], key + "x"):
        client = openai.OpenAI(base_url=served.base_url, api_key=wrong, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.models.list()
        assert "--api-key" in str(caught.value)
    client = openai.OpenAI(base_url=served.base_url, api_key=key, max_retries=0)
    answer = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert answer.usage is not None
    log = served.log_path.read_text()
    assert "clients must send the --api-key" in log
    assert key not in log
    assert key[-8:] not in log


def test_no_auth_off_loopback_says_so(start_serve: Any) -> None:
    served = start_serve("--host", "0.0.0.0", "--no-auth")
    served.wait_until_serving()
    assert "NO AUTHENTICATION" in served.log_path.read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_without_the_model_names_the_install_command(tmp_path: Path) -> None:
    env = {**os.environ, "CHATSTEP_LOCAL_MODEL_PATH": str(tmp_path / "missing.gguf")}
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, "serve", "--port", str(_free_port())],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 7
    assert "CHATSTEP_LOCAL_MODEL_PATH" in result.stderr
    assert "missing.gguf" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_llama_cpp_exits_7_with_the_install_command(tmp_path: Path) -> None:
    """As without the [local] extra: llama_cpp cannot be imported."""
    (tmp_path / "llama_cpp.py").write_text("raise ImportError('No module named llama_cpp')\n")
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, "serve", "--port", str(_free_port())],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert result.returncode == 7, result.stderr
    assert 'pip install "chatstep[local]"' in result.stderr
    assert "Traceback" not in result.stderr
