"""The CLI, through typer's runner, against the test server: output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep.cli.app import app
from chatstep.cli.common import EXIT_CODES
from chatstep.testing import Delay, Fail, Respond, TestServer

runner = CliRunner()


@pytest.fixture
def step_file(tmp_path: Path) -> Path:
    path = tmp_path / "greet.yaml"
    path.write_text("model: gpt-4o-mini\nprompt: 'Hello {{ inputs.name }}'\n")
    return path


def test_run_prints_content(openai_env: TestServer, step_file: Path) -> None:
    out = runner.invoke(app, ["run", str(step_file), "-i", "name=Ada"])
    assert out.exit_code == 0, out.output
    assert out.stdout == "echo: Hello Ada\n"


def test_run_json(openai_env: TestServer, step_file: Path) -> None:
    out = runner.invoke(app, ["run", str(step_file), "-i", "name=Ada", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["content"] == "echo: Hello Ada"
    assert data["response"]["choices"][0]["message"]["content"] == "echo: Hello Ada"
    assert data["usage"]["total_tokens"] > 0


def test_run_stream(openai_env: TestServer, step_file: Path) -> None:
    out = runner.invoke(app, ["run", str(step_file), "-i", "name=Ada", "--stream"])
    assert out.exit_code == 0, out.output
    assert out.stdout == "echo: Hello Ada\n"
    assert openai_env.requests[-1].body["stream"] is True  # type: ignore[index]


def test_run_json_input_and_file_input(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "s.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: '{{ inputs.doc }} / {{ inputs.n + 1 }}'\n")
    doc = tmp_path / "doc.txt"
    doc.write_text("from a file")
    out = runner.invoke(app, ["run", str(step), "-i", f"doc=@{doc}", "-i", "n:=41"])
    assert out.exit_code == 0, out.output
    assert out.stdout == "echo: from a file / 42\n"


def test_run_parsed_json_output(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "s.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: x\nresponse_format:\n  type: json_object\n")
    openai_env.enqueue(Respond(content='{"a": 1}'))
    out = runner.invoke(app, ["run", str(step)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"a": 1}


@pytest.mark.parametrize(
    ("item", "code"),
    [
        (Fail(401), "api_refused"),
        (Fail(404, code="model_not_found"), "api_refused"),
        (Fail(400), "api_refused"),
    ],
)
def test_api_error_exit_codes(
    openai_env: TestServer, step_file: Path, item: Fail, code: str
) -> None:
    openai_env.enqueue(item)
    out = runner.invoke(app, ["run", str(step_file), "-i", "name=x"])
    assert out.exit_code == EXIT_CODES[code]
    assert out.stderr.startswith("error: ")
    assert len(out.stderr.strip().splitlines()) == 1


def test_unavailable_exit_code(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "s.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: x\nmax_retries: 0\ntimeout: 0.3\n")
    openai_env.enqueue(Delay(2))
    out = runner.invoke(app, ["run", str(step)])
    assert out.exit_code == EXIT_CODES["api_unavailable"]
    assert "APITimeoutError" in out.stderr


def test_config_error_exit_codes(openai_env: TestServer, tmp_path: Path, step_file: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: gpt-4o-mini\nprompt: x\ntemperature: 9\n")
    out = runner.invoke(app, ["run", str(bad)])
    assert out.exit_code == EXIT_CODES["config"]
    assert "temperature" in out.stderr
    missing = runner.invoke(app, ["run", str(step_file)])
    assert missing.exit_code == EXIT_CODES["config"]
    assert "name" in missing.stderr
    malformed = runner.invoke(app, ["run", str(step_file), "-i", "oops"])
    assert malformed.exit_code == EXIT_CODES["config"]
    assert runner.invoke(app, ["run"]).exit_code == EXIT_CODES["usage"]


def test_output_error_exit_code(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "s.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: x\nresponse_format: {type: json_object}\n")
    openai_env.enqueue(Respond(content="nope"))
    out = runner.invoke(app, ["run", str(step)])
    assert out.exit_code == EXIT_CODES["output"]


def test_models(openai_env: TestServer) -> None:
    out = runner.invoke(app, ["models"])
    assert out.exit_code == 0, out.output
    assert "gpt-4o-mini" in out.stdout.split()
    as_json = runner.invoke(app, ["models", "--json"])
    assert all("id" in m for m in json.loads(as_json.stdout))


def test_moderate(openai_env: TestServer) -> None:
    out = runner.invoke(app, ["moderate", "I will kill you", "lovely weather"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("flagged: ")
    assert "violence" in lines[0]
    assert lines[1].startswith("not flagged")


def test_embed(openai_env: TestServer) -> None:
    out = runner.invoke(app, ["embed", "hello", "world", "--dimensions", "4"])
    assert out.exit_code == 0, out.output
    vectors = json.loads(out.stdout)
    assert [len(v) for v in vectors] == [4, 4]


def test_history_lists_and_searches(openai_env: TestServer, step_file: Path) -> None:
    runner.invoke(app, ["run", str(step_file), "-i", "name=Zebediah"])
    runner.invoke(app, ["run", str(step_file), "-i", "name=Ada"])
    listing = runner.invoke(app, ["history"])
    assert listing.exit_code == 0, listing.output
    assert "Zebediah" in listing.stdout
    assert "Ada" in listing.stdout
    found = runner.invoke(app, ["history", "-q", "Zebediah", "--json"])
    entries = json.loads(found.stdout)
    assert len(entries) == 1
    assert entries[0]["request"]["messages"][0]["content"] == "Hello Zebediah"
    shown = runner.invoke(app, ["history", "show", entries[0]["id"]])
    assert json.loads(shown.stdout)["id"] == entries[0]["id"]
    assert runner.invoke(app, ["history", "show", "nope"]).exit_code == EXIT_CODES["config"]


def test_history_prune_deletes_old_calls_only(openai_env: TestServer, step_file: Path) -> None:
    runner.invoke(app, ["run", str(step_file), "-i", "name=Zebediah"])
    kept = runner.invoke(app, ["history", "prune", "--older-than", "1h"])
    assert kept.exit_code == 0, kept.output
    assert "removed 0 call(s)" in kept.stdout
    assert "1 remain" in kept.stdout
    # Everything is older than a millisecond by now.
    gone = runner.invoke(app, ["history", "prune", "--older-than", "1ms", "--vacuum"])
    assert gone.exit_code == 0, gone.output
    assert "removed 1 call(s)" in gone.stdout
    assert json.loads(runner.invoke(app, ["history", "-q", "Zebediah", "--json"]).stdout) == []
    bad = runner.invoke(app, ["history", "prune", "--older-than", "a while"])
    assert bad.exit_code == EXIT_CODES["config"]
    assert "--older-than" in bad.output
    assert "30d" in bad.output


def test_help_lists_commands() -> None:
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for command in ("run", "models", "moderate", "embed", "history"):
        assert command in out.stdout
