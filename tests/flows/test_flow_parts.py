"""Units of flows: input conversion, durations, retry settings, reference finding, `response`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatstep.errors import ConfigError
from chatstep.flows.inputs import FlowInput, resolve_inputs
from chatstep.flows.refs import OutputRef, bind_response, output_references
from chatstep.flows.tasks import TaskRetry, parse_duration


@pytest.mark.parametrize(
    ("kind", "given_value", "expected"),
    [
        ("STRING", "x", "x"),
        ("INT", "42", 42),
        ("INT", " -3 ", -3),
        ("INT", 7, 7),
        ("INT", 2.0, 2),
        ("FLOAT", "0.5", 0.5),
        ("FLOAT", 3, 3.0),
        ("BOOLEAN", "true", True),
        ("BOOLEAN", "No", False),
        ("BOOLEAN", "1", True),
        ("BOOLEAN", False, False),
        ("JSON", '{"a": [1, 2]}', {"a": [1, 2]}),
        ("JSON", [1, 2], [1, 2]),
        ("JSON", "3", 3),
    ],
)
def test_conversions(kind: str, given_value: Any, expected: Any) -> None:
    spec = FlowInput.model_validate({"id": "x", "type": kind})
    value = spec.convert(given_value, "inputs.x")
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "given_value"),
    [
        ("STRING", 3),
        ("INT", "3.5"),
        ("INT", True),
        ("INT", "three"),
        ("FLOAT", "nan"),
        ("FLOAT", "x"),
        ("BOOLEAN", "maybe"),
        ("BOOLEAN", 1),
        ("JSON", "{not json"),
    ],
)
def test_refused_values_name_the_input(kind: str, given_value: Any) -> None:
    spec = FlowInput.model_validate({"id": "x", "type": kind})
    with pytest.raises(ConfigError) as caught:
        spec.convert(given_value, "inputs.x")
    assert caught.value.field == "inputs.x"
    assert f"expects {kind}" in str(caught.value)


def test_validator_min_max_and_kestra_spellings() -> None:
    spec = FlowInput.model_validate({"name": "code", "type": "string", "validator": "[A-Z]{3}"})
    assert spec.id == "code"
    assert spec.type == "STRING"
    assert spec.convert("ABC", "f") == "ABC"
    with pytest.raises(ConfigError, match="does not match"):
        spec.convert("abc", "f")
    bounded = FlowInput.model_validate({"id": "n", "type": "INT", "min": 1, "max": 5})
    with pytest.raises(ConfigError, match="above the maximum 5"):
        bounded.convert("6", "f")
    with pytest.raises(ValueError, match="validator applies to STRING"):
        FlowInput.model_validate({"id": "n", "type": "INT", "validator": "x"})


def test_resolve_inputs_defaults_and_optional() -> None:
    declared = [
        FlowInput.model_validate({"id": "a", "type": "INT", "defaults": "5"}),
        FlowInput.model_validate({"id": "b", "type": "STRING", "required": False}),
        FlowInput.model_validate({"id": "c", "type": "JSON"}),
    ]
    assert resolve_inputs(declared, {"c": "[1]"}) == {"a": 5, "c": [1]}
    assert resolve_inputs(declared, {"a": 1, "b": "x", "c": {}}) == {"a": 1, "b": "x", "c": {}}


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_int_text_round_trips(n: int) -> None:
    spec = FlowInput(id="n", type="INT")
    assert spec.convert(str(n), "f") == n


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        ("2.5", 2.5),
        ("PT30S", 30.0),
        ("PT1M30S", 90.0),
        ("P1DT1H", 90000.0),
        ("pt0.25s", 0.25),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        (timedelta(minutes=2), 120.0),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["PT", "P", "soon", "0", "-1", "PT0S", True, timedelta(0)])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than zero"):
        parse_duration(text)


def test_retry_policies() -> None:
    constant = TaskRetry.model_validate({"type": "constant", "interval": "PT2S", "maxAttempt": 4})
    policy = constant.policy()
    assert policy.max_retries == 3
    assert (policy.initial_delay, policy.max_delay, policy.multiplier, policy.jitter) == (
        2.0,
        2.0,
        1.0,
        0.0,
    )
    exponential = TaskRetry.model_validate(
        {
            "type": "exponential",
            "interval": "1s",
            "maxInterval": "8s",
            "delayFactor": 3,
            "max_retries": 2,
        }
    ).policy()
    assert (exponential.initial_delay, exponential.max_delay, exponential.multiplier) == (1, 8, 3)
    rand = TaskRetry.model_validate(
        {"type": "random", "minInterval": "1s", "maxInterval": "3s", "maxAttempt": 2}
    ).policy()
    assert (rand.initial_delay, rand.max_delay, rand.jitter) == (2.0, 3.0, 0.5)
    assert TaskRetry.model_validate(3).retries == 3
    with pytest.raises(ValueError, match="say how many times"):
        TaskRetry.model_validate({"type": "exponential"})


def test_output_references() -> None:
    refs = output_references(
        "{{ outputs.a.choices[0] }} {{ outputs['b-c'].value }} {% for x in outputs.d %}{% endfor %}"
        "{{ outputs[name] }} {{ 'outputs.e' }}"
    )
    assert refs == [OutputRef("a", "choices"), OutputRef("b-c", "value"), OutputRef("d", None)]


def test_bind_response() -> None:
    assert bind_response("{{ response.id }}", "ask") == "{{ outputs.ask.id }}"
    assert bind_response("{{- response | tojson -}}", "a-b") == '{{- outputs["a-b"] | tojson -}}'
    assert (
        bind_response("response: {{ 'response' ~ x.response ~ response_x ~ response }}", "t")
        == "response: {{ 'response' ~ x.response ~ response_x ~ outputs.t }}"
    )
    assert bind_response("{% if response %}{{ response.a }}{% endif %}", "t") == (
        "{% if outputs.t %}{{ outputs.t.a }}{% endif %}"
    )
