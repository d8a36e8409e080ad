"""Step directories checked at startup, and ``chatstep serve --steps`` as a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chatstep.errors import ConfigError
from chatstep.serving.catalog import load_step_directory
from chatstep.storage.history import History
from chatstep.testing import TestServer

from .conftest import SUMMARIZE


def _problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_step_directory(directory)
    return str(caught.value).splitlines()[1:]


def test_every_bad_file_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(SUMMARIZE)
    (tmp_path / "typo.yaml").write_text("model: gpt-4o-mini\nprompt: hi\ntemprature: 0.2\n")
    (tmp_path / "nested.yaml").write_text(
        "model: gpt-4o-mini\nmessages:\n  - role: user\n    content: hi\n  - role: robot\n"
        "    content: x\n"
    )
    (tmp_path / "broken.yaml").write_text("model: gpt-4o-mini\nprompt: [unclosed\n")
    (tmp_path / "has space.yaml").write_text(SUMMARIZE)
    (tmp_path / "Good.json").write_text('{"model": "gpt-4o-mini", "prompt": "x"}')
    (tmp_path / "renamed.yaml").write_text("id: other\nmodel: gpt-4o-mini\nprompt: x\n")
    (tmp_path / "chained.yaml").write_text(
        "model: gpt-4o-mini\nprompt: '{{ outputs.a.content }}'\n"
    )
    (tmp_path / "notes.txt").write_text("not a step")
    (tmp_path / ".hidden.yaml").write_text("not: a step")
    problems = _problems(tmp_path)
    by_file = {Path(p.split(":", 1)[0]).name: p for p in problems}
    assert set(by_file) == {
        "typo.yaml",
        "nested.yaml",
        "broken.yaml",
        "has space.yaml",
        "good.yaml",  # sorted after Good.json
        "renamed.yaml",
        "chained.yaml",
    }
    assert f"{tmp_path / 'chained.yaml'}:2: prompt: reads outputs" in by_file["chained.yaml"]
    assert f"{tmp_path / 'typo.yaml'}:3: temprature: is not a known field" in by_file["typo.yaml"]
    assert by_file["nested.yaml"].startswith(f"{tmp_path / 'nested.yaml'}:5: messages[1]")
    assert f"{tmp_path / 'broken.yaml'}:3:" in by_file["broken.yaml"]
    assert "rename the file" in by_file["has space.yaml"]
    assert "collides with Good.json" in by_file["good.yaml"]
    assert "set id: renamed" in by_file["renamed.yaml"]


def test_json_step_files_point_at_their_line(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{\n  "model": "gpt-4o-mini",\n  "prompt": "x",\n  "n": 0\n}')
    (problem,) = _problems(tmp_path)
    assert problem.startswith(f"{tmp_path / 's.json'}:4: n:")


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no step file"):
        load_step_directory(tmp_path)
    with pytest.raises(ConfigError, match="is not a directory"):
        load_step_directory(tmp_path / "missing")


def test_inputs_come_from_the_templates(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SUMMARIZE)
    (served,) = load_step_directory(tmp_path)
    assert served.id == "s"
    assert served.step.id == "s"  # the history records the route's name
    assert served.required_inputs == {"text"}
    assert served.optional_inputs == {"style", "temperature"}
    assert served.inputs_of("temperature") == ["temperature"]


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chatstep", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_bad_step_file_exits_3_before_serving(tmp_path: Path) -> None:
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "typo.yaml").write_text("model: gpt-4o-mini\nprompt: hi\ntemprature: 0.2\n")
    done = subprocess.run(
        [sys.executable, "-m", "chatstep", "serve", "--steps", str(steps), "--port", "1"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ),
    )
    assert done.returncode == 3, done.stderr
    assert f"{steps / 'typo.yaml'}:3: temprature" in done.stderr
    assert "Traceback" not in done.stderr


def test_beyond_loopback_needs_a_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chatstep", "serve", "--steps", str(tmp_path), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--api-key" in done.stderr


def test_the_cli_serves_steps_and_logs_them(tmp_path: Path, openai_env: TestServer) -> None:
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "summarize.yaml").write_text(SUMMARIZE)
    port = _free_port()
    env = {**os.environ, "CHATSTEP_SERVE_API_KEY": "cli-key"}
    process = _cli("--steps", str(steps), "--port", str(port), "--concurrency", "2", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:  # until it listens (or dies)
            assert process.poll() is None, process.communicate()[1]
            try:
                httpx.get(url + "/steps", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        headers = {"Authorization": "Bearer cli-key"}
        assert httpx.get(url + "/steps").status_code == 401
        answer = httpx.post(url + "/steps/summarize", json={"text": "x"}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["content"] == "echo: Summarize in one sentence: x"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert "Serving 1 step (summarize)" in stderr
    assert "cli-key" not in stderr
    (row,) = History().recent(limit=5)
    assert row.step == "summarize"


def test_serving_http_steps_never_loads_the_embedded_model(openai_env: TestServer) -> None:
    program = (
        "import sys, tempfile, pathlib, httpx\n"
        "from starlette.testclient import TestClient\n"
        "from chatstep import steps_app\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "(d / 's.yaml').write_text('model: gpt-4o-mini\\nprompt: hi {{ inputs.x }}\\n')\n"
        "with TestClient(steps_app(d, history=False)) as client:\n"
        "    answer = client.post('/steps/s', json={'x': 1})\n"
        "    assert answer.status_code == 200, answer.text\n"
        "assert 'llama_cpp' not in sys.modules\n"
        "assert 'chatstep.backends.local.backend' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, env=dict(os.environ))
