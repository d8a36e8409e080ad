"""``chatstep flow run`` / ``flow validate`` through the CLI, and every example flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.common import EXIT_CODES
from chatstep.flows.api import load_flow, run_flow
from chatstep.testing import Fail, Respond, TestServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    [ROOT / "examples" / "review_triage_flow.yaml", *ROOT.glob("examples/flows/*.yaml")]
)

runner = CliRunner()

FLOW = """
id: cli
inputs:
  - {id: name, type: STRING}
  - {id: times, type: INT, defaults: 1}
  - {id: loud, type: BOOLEAN, defaults: false}
tasks:
  - id: greet
    type: chatstep.chat
    model: gpt-4o-mini
    prompt: "Greet {{ inputs.name }} x{{ inputs.times + 1 }}{% if inputs.loud %}!{% endif %}"
    result_expression:
      words: "{{ response.choices[0].message.content.split() | length }}"
  - id: out
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.greet.choices[0].message.content }}"
"""


@pytest.fixture
def flow_file(tmp_path: Path) -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(FLOW)
    return path


def test_flow_run_prints_each_task(openai_env: TestServer, flow_file: Path) -> None:
    out = runner.invoke(
        app, ["flow", "run", str(flow_file), "-i", "name=Ada", "-i", "times=2", "-i", "loud=yes"]
    )
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == [
        "== greet (SUCCESS) chatstep.chat",
        "content: echo: Greet Ada x3!",
        "words = 4",
        "== out (SUCCESS) io.kestra.plugin.core.debug.Return",
        "value: echo: Greet Ada x3!",
    ]


def test_flow_run_json(openai_env: TestServer, flow_file: Path) -> None:
    out = runner.invoke(app, ["flow", "run", str(flow_file), "-i", "name=Bo", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["state"] == "SUCCESS"
    assert data["inputs"] == {"name": "Bo", "times": 1, "loud": False}
    assert data["outputs"]["out"] == {"value": "echo: Greet Bo x2"}
    assert data["outputs"]["words"] == 4
    greet = data["tasks"][0]
    assert greet["output"]["choices"][0]["message"]["content"] == "echo: Greet Bo x2"
    assert greet["usage"]["total_tokens"] > 0


def test_flow_run_missing_input_exit_code(openai_env: TestServer, flow_file: Path) -> None:
    out = runner.invoke(app, ["flow", "run", str(flow_file)])
    assert out.exit_code == EXIT_CODES["config"]
    assert "inputs.name: is required" in out.stderr


def test_flow_run_wrong_input_type_exit_code(openai_env: TestServer, flow_file: Path) -> None:
    out = runner.invoke(app, ["flow", "run", str(flow_file), "-i", "name=A", "-i", "times=two"])
    assert out.exit_code == EXIT_CODES["config"]
    assert "inputs.times: expects INT, got 'two'" in out.stderr


def test_flow_run_api_failure(openai_env: TestServer, flow_file: Path) -> None:
    openai_env.enqueue(Fail(401))
    out = runner.invoke(app, ["flow", "run", str(flow_file), "-i", "name=A", "--json"])
    assert out.exit_code == EXIT_CODES["api_refused"]
    assert "task 'greet' failed: AuthenticationError" in out.stderr
    data = json.loads(out.stdout)
    assert data["state"] == "FAILED"
    assert data["tasks"][0]["error"].startswith("AuthenticationError")


def test_flow_validate(flow_file: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["flow", "validate", str(flow_file)])
    assert out.exit_code == 0, out.output
    assert out.stdout == "ok: flow 'cli', 2 tasks, inputs: name, times, loud\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(FLOW.replace("chatstep.chat", "chatstep.talk"))
    out = runner.invoke(app, ["flow", "validate", str(bad)])
    assert out.exit_code == EXIT_CODES["config"]
    assert "tasks[0](greet).type: unknown task type 'chatstep.talk'" in out.stderr


def test_examples_exist() -> None:
    assert ROOT / "examples" / "review_triage_flow.yaml" in EXAMPLES
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_flow_runs(openai_env: TestServer, path: Path) -> None:
    flow = load_flow(path)
    run = run_flow(flow)
    assert run.state == "SUCCESS"
    assert openai_env.requests
    last = run.tasks[-1]
    assert last.type == "io.kestra.plugin.core.debug.Return"
    assert last.output["value"]


def test_review_triage_example_through_the_cli(openai_env: TestServer) -> None:
    path = ROOT / "examples" / "review_triage_flow.yaml"
    arguments = '{"response_urgency": "reply_later", "response_text": "Thanks a lot!"}'
    openai_env.enqueue(
        Respond(tool_calls=[{"function": {"name": "respond_to_review", "arguments": arguments}}])
    )
    out = runner.invoke(app, ["flow", "run", str(path), "-i", "prompt=Great value."])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[-1] == "value: reply_later"
    body = openai_env.requests[-1].body
    assert body["messages"] == [{"role": "user", "content": "Great value."}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "respond_to_review"}}
