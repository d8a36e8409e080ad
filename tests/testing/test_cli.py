"""``chatstep testing-server`` in the foreground, as a user would run it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import typer
from typer.testing import CliRunner

from chatstep.cli.testing_server import register

RUN_CLI = (
    "import typer\n"
    "from chatstep.cli.testing_server import register\n"
    "app = typer.Typer()\n"
    "@app.callback()\n"
    "def main() -> None: pass\n"
    "register(app)\n"
    "app()\n"
)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """chatstep"""

    register(app)
    return app


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(_app(), ["testing-server", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--no-validate", "--api-key", "--rpm", "--fault-rate"):
        assert option in result.output


def test_serves_until_interrupted() -> None:
    env = dict(os.environ)
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, "testing-server", "--port", "0", "--no-validate"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        assert "spec validation off" in banner
        base_url = banner.split(" on ", 1)[1].split(" ", 1)[0]
        response = httpx.post(
            f"{base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "ping"}], "n": 0},
        )
        # n=0 breaks the spec, but validation is off: the default answer comes back.
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_bad_settings_are_refused() -> None:
    result = CliRunner().invoke(_app(), ["testing-server", "--fault", "explode", "--port", "0"])
    assert result.exit_code != 0
    assert "unknown kind" in result.output


def test_a_port_in_use_is_an_error_not_a_traceback() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(_app(), ["testing-server", "--port", str(port)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "--port" in result.output
