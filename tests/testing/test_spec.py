"""The spec loader: 3.0 idioms normalized, disk cache, operation schemas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatstep.testing.spec import SpecValidator, normalize_schema


def test_nullable_becomes_any_of_null() -> None:
    schema = {"type": "integer", "nullable": True, "minimum": 1}
    assert normalize_schema(schema) == {
        "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]
    }
    ref = {"$ref": "#/components/schemas/CompletionUsage", "nullable": True}
    assert normalize_schema(ref) == {
        "anyOf": [{"$ref": "#/components/schemas/CompletionUsage"}, {"type": "null"}]
    }
    assert normalize_schema({"type": "string", "nullable": False}) == {"type": "string"}


def test_boolean_exclusive_bounds_become_numbers() -> None:
    assert normalize_schema({"type": "number", "minimum": 0, "exclusiveMinimum": True}) == {
        "type": "number",
        "exclusiveMinimum": 0,
    }
    assert normalize_schema({"type": "number", "maximum": 5, "exclusiveMaximum": False}) == {
        "type": "number",
        "maximum": 5,
    }


def test_nested_nullables_are_normalized() -> None:
    schema = {"properties": {"a": {"items": {"type": "string", "nullable": True}}}}
    items = normalize_schema(schema)["properties"]["a"]["items"]
    assert items == {"anyOf": [{"type": "string"}, {"type": "null"}]}


@pytest.fixture(scope="module")
def validator() -> SpecValidator:
    return SpecValidator()


def test_operations_map_to_their_schemas(validator: SpecValidator) -> None:
    assert validator.request_schema("POST", "/v1/chat/completions") == "CreateChatCompletionRequest"
    assert validator.response_schema("POST", "/v1/chat/completions") == (
        "CreateChatCompletionResponse"
    )
    assert validator.response_schema("POST", "/v1/chat/completions", stream=True) == (
        "CreateChatCompletionStreamResponse"
    )
    assert validator.request_schema("POST", "/v1/embeddings") == "CreateEmbeddingRequest"
    assert validator.request_schema("POST", "/v1/moderations") == "CreateModerationRequest"
    assert validator.request_schema("GET", "/v1/models") is None
    assert validator.response_schema("GET", "/v1/models") == "ListModelsResponse"
    assert validator.response_schema("GET", "/v1/models/{model}") == "Model"
    assert validator.request_schema("GET", "/v1/unknown") is None


def test_inline_request_schemas_validate_too(validator: SpecValidator) -> None:
    schema = validator.request_schema("POST", "/v1/batches")
    assert schema is not None
    assert (
        validator.errors(
            schema,
            {"input_file_id": "f", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
        == []
    )
    ((location, message),) = validator.errors(schema, {"input_file_id": "f"})
    assert location == "$.endpoint"
    assert "required" in message


def test_errors_name_the_json_path(validator: SpecValidator) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}
    assert validator.errors("CreateChatCompletionRequest", body) == [
        ("$.n", "0 is less than the minimum of 1")
    ]


def test_an_unknown_schema_name_is_an_error(validator: SpecValidator) -> None:
    with pytest.raises(KeyError, match="not in the OpenAI spec"):
        validator.errors("NoSuchSchema", {})


def test_the_parsed_spec_is_cached_on_disk(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    code = "from chatstep.testing.spec import load_spec; print(len(load_spec()['paths']))"
    first = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    (cached,) = (tmp_path / "chatstep").glob("openai-openapi-*.json")
    document = json.loads(cached.read_text())
    assert "nullable" not in json.dumps(
        document["components"]["schemas"]["CreateChatCompletionStreamResponse"]
    )
    # A second process reads the cache (make it recognisable to prove it).
    document["paths"] = {"/only": {}}
    cached.write_text(json.dumps(document))
    second = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert int(first.stdout) > 1
    assert second.stdout.strip() == "1"


def test_an_unwritable_cache_directory_is_not_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {**os.environ, "XDG_CACHE_HOME": str(blocker)}
    code = "from chatstep.testing.spec import load_spec; print(len(load_spec()['paths']) > 1)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"
