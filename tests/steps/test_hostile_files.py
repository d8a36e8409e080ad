"""Bad step files are ConfigErrors naming the field: never a traceback, never a hang."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from chatstep import ConfigError, load_step
from chatstep.cli.app import app

BOMB = b"""model: m
prompt: x
extra_body:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

FILES = {
    "utf8.yaml": (b"model: m\nprompt: \xff\xfe\n", "not UTF-8"),
    "deep.yaml": (("model: m\nextra_body: " + "[" * 600 + "]" * 600).encode(), "nested"),
    "deep.json": (
        ('{"model":"m","prompt":"x","extra_body":' + "[" * 600 + "]" * 600 + "}").encode(),
        "nested",
    ),
    "deeper.json": (
        ('{"model":"m","extra_body":' + "[" * 100000 + "]" * 100000 + "}").encode(),
        "nested",
    ),
    "bigint.yaml": (("model: m\nprompt: x\nseed: " + "9" * 5000).encode(), "4300 digits"),
    "bigint.json": (('{"model":"m","prompt":"x","seed":' + "9" * 5000 + "}").encode(), "4300"),
    "header.yaml": (
        "model: m\nprompt: x\nextra_headers: {X-A: 'caf\u00e9'}\n".encode(),
        "extra_headers",
    ),
    "crlf.yaml": (b'model: m\nprompt: x\nextra_headers: {X-A: "a\\r\\nX-B: b"}\n', "extra_headers"),
    "crlf-name.yaml": (b'model: m\nprompt: x\nextra_headers: {"X-A\\r\\n": a}\n', "header name"),
    "surrogate.yaml": (b'model: m\nprompt: "\\ud800 hi"\n', "prompt: holds a lone surrogate"),
    "surrogate.json": (b'{"model": "m", "prompt": "\\ud800 hi"}', "lone surrogate"),
    "bomb.yaml": (BOMB, "aliases counted expanded"),
    "cycle.yaml": (b"model: m\nprompt: x\nextra_body: &a {x: *a}\n", "nested more than"),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_bad_step_file_is_a_config_error(name: str, tmp_path: Path) -> None:
    content, fragment = FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_step(path)
    assert fragment in str(info.value)
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("source", [1.5, None, b"model: m"])
def test_load_step_refuses_other_types(source: object) -> None:
    with pytest.raises(ConfigError, match="not a"):
        load_step(source)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "template",
    [
        "{{ secret(inputs.n) }}",
        "{{ secrets[inputs.n] }}",
        "{% set x = 'A' %}{{ secrets[x] }}",
        "{% for k in secrets %}{{ k }}{% endfor %}",
        "{{ secret(*inputs.args) }}",
    ],
)
def test_secret_names_must_be_literals(template: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_step({"model": "m", "messages": [{"role": "user", "content": template}]})
    assert "messages[0].content" in str(info.value)
    assert "not a literal" in str(info.value)


def test_literal_secret_names_are_accepted() -> None:
    load_step({"model": "m", "prompt": "{{ secret('A') }} {{ secrets.B }} {{ secrets['C'] }}"})


_FRAGMENTS = [
    "model: m\n",
    "prompt: x\n",
    "prompt: '{{ inputs.a }}'\n",
    "extra_body: {a: [1, 2]}\n",
    "extra_headers: {X-A: b}\n",
    "metadata: {k: v}\n",
    "temperature: 3\n",
    "seed: 1e999\n",
    "tools: [{type: function, function: {name: f, parameters: {type: object}}}]\n",
    "response_format: {type: json_schema, json_schema: {name: n, schema: {type: object}}}\n",
    "a: &a [1, 2]\n",
    "b: [*a, *a]\n",
    "- x\n",
    "{",
    "]",
    "\t",
    "\x00",
    "'",
    '"\\ud800"\n',
    "messages: [{role: user, content: hi}]\n",
    "n: 99999999999999999999999\n",
    "? [a]\n: b\n",
]


def _mutate(rng: random.Random) -> bytes:
    text = "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 8)))
    if rng.random() < 0.5:
        text = "model: m\nprompt: x\n" + text
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    for _ in range(rng.randint(0, 3)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.05:
        data = bytearray(b"model: m\nextra_body: " + b"[" * rng.randint(50, 2000))
    return bytes(data)


def test_fuzzed_step_files_give_only_chatstep_exit_codes(
    openai_env: object, tmp_path: Path
) -> None:
    """500 seeded random and mutated step files through `chatstep run`: exit 0 or 3, never 1."""
    rng = random.Random(11)
    runner = CliRunner()
    codes: dict[int, int] = {}
    for index in range(500):
        path = tmp_path / f"f{index}.{rng.choice(['yaml', 'json'])}"
        path.write_bytes(_mutate(rng))
        result = runner.invoke(app, ["run", str(path)])
        assert result.exit_code in (0, 3), (path.read_bytes()[:200], result.output)
        assert "Traceback" not in result.output
        codes[result.exit_code] = codes.get(result.exit_code, 0) + 1
    assert set(codes) <= {0, 3}


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(), max_size=20)
)
_json = st.recursive(
    _json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    field=st.sampled_from(["extra_body", "metadata", "extra_headers", "response_format", "tools"]),
    value=_json,
)
def test_free_form_fields_load_or_raise_config_error(field: str, value: object) -> None:
    with contextlib.suppress(ConfigError):
        load_step({"model": "m", "prompt": "x", field: value})


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_whole_step_texts_load_or_raise_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        load_step("model: m\n" + text + "\n")
