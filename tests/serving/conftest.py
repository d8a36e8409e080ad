"""A steps app served by uvicorn on 127.0.0.1 (a free port), in front of the test server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatstep.testing import TestServer

SUMMARIZE = """\
description: Summarize a text in one sentence.
model: gpt-4o-mini
prompt: >-
  Summarize in one sentence: {{ inputs.text }}{% if inputs.style is defined %}
  ({{ inputs.style }}){% endif %}
temperature: "{{ inputs.temperature | default(0) }}"
max_retries: 0
"""

TRIAGE = """\
model: gpt-4o-mini
prompt: "Review: {{ inputs.review }}"
max_retries: 0
response_format:
  type: json_schema
  json_schema:
    name: triage
    strict: true
    schema:
      type: object
      properties:
        urgency: {$ref: "#/$defs/urgency"}
        reply: {type: string}
      required: [urgency, reply]
      additionalProperties: false
      $defs:
        urgency: {type: string, enum: [now, later]}
"""

LOOKUP = """\
model: gpt-4o-mini
prompt: "Look up {{ inputs.query }}"
max_retries: 0
tools:
  - type: function
    function:
      name: lookup
      parameters:
        type: object
        properties: {q: {type: string}}
        required: [q]
"""


class ServedSteps:
    """A served steps app: ``url(path)``, and ``stop()`` (runs the app's shutdown)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started serving")
            time.sleep(0.02)

    def url(self, path: str) -> str:
        return self.base_url + path

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join()
        self._socket.close()


@pytest.fixture
def step_dir(tmp_path: Path) -> Path:
    """summarize.yaml (free text), triage.yaml (json_schema output), lookup.yaml (a tool)."""
    directory = tmp_path / "steps"
    directory.mkdir()
    (directory / "summarize.yaml").write_text(SUMMARIZE)
    (directory / "triage.yaml").write_text(TRIAGE)
    (directory / "lookup.yaml").write_text(LOOKUP)
    return directory


@pytest.fixture
def serve_steps(openai_env: TestServer) -> Iterator[Callable[..., ServedSteps]]:
    """``serve_steps(steps, **steps_app options)``: the app on a free port, stopped after."""
    from chatstep.serving.steps import steps_app

    started: list[ServedSteps] = []

    def start(steps: Any, **options: Any) -> ServedSteps:
        served = ServedSteps(steps_app(steps, **options))
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
