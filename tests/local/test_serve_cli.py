"""``chatstep serve`` as a real process, answering the official OpenAI client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_the_openai_client(tmp_path: Path) -> None:
    port = _free_port()
    log = (tmp_path / "serve.log").open("w+")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", _PROGRAM, "serve", "--port", str(port), "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0
        )
        while True:  # wait for the model to load and the port to open
            assert process.poll() is None, Path(log.name).read_text()
            try:
                models = client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.2)
        assert [model.id for model in models] == ["gemma-3-270m"]
        answer = client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
        )
        assert answer.usage is not None
        assert answer.usage.completion_tokens <= 3
    finally:
        process.terminate()
        process.wait()
        log.close()
    assert "Serving gemma-3-270m at http://127.0.0.1:" in Path(log.name).read_text()


def test_serve_without_the_model_names_the_install_command(tmp_path: Path) -> None:
    env = {**os.environ, "CHATSTEP_LOCAL_MODEL_PATH": str(tmp_path / "missing.gguf")}
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, "serve", "--port", str(_free_port())],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    assert "CHATSTEP_LOCAL_MODEL_PATH" in result.stderr
    assert "missing.gguf" in result.stderr
