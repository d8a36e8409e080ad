"""CLI habits users bring from ``llm`` and the SDK: --version, -h, @- for stdin, ``prompt``,
``--set``, and tool calls printed by ``run --stream``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatstep import __version__
from chatstep.cli.app import app
from chatstep.cli.common import EXIT_CODES
from chatstep.testing import Respond, TestServer

runner = CliRunner()

TOOL_STEP = """\
model: gpt-4o-mini
prompt: 'Weather in {{ inputs.city }}?'
tools:
  - type: function
    function:
      name: get_weather
      parameters: {type: object, properties: {city: {type: string}}}
"""


def _tool_answer() -> Respond:
    return Respond(
        tool_calls=[{"function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    )


@pytest.fixture
def step_file(tmp_path: Path) -> Path:
    path = tmp_path / "greet.yaml"
    path.write_text("model: gpt-4o-mini\nprompt: 'Hello {{ inputs.name }}'\n")
    return path


def test_version() -> None:
    out = runner.invoke(app, ["--version"])
    assert out.exit_code == 0, out.output
    assert out.stdout == f"chatstep {__version__}\n"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["prompt"],
        ["map"],
        ["history"],
        ["history", "prune"],
        ["batch"],
        ["batch", "submit"],
        ["flow", "run"],
        ["models"],
    ],
)
def test_dash_h_is_help_everywhere(command: list[str]) -> None:
    out = runner.invoke(app, [*command, "-h"])
    assert out.exit_code == 0, out.output
    assert "Usage:" in out.stdout
    assert "--help" in out.stdout


def test_input_from_stdin(openai_env: TestServer, step_file: Path) -> None:
    out = runner.invoke(app, ["run", str(step_file), "-i", "name=@-"], input="Grace\n")
    assert out.exit_code == 0, out.output
    assert openai_env.requests[-1].body["messages"][0]["content"] == "Hello Grace\n"  # type: ignore[index]


def test_stdin_is_read_once(openai_env: TestServer, tmp_path: Path) -> None:
    step = tmp_path / "two.yaml"
    step.write_text("model: gpt-4o-mini\nprompt: '{{ inputs.a }} {{ inputs.b }}'\n")
    out = runner.invoke(app, ["run", str(step), "-i", "a=@-", "-i", "b=@-"], input="x")
    assert out.exit_code == EXIT_CODES["config"]
    assert "-i b: stdin was already read by -i a" in out.stderr
    assert openai_env.requests == []


def test_a_rows_file_given_to_dash_i_points_at_rows(
    openai_env: TestServer, step_file: Path, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"name": "Ada"}\n')
    out = runner.invoke(app, ["run", str(step_file), "-i", str(rows)])
    assert out.exit_code == EXIT_CODES["config"]
    assert "is a file, not NAME=VALUE" in out.stderr
    assert "--rows" in out.stderr
    assert openai_env.requests == []


# -- prompt ---------------------------------------------------------------------------------


def test_prompt_with_model_system_and_options(openai_env: TestServer) -> None:
    args = ["prompt", "Hi {{ not a template }}", "-m", "gpt-4.1-mini", "-s", "Be brief."]
    args += ["-o", "temperature", "0.2", "-o", "max_tokens", "50", "-o", "stop", '["\\n"]']
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert out.stdout == "echo: Hi {{ not a template }}\n"
    body = openai_env.requests[-1].body
    assert body == {
        "model": "gpt-4.1-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi {{ not a template }}"},
        ],
        "temperature": 0.2,
        "max_tokens": 50,
        "stop": ["\n"],
    }


def test_prompt_reads_stdin_when_piped_or_dash(openai_env: TestServer) -> None:
    for args in (["prompt"], ["prompt", "-"], ["prompt", "@-"]):
        out = runner.invoke(app, args, input="from a pipe")
        assert out.exit_code == 0, out.output
        assert out.stdout == "echo: from a pipe\n"
    assert len(openai_env.requests) == 3


def test_prompt_from_a_file_and_a_literal_at(openai_env: TestServer, tmp_path: Path) -> None:
    text = tmp_path / "p.txt"
    text.write_text("file prompt")
    assert runner.invoke(app, ["prompt", f"@{text}"]).stdout == "echo: file prompt\n"
    assert runner.invoke(app, ["prompt", "@@team hi"]).stdout == "echo: @team hi\n"
    missing = runner.invoke(app, ["prompt", "@nope.txt"])
    assert missing.exit_code == EXIT_CODES["config"]
    assert "nope.txt" in missing.stderr
    assert len(openai_env.requests) == 2


def test_prompt_json_and_json_valued_option(openai_env: TestServer) -> None:
    openai_env.enqueue(Respond(content='{"ok": true}'))
    args = ["prompt", "hi", "-o", "response_format", '{"type": "json_object"}', "--json"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["parsed"] == {"ok": True}
    assert openai_env.requests[-1].body["response_format"] == {"type": "json_object"}  # type: ignore[index]


def test_prompt_stream(openai_env: TestServer) -> None:
    out = runner.invoke(app, ["prompt", "hi", "--stream"])
    assert out.exit_code == 0, out.output
    assert out.stdout == "echo: hi\n"
    assert openai_env.requests[-1].body["stream"] is True  # type: ignore[index]


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("temperature", "9", "-o temperature"),
        ("colour", "red", "-o colour"),
        ("max_tokens", "many", "-o max_tokens"),
        ("response_format.type", "yaml", "-o response_format.type"),
    ],
)
def test_prompt_bad_option_exits_3_naming_it(
    openai_env: TestServer, option: str, value: str, named: str
) -> None:
    out = runner.invoke(app, ["prompt", "hi", "-o", option, value])
    assert out.exit_code == EXIT_CODES["config"], out.output
    assert f"ConfigError: {named}:" in out.stderr
    assert openai_env.requests == []


@pytest.mark.parametrize("args", [["hi", "there"], ["hi", "-o", "temperature"], ["hi", "--colour"]])
def test_prompt_usage_errors(openai_env: TestServer, args: list[str]) -> None:
    out = runner.invoke(app, ["prompt", *args])
    assert out.exit_code == EXIT_CODES["usage"], out.output
    assert out.stderr.startswith("error: ")
    assert openai_env.requests == []


# -- --set ----------------------------------------------------------------------------------


def test_run_set_overrides_fields(openai_env: TestServer, step_file: Path) -> None:
    openai_env.enqueue(Respond(content='{"a": 1}'))
    args = ["run", str(step_file), "-i", "name=Ada", "--set", "model=gpt-4.1", "--set"]
    args += ["temperature=0.5", "--set", "response_format.type=json_object", "--set", "n:=1"]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"a": 1}
    body = openai_env.requests[-1].body
    assert body["model"] == "gpt-4.1"  # type: ignore[index]
    assert body["temperature"] == 0.5  # type: ignore[index]
    assert body["response_format"] == {"type": "json_object"}  # type: ignore[index]
    assert body["n"] == 1  # type: ignore[index]


def test_set_a_nested_field_by_alias_keeps_its_siblings(
    openai_env: TestServer, tmp_path: Path
) -> None:
    step = tmp_path / "schema.yaml"
    step.write_text(
        "model: gpt-4o-mini\nprompt: x\nmaxTokens: 10\nresponse_format:\n  type: json_schema\n"
        "  json_schema:\n    name: t\n    schema: {type: object}\n"
    )
    openai_env.enqueue(Respond(content='{"a": 1}'))
    schema = '{"type": "object", "properties": {"a": {"type": "integer"}}}'
    args = ["run", str(step), "--set", f"response_format.json_schema.schema:={schema}"]
    out = runner.invoke(app, [*args, "--set", "max_tokens=20"])
    assert out.exit_code == 0, out.output
    body = openai_env.requests[-1].body
    assert body["max_tokens"] == 20  # type: ignore[index]
    assert body["response_format"]["json_schema"]["name"] == "t"  # type: ignore[index]
    assert body["response_format"]["json_schema"]["schema"]["properties"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("pair", "named"),
    [
        ("temperature=hot", "--set temperature"),
        ("colour=red", "--set colour"),
        ("prompt.text=x", "--set prompt.text"),
        ("temperature:={", "--set temperature"),
        ("not a path=1", "--set not a path"),
    ],
)
def test_bad_set_exits_3_naming_it(
    openai_env: TestServer, step_file: Path, pair: str, named: str
) -> None:
    out = runner.invoke(app, ["run", str(step_file), "-i", "name=A", "--set", pair])
    assert out.exit_code == EXIT_CODES["config"], out.output
    assert f"ConfigError: {named}" in out.stderr
    assert openai_env.requests == []


def test_set_reads_stdin(openai_env: TestServer, step_file: Path) -> None:
    out = runner.invoke(app, ["run", str(step_file), "--set", "prompt=@-"], input="piped prompt")
    assert out.exit_code == 0, out.output
    assert out.stdout == "echo: piped prompt\n"


# -- tool calls -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_run_prints_tool_calls_streamed_or_not(
    openai_env: TestServer, tmp_path: Path, stream: bool
) -> None:
    step = tmp_path / "tools.yaml"
    step.write_text(TOOL_STEP)
    openai_env.enqueue(_tool_answer())
    args = ["run", str(step), "-i", "city=Oslo"] + (["--stream"] if stream else [])
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    assert openai_env.requests[-1].body.get("stream") is (True if stream else None)  # type: ignore[union-attr]


def test_prompt_stream_prints_tool_calls(openai_env: TestServer, tmp_path: Path) -> None:
    openai_env.enqueue(_tool_answer())
    tools = '[{"type": "function", "function": {"name": "get_weather"}}]'
    out = runner.invoke(app, ["prompt", "Oslo?", "-o", "tools", tools, "--stream"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]


def test_an_empty_prompt_is_refused_not_sent(openai_env: TestServer) -> None:
    for args, stdin in ((["prompt", ""], None), (["prompt", "-"], "  \n")):
        out = runner.invoke(app, args, input=stdin)
        assert out.exit_code == 3, out.output
        assert "empty" in out.output
    assert openai_env.requests == []
