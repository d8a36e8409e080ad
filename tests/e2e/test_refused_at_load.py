"""What would fail after paying is refused at load: exit 3, and no request reaches the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from chatstep import ConfigError, run_step
from chatstep.cli.app import app
from chatstep.testing import TestServer

runner = CliRunner()


def _schema_step(schema: dict[str, Any], strict: bool | None = None) -> dict[str, Any]:
    fmt: dict[str, Any] = {"name": "t", "schema": schema}
    if strict is not None:
        fmt["strict"] = strict
    return {
        "model": "gpt-4o-mini",
        "prompt": "x",
        "response_format": {"type": "json_schema", "json_schema": fmt},
    }


STRICT_OK = {
    "type": "object",
    "properties": {"a": {"type": ["string", "null"]}},
    "required": ["a"],
    "additionalProperties": False,
}
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}

REFUSED = [
    pytest.param(
        _schema_step({"type": "objectz"}),
        "response_format.json_schema.schema.type",
        id="metaschema",
    ),
    pytest.param(
        _schema_step({"type": "object", "properties": {"a": {"type": "string"}}}, strict=True),
        "response_format.json_schema.schema.additionalProperties",
        id="strict-additional-properties",
    ),
    pytest.param(
        _schema_step({**STRICT_OK, "required": []}, strict=True),
        "response_format.json_schema.schema.required",
        id="strict-required",
    ),
    pytest.param(
        _schema_step(
            {**STRICT_OK, "properties": {"a": {"type": "string", "minLength": 1}}}, strict=True
        ),
        "response_format.json_schema.schema.properties.a.minLength",
        id="strict-keyword",
    ),
    pytest.param(
        _schema_step({**STRICT_OK, "allOf": [{"type": "object"}]}, strict=True),
        "response_format.json_schema.schema.allOf",
        id="strict-allOf",
    ),
    pytest.param(
        {
            "model": "gpt-4o-mini",
            "prompt": "x",
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "required": 3}},
                }
            ],
        },
        "tools[0].function.parameters.required",
        id="tool-parameters",
    ),
    pytest.param(
        {
            "model": "gpt-4o-mini",
            "prompt": "x",
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "search"}},
        },
        "tool_choice.function.name",
        id="dangling-tool-choice",
    ),
    pytest.param(
        {
            "model": "gpt-4o-mini",
            "prompt": "x",
            "functions": [{"name": "lookup", "parameters": {"type": "object"}}],
            "function_call": "search",
        },
        "function_call",
        id="dangling-function-call",
    ),
]


@pytest.mark.parametrize(("step", "field"), REFUSED)
def test_refused_in_python_before_any_request(
    openai_env: TestServer, step: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        run_step(step)
    assert info.value.field == field
    assert info.value.fix
    assert openai_env.requests == []


@pytest.mark.parametrize(("step", "field"), REFUSED)
def test_refused_by_the_cli_with_exit_3(
    openai_env: TestServer, tmp_path: Path, step: dict[str, Any], field: str
) -> None:
    path = tmp_path / "step.yaml"
    path.write_text(yaml.safe_dump(step), encoding="utf-8")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"n": 1}\n', encoding="utf-8")
    out_file = str(tmp_path / "out.jsonl")
    for args in (["run", str(path)], ["map", str(path), "--rows", str(rows), "-o", out_file]):
        out = runner.invoke(app, args)
        assert out.exit_code == 3, out.output
        assert field in out.output
        assert "Traceback" not in out.output
    assert openai_env.requests == []


def test_valid_strict_schemas_and_named_tools_load(openai_env: TestServer) -> None:
    run_step(_schema_step(STRICT_OK, strict=True) | {"response_format": {"type": "json_object"}})
    nested = {
        **STRICT_OK,
        "properties": {"a": {"$ref": "#/$defs/item"}},
        "$defs": {
            "item": {
                "type": "object",
                "properties": {"b": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                "required": ["b"],
                "additionalProperties": False,
            }
        },
    }
    from chatstep.steps.loading import load_step

    load_step(_schema_step(nested, strict=True))
    load_step(
        {
            "model": "m",
            "prompt": "x",
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        }
    )
