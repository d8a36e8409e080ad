"""The generated schema matrix on the in-process local backend, and the issue's abort cases
run in a child process (an abort there is seen as its exit status, not as a dead test run)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from chatstep.backends.local.backend import LocalBackend
from chatstep.errors import BadRequestError

from .schema_matrix import MatrixCase, assemble_stream, check_choices, matrix_cases

pytestmark = pytest.mark.local

CASES = matrix_cases()


def _answer(backend: LocalBackend, case: MatrixCase) -> list[dict[str, Any]]:
    if not case.stream:
        return list(asyncio.run(backend.complete(case.body, timeout=600)).body["choices"])

    async def collect() -> list[dict[str, Any]]:
        reply = await backend.stream(case.body, timeout=600)
        return [chunk async for chunk in reply.chunks]

    return assemble_stream(asyncio.run(collect()))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_matrix_case_answers_schema_valid_json(
    backend: LocalBackend, case: MatrixCase
) -> None:
    check_choices(case, _answer(backend, case))


def test_the_matrix_covers_every_feature() -> None:
    text = json.dumps([case.body for case in CASES])
    for feature in (
        '"maxLength"',
        '"enum"',
        '"minimum"',
        '"anyOf"',
        '"items"',
        '"additionalProperties": true',
        '"additionalProperties": false',
        '"required"',
        '"function_call"',
        '"tool_choice": "required"',
        '"n": 2',
        '"type": "number"',
        '"type": "integer"',
        '"json_object"',
        '"temperature": 1.5',
    ):
        assert feature in text, feature
    assert any(case.stream for case in CASES)
    nested = [c for c in CASES if '"properties"' in json.dumps(c.schema.get("properties", {}))]
    assert nested, "no nested object"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"x": {"type": "number", "minimum": 2}}},
        {"type": "object", "properties": {"x": {"type": "integer", "maximum": 5}}},
        {"type": "object", "properties": {"x": {"type": "integer", "multipleOf": 3}}},
        {"type": "object", "properties": {"x": {"type": "string", "maxLength": 100000}}},
    ],
)
def test_schemas_the_grammar_cannot_enforce_are_refused_by_name(
    backend: LocalBackend, schema: dict[str, Any]
) -> None:
    body = {
        "model": "local",
        "messages": [{"role": "user", "content": "Hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    }
    with pytest.raises(BadRequestError) as caught:
        asyncio.run(backend.complete(body, timeout=60))
    assert caught.value.code == "invalid_schema"
    assert "response_format.json_schema.schema" in str(caught.value)


_ISSUE_CASES = """
import asyncio, json, sys
from chatstep.backends.local.backend import LocalBackend

weather = {"type": "object", "properties": {"location": {"type": "string"},
           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}
bodies = []
for temperature in (None, 0.7, 1):
    body = {"model": "local", "messages": [{"role": "user", "content": "Hello"}],
            "response_format": {"type": "json_object"}, "max_tokens": 32, "seed": 1}
    if temperature is not None:
        body["temperature"] = temperature
    bodies.append(body)
    sampling = {} if temperature is None else {"temperature": temperature}
    name = {"type": "object", "properties": {"name": {"type": "string"}},
            "required": ["name"], "additionalProperties": False}
    bodies.append({"model": "local", "messages": [{"role": "user", "content": "Name a cat."}],
                   "response_format": {"type": "json_schema",
                                       "json_schema": {"name": "cat", "schema": name}},
                   "max_tokens": 32, "seed": 2, **sampling})
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": weather}}
    bodies.append({"model": "local", "messages": [{"role": "user", "content": "Weather in Lima?"}],
                   "tools": [tool], "tool_choice": "required", "max_tokens": 32, "seed": 3,
                   **sampling})

async def main():
    backend = LocalBackend()
    for body in bodies:
        reply = await backend.complete(body, timeout=600)
        print(json.dumps(reply.body["choices"][0]))

asyncio.run(main())
"""


def test_the_issues_requests_do_not_abort_the_process() -> None:
    """json_object on "Hello", an unbounded required string, get_weather forced: at temperature
    0.7 and 1 these aborted the interpreter (SIGABRT) before the sampler kept to the grammar."""
    done = subprocess.run(
        [sys.executable, "-c", _ISSUE_CASES], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == 9
    for answer in answers:
        if answer["finish_reason"] == "length":
            continue
        message = answer["message"]
        text = (
            message["content"]
            or (message.get("function_call") or message["tool_calls"][0]["function"])["arguments"]
        )
        assert isinstance(json.loads(text), dict)


def _served_answer(client: Any, case: MatrixCase) -> list[dict[str, Any]]:
    body = {key: value for key, value in case.body.items() if key != "model"}
    if not case.stream:
        answer = client.chat.completions.create(model="local", **body)
        return [choice.model_dump() for choice in answer.choices]
    chunks = client.chat.completions.create(model="local", stream=True, **body)
    return assemble_stream([chunk.model_dump() for chunk in chunks])


def test_the_matrix_through_chatstep_serve(start_serve: Any) -> None:
    """Every other case, sent by the official client to `chatstep serve` (model in a worker)."""
    import openai

    served = start_serve()
    served.wait_until_serving()
    client = openai.OpenAI(base_url=served.base_url, api_key="unused", max_retries=0)
    for case in CASES[::2]:
        check_choices(case, _served_answer(client, case))
    assert served.process.poll() is None
    assert "stopped while answering" not in served.log_path.read_text()
