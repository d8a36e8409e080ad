"""Bad flows: each a ConfigError naming the task (or input) and the property, before any call."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chatstep.errors import ConfigError, TemplateError
from chatstep.flows.api import load_flow, run_flow
from chatstep.testing import TestServer

GOOD: dict[str, Any] = {
    "id": "good",
    "inputs": [
        {"id": "topic", "type": "STRING"},
        {"id": "n", "type": "INT", "defaults": 2},
    ],
    "tasks": [
        {
            "id": "ask",
            "type": "io.kestra.plugin.openai.ChatCompletion",
            "model": "gpt-4o-mini",
            "prompt": "{{ inputs.n }} facts about {{ inputs.topic }}",
        },
        {
            "id": "answer",
            "type": "io.kestra.plugin.core.debug.Return",
            "format": "{{ outputs.ask.choices[0].message.content }}",
        },
    ],
}


def _flow(**changes: Any) -> dict[str, Any]:
    flow = copy.deepcopy(GOOD)
    for index, props in changes.items():
        flow["tasks"][int(index.removeprefix("t"))].update(props)
    return flow


def _error(flow: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_flow(flow)
    return caught.value


def test_the_good_flow_loads() -> None:
    flow = load_flow(GOOD)
    assert [t.id for t in flow.tasks] == ["ask", "answer"]


def test_unknown_task_type() -> None:
    err = _error(_flow(t1={"type": "io.kestra.plugin.core.log.Log"}))
    assert err.field == "tasks[1](answer).type"
    assert "unknown task type 'io.kestra.plugin.core.log.Log'" in str(err)
    assert "io.kestra.plugin.core.debug.Return" in str(err)  # the known types are listed


def test_unknown_property_of_a_chat_task() -> None:
    err = _error(_flow(t0={"temprature": 0.2}))
    assert err.field == "tasks[0](ask).temprature"
    assert "is not a known field" in str(err)


def test_unknown_property_of_a_return_task() -> None:
    err = _error(_flow(t1={"message": "hi"}))
    assert err.field == "tasks[1](answer).message"
    assert "is not a known field" in str(err)


def test_unknown_flow_property() -> None:
    err = _error({**GOOD, "triggers": []})
    assert err.field == "triggers"
    assert "not a known flow property" in str(err)


def test_bad_value_names_the_task_and_field() -> None:
    err = _error(_flow(t0={"temperature": 7}))
    assert err.field == "tasks[0](ask).temperature"
    assert "less than or equal to 2" in str(err)


def test_reference_to_a_missing_output() -> None:
    err = _error(_flow(t1={"format": "{{ outputs.asks.choices[0].message.content }}"}))
    assert err.field == "tasks[1](answer).format"
    assert "outputs.asks" in str(err)
    assert "available outputs: ask" in str(err)


def test_reference_to_a_later_task() -> None:
    err = _error(_flow(t0={"prompt": "{{ outputs.answer.value }}"}))
    assert err.field == "tasks[0](ask).prompt"
    assert "runs after this one (tasks[1](answer))" in str(err)


def test_reference_to_an_undeclared_input() -> None:
    err = _error(_flow(t0={"messages": [{"role": "user", "content": "{{ inputs.topc }}"}]}))
    assert err.field == "tasks[0](ask).messages[0].content"
    assert "no input 'topc'" in str(err)
    assert "declared inputs: topic, n" in str(err)


def test_return_task_has_only_value() -> None:
    flow = copy.deepcopy(GOOD)
    flow["tasks"].append(
        {
            "id": "again",
            "type": "io.kestra.plugin.core.debug.Return",
            "format": "{{ outputs.answer.text }}",
        }
    )
    err = _error(flow)
    assert err.field == "tasks[2](again).format"
    assert "only output is value" in str(err)


def test_template_syntax_error_names_the_field() -> None:
    with pytest.raises(TemplateError) as caught:
        load_flow(_flow(t1={"format": "{{ outputs.ask.id "}))
    assert caught.value.field == "tasks[1](answer).format"


def test_duplicate_task_ids() -> None:
    err = _error(_flow(t1={"id": "ask"}))
    assert err.field == "tasks[1](ask).id"
    assert "repeats the id of tasks[0](ask)" in str(err)


def test_task_without_id_or_type() -> None:
    flow = copy.deepcopy(GOOD)
    del flow["tasks"][0]["id"]
    assert _error(flow).field == "tasks[0].id"
    flow = copy.deepcopy(GOOD)
    del flow["tasks"][1]["type"]
    assert _error(flow).field == "tasks[1](answer).type"


def test_no_tasks() -> None:
    assert _error({"id": "x", "tasks": []}).field == "tasks"


def test_bad_common_options() -> None:
    assert _error(_flow(t0={"timeout": "soon"})).field == "tasks[0](ask).timeout"
    err = _error(_flow(t0={"retry": {"type": "constant", "maxAttempt": 3}}))
    assert err.field == "tasks[0](ask).retry"
    assert "interval" in str(err)
    err = _error(_flow(t0={"retry": {"maxAttempts": 3}}))
    assert err.field == "tasks[0](ask).retry.maxAttempts"
    err = _error(_flow(t0={"retry": {"maxAttempt": 3}, "maxRetries": 2}))
    assert err.field == "tasks[0](ask).retry"
    err = _error(_flow(t0={"allowFailure": "maybe"}))
    assert err.field == "tasks[0](ask).allowFailure"


def test_output_mapping_names_must_not_clash() -> None:
    err = _error(_flow(t0={"result_variable": "answer"}))
    assert err.field == "tasks[0](ask).result_variable"
    assert "the id of task tasks[1](answer)" in str(err)
    err = _error(_flow(t0={"result_expression": {"1st": "{{ response.id }}"}}))
    assert err.field == "tasks[0](ask)"
    assert "'1st' is not a valid name" in str(err)


def test_mapped_step_cannot_read_outputs() -> None:
    flow = copy.deepcopy(GOOD)
    flow["tasks"].append(
        {
            "id": "each",
            "type": "chatstep.map",
            "rows": [{"x": 1}],
            "step": {"model": "gpt-4o-mini", "prompt": "{{ outputs.ask.id }} {{ inputs.x }}"},
        }
    )
    err = _error(flow)
    assert err.field == "tasks[2](each).step.prompt"
    assert "through the rows" in str(err)


def test_map_task_needs_exactly_one_row_source(tmp_path: Any) -> None:
    task = {"id": "each", "type": "chatstep.map", "step": {"model": "m", "prompt": "p"}}
    assert _error({"id": "x", "tasks": [task]}).field == "tasks[0](each)"
    missing = {**task, "file": "nope.jsonl"}
    err = _error({"id": "x", "tasks": [missing]})
    assert err.field == "tasks[0](each).file"
    assert "does not exist" in str(err)


def test_bad_input_declarations() -> None:
    err = _error({**GOOD, "inputs": [{"id": "n", "type": "DECIMAL"}]})
    assert err.field == "inputs[0](n).type"
    err = _error({**GOOD, "inputs": [{"id": "n", "type": "INT", "defaults": "many"}]})
    assert err.field == "inputs[0](n).defaults"
    assert "expects INT, got 'many'" in str(err)
    err = _error({**GOOD, "inputs": [{"id": "n"}, {"id": "n"}]})
    assert "declared twice" in str(err)


def test_missing_required_input(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError) as caught:
        run_flow(GOOD)
    assert caught.value.field == "inputs.topic"
    assert "is required" in str(caught.value)
    assert "-i topic=" in str(caught.value)
    assert openai_env.requests == []


def test_wrong_input_type(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError) as caught:
        run_flow(GOOD, {"topic": "owls", "n": "a few"})
    assert caught.value.field == "inputs.n"
    assert "expects INT, got 'a few'" in str(caught.value)
    assert openai_env.requests == []


def test_unknown_input_given(openai_env: TestServer) -> None:
    with pytest.raises(ConfigError) as caught:
        run_flow(GOOD, {"topic": "owls", "colour": "red"})
    assert caught.value.field == "inputs.colour"
    assert "declared inputs: topic, n" in str(caught.value)


def test_runtime_template_error_names_the_task(openai_env: TestServer) -> None:
    flow = _flow(t1={"format": "{{ outputs.ask.choices[3].message.content }}"})
    with pytest.raises(TemplateError) as caught:
        run_flow(flow, {"topic": "owls"})
    assert caught.value.field == "tasks[1](answer).format"


def test_runtime_render_error_in_a_step_names_the_task(openai_env: TestServer) -> None:
    flow = _flow(t0={"temperature": "{{ inputs.topic }}"})
    with pytest.raises(ConfigError) as caught:
        run_flow(flow, {"topic": "owls"})
    assert caught.value.field == "tasks[0](ask).temperature"
    assert str(caught.value).startswith("tasks[0](ask).temperature:")
    assert openai_env.requests == []


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("rows.csv", b'x\n"open\n1\n', "rows.csv line 2"),
        ("rows.jsonl", b'{"x": 1}\n{"x": "\xff"}\n', "rows.jsonl line 2: not valid UTF-8"),
        ("rows.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("rows.json", b'[{"x": "\xff"}]', "not valid UTF-8"),
        ("rows.json", b'[{"x": ' + b"9" * 5000 + b"}]", "digits"),
    ],
)
def test_a_malformed_rows_file_is_a_config_error(
    openai_env: TestServer, tmp_path: Any, name: str, data: bytes, problem: str
) -> None:
    rows = tmp_path / name
    rows.write_bytes(data)
    task = {"id": "each", "type": "chatstep.map", "file": str(rows)}
    flow = {"id": "x", "tasks": [{**task, "step": {"model": "gpt-4o-mini", "prompt": "p"}}]}
    with pytest.raises(ConfigError) as caught:
        run_flow(flow)
    assert caught.value.field.startswith("tasks[0](each)")
    assert problem in str(caught.value)
    assert openai_env.requests == []
