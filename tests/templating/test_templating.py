"""Sandboxed templating: rendering, native values, errors, the sandbox, input discovery."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2.sandbox import unsafe

from chatstep.errors import (
    ChatstepError,
    ConfigError,
    InvalidJSONError,
    SecretNotFoundError,
    TemplateError,
)
from chatstep.secrets import SecretStore, StaticSecrets, default_secret_store
from chatstep.templating.sandbox import (
    TemplateContext,
    is_template,
    render_string,
    render_value,
)
from chatstep.templating.variables import collect_input_names, template_variables

SECRET = "sk-templating-secret-4f7a9c2e"
SANDBOX_FIX = "templates may read inputs, outputs and secrets only"


def make_ctx(inputs: Mapping[str, Any] | None = None, **outputs: Any) -> TemplateContext:
    return TemplateContext(
        inputs=dict(inputs or {}),
        outputs=outputs,
        secrets=SecretStore([StaticSecrets({"API_KEY": SECRET, "dashed-name": "dash-value-1"})]),
    )


# --- rendering --------------------------------------------------------------------------------


def test_render_string_reads_inputs_and_outputs() -> None:
    ctx = make_ctx({"name": "Ada"}, classify={"label": "urgent"})
    out = render_string("Hi {{ inputs.name }}: {{ outputs.classify.label }}", ctx, "prompt")
    assert out == "Hi Ada: urgent"


def test_whitespace_is_kept_as_written() -> None:
    ctx = make_ctx({"x": "v"})
    source = "  line {{ inputs.x }}\n{% if true %}\n  kept\n{% endif %}\n"
    assert render_string(source, ctx, "prompt") == "  line v\n\n  kept\n\n"


def test_no_autoescape() -> None:
    ctx = make_ctx({"html": "<b>&'\"</b>"})
    assert render_string("{{ inputs.html }}", ctx, "prompt") == "<b>&'\"</b>"


@pytest.mark.parametrize("text", ["{ single", "a } b", "{x}", "", "plain", "{ {", "%}", "#}"])
def test_plain_strings_bypass_jinja(text: str) -> None:
    assert not is_template(text)
    # Inputs that would fail in Jinja show the string never reaches it.
    assert render_string(text, make_ctx(), "prompt") is text


@pytest.mark.parametrize("text", ["{{ x }}", "a {% if %}", "{# note #}", "{{"])
def test_is_template(text: str) -> None:
    assert is_template(text)


@given(st.text().filter(lambda s: not is_template(s)))
def test_any_plain_string_is_returned_unchanged(text: str) -> None:
    assert render_string(text, make_ctx(), "prompt") == text


@given(st.text())
def test_inserted_values_are_never_rendered_again(text: str) -> None:
    # A value holding template markup is data: it comes out verbatim, not evaluated.
    ctx = make_ctx({"x": text})
    assert render_string("{{ inputs.x }}", ctx, "prompt") == text


def test_render_value_walks_nested_structures_and_copies() -> None:
    ctx = make_ctx({"q": "why?", "fn": "lookup"})
    value: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "n": None,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "{{ inputs.q }}"},
        ],
        "tools": ({"function": {"name": "{{ inputs.fn }}"}},),
        "stop": ["{{ inputs.q }}", 3],
    }
    out = render_value(value, ctx, "")
    assert out == {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "n": None,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "why?"},
        ],
        "tools": ({"function": {"name": "lookup"}},),
        "stop": ["why?", 3],
    }
    assert value["messages"][1]["content"] == "{{ inputs.q }}"  # the original is untouched
    assert out["messages"] is not value["messages"]


def test_render_value_leaves_non_strings_untouched() -> None:
    marker = object()
    assert render_value(marker, make_ctx(), "x") is marker
    assert render_value(3, make_ctx(), "x") == 3


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"messages": [{"role": "user", "content": "{{ inputs.nope }}"}]}, "messages[0].content"),
        (
            {"tools": [{}, {"function": {"description": "{{ inputs.nope }}"}}]},
            "tools[1].function.description",
        ),
        ({"metadata": {"odd key": "{{ inputs.nope }}"}}, "metadata['odd key']"),
        ({"stop": ("a", "{{ inputs.nope }}")}, "stop[1]"),
    ],
)
def test_errors_name_the_nested_field(value: Any, field: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_value(value, make_ctx(), "")
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_field_prefix_extends() -> None:
    with pytest.raises(TemplateError) as info:
        render_value({"content": ["{{ inputs.nope }}"]}, make_ctx(), "steps[2].messages[0]")
    assert info.value.field == "steps[2].messages[0].content[0]"


def test_mapping_keys_come_before_methods() -> None:
    ctx = make_ctx({"items": "the items", "keys": "the keys"})
    assert render_string("{{ inputs.items }}/{{ inputs.keys }}", ctx, "p") == "the items/the keys"
    assert render_string("{{ inputs.get('items') }}", ctx, "p") == "the items"


def test_defaults_and_defined_tests_work() -> None:
    ctx = make_ctx({"present": "here"})
    source = (
        "{{ inputs.absent | default('fallback') }} "
        "{% if inputs.absent is defined %}yes{% else %}no{% endif %} "
        "{{ inputs.present }}"
    )
    assert render_string(source, ctx, "p") == "fallback no here"


def test_compiled_templates_are_cached() -> None:
    from chatstep.templating import sandbox as templating

    source = "cached {{ inputs.x }} 8d1e"
    before = templating._compile.cache_info()
    for i in range(5):
        assert render_string(source, make_ctx({"x": i}), "p") == f"cached {i} 8d1e"
    after = templating._compile.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 4
    assert after.maxsize is not None  # bounded


# --- json filters -----------------------------------------------------------------------------


def test_tojson_is_plain_json() -> None:
    ctx = make_ctx({"v": {"html": "<a href='x'>&</a>", "text": "é"}})
    out = render_string("{{ inputs.v | tojson }}", ctx, "p")
    assert out == '{"html": "<a href=\'x\'>&</a>", "text": "é"}'
    assert render_string("{{ inputs.v | tojson(indent=2) }}", ctx, "p") == json.dumps(
        ctx.inputs["v"], indent=2, ensure_ascii=False
    )


def test_tojson_uses_to_json_and_model_dump() -> None:
    class Args:
        def to_json(self) -> dict[str, int]:
            return {"a": 1}

    from pydantic import BaseModel

    class Model(BaseModel):
        b: int

    ctx = make_ctx({"args": Args(), "model": Model(b=2)})
    out = render_string("{{ inputs.args | tojson }} {{ inputs.model | tojson }}", ctx, "p")
    assert out == '{"a": 1} {"b": 2}'


def test_tojson_of_an_unencodable_value() -> None:
    with pytest.raises(TemplateError, match=r"tojson cannot encode a object"):
        render_string("{{ inputs.o | tojson }}", make_ctx({"o": object()}), "p")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(json_values)
def test_tojson_fromjson_round_trip(value: Any) -> None:
    ctx = make_ctx({"v": value})
    assert render_value("{{ inputs.v | tojson | fromjson }}", ctx, "p", native=True) == value
    assert json.loads(render_string("{{ inputs.v | tojson }}", ctx, "p")) == value


def test_fromjson_reads_fields() -> None:
    ctx = make_ctx({"raw": '{"urgency": "high"}'})
    assert render_string("{{ (inputs.raw | fromjson).urgency }}", ctx, "p") == "high"


def test_fromjson_with_bad_json_names_the_field() -> None:
    with pytest.raises(
        TemplateError, match=r"^p: rendering failed: .*fromjson got text that is not"
    ):
        render_string("{{ inputs.raw | fromjson }}", make_ctx({"raw": "{nope"}), "p")


# --- native values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ inputs.temp }}", 0.3),
        ("  {{ inputs.temp }}\n", 0.3),
        ("{{- inputs.temp -}}", 0.3),
        ("{{ inputs.n }}", 7),
        ("{{ inputs.flag }}", False),
        ("{{ inputs.none }}", None),
        ("{{ inputs.n + 1 }}", 8),
        ("{{ inputs.history }}", [{"role": "user", "content": "hi"}]),
        ("{{ inputs.opts }}", {"a": [1, 2]}),
        ("{{ inputs.text }}", "0.5"),
        ("{{ inputs.temp }} ", 0.3),
    ],
)
def test_native_single_expression(source: str, expected: Any) -> None:
    inputs = {
        "temp": 0.3,
        "n": 7,
        "flag": False,
        "none": None,
        "history": [{"role": "user", "content": "hi"}],
        "opts": {"a": [1, 2]},
        "text": "0.5",
    }
    out = render_value(source, make_ctx(inputs), "temperature", native=True)
    assert out == expected
    assert type(out) is type(expected)


@pytest.mark.parametrize(
    "source",
    [
        "{{ inputs.temp }}{{ inputs.temp }}",
        "t={{ inputs.temp }}",
        "{% if true %}{{ inputs.temp }}{% endif %}",
        "{% raw %}{{ inputs.temp }}{% endraw %}",
    ],
)
def test_native_falls_back_to_text(source: str) -> None:
    out = render_value(source, make_ctx({"temp": 0.3}), "f", native=True)
    assert isinstance(out, str)


def test_native_off_gives_text() -> None:
    assert render_value("{{ inputs.temp }}", make_ctx({"temp": 0.3}), "f") == "0.3"


def test_native_containers_are_copies() -> None:
    history = [{"role": "user", "content": "hi"}]
    out = render_value({"messages": "{{ inputs.history }}"}, make_ctx({"history": history}), "")
    assert out == {"messages": str(history)}  # not native: render_value's default
    out = render_value("{{ inputs.history }}", make_ctx({"history": history}), "m", native=True)
    out.append({"role": "assistant", "content": "changed"})
    out[0]["content"] = "changed"
    assert history == [{"role": "user", "content": "hi"}]


def test_native_nested_values() -> None:
    value = {"messages": "{{ inputs.history }}", "temperature": "{{ inputs.t }}"}
    out = render_value(value, make_ctx({"history": [], "t": 1}), "", native=True)
    assert out == {"messages": [], "temperature": 1}


def test_native_secret_is_a_string() -> None:
    assert render_value("{{ secrets.API_KEY }}", make_ctx(), "api_key", native=True) == SECRET
    assert render_value("{{ secrets }}", make_ctx(), "api_key", native=True) == "<secrets>"


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["{{ secret('API_KEY') }}", "{{ secrets.API_KEY }}", "{{ secrets['API_KEY'] }}"],
)
def test_secret_syntaxes(source: str) -> None:
    assert render_string(source, make_ctx(), "api_key") == SECRET


def test_secret_names_with_dashes() -> None:
    ctx = make_ctx()
    assert render_string("{{ secrets['dashed-name'] }}", ctx, "p") == "dash-value-1"
    assert render_string("{{ secret('dashed-name') }}", ctx, "p") == "dash-value-1"


def test_secrets_are_looked_up_lazily() -> None:
    class CountingSecrets:
        name = "counting"

        def __init__(self) -> None:
            self.asked: list[str] = []

        def find(self, name: str) -> str | None:
            self.asked.append(name)
            return "lazy-value-5e5e"

    provider = CountingSecrets()
    ctx = TemplateContext(secrets=SecretStore([provider]))
    assert render_string("{% if false %}{{ secret('A') }}{% endif %}{{ secrets.B }}", ctx, "p") == (
        "lazy-value-5e5e"
    )
    assert provider.asked == ["B"]


def test_missing_secret_from_all_providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("OTHER=other-value-8c8c\n", encoding="utf-8")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    monkeypatch.delenv("CHATSTEP_TEST_MISSING", raising=False)
    ctx = TemplateContext(secrets=default_secret_store(dotenv, secrets_dir))
    searched = f"environment, .env file {dotenv}, secrets directory {secrets_dir}"
    for source in ("{{ secret('CHATSTEP_TEST_MISSING') }}", "{{ secrets.CHATSTEP_TEST_MISSING }}"):
        with pytest.raises(SecretNotFoundError) as info:
            render_value({"api_key": source}, ctx, "", native=True)
        assert info.value.field == "api_key"
        assert info.value.name == "CHATSTEP_TEST_MISSING"
        assert searched in str(info.value)


def test_each_provider_reaches_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("CHATSTEP_TEST_FROM_DOTENV=dotenv-value-aa11\n", encoding="utf-8")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "CHATSTEP_TEST_FROM_DIR").write_text("dir-value-bb22\n", encoding="utf-8")
    monkeypatch.setenv("CHATSTEP_TEST_FROM_ENV", "env-value-cc33")
    ctx = TemplateContext(secrets=default_secret_store(dotenv, secrets_dir))
    source = (
        "{{ secret('CHATSTEP_TEST_FROM_ENV') }} {{ secrets.CHATSTEP_TEST_FROM_DOTENV }} "
        "{{ secrets['CHATSTEP_TEST_FROM_DIR'] }}"
    )
    assert render_string(source, ctx, "p") == "env-value-cc33 dotenv-value-aa11 dir-value-bb22"


def test_missing_secret_with_default() -> None:
    out = render_string("{{ secrets.NOT_THERE | default('none') }}", make_ctx(), "p")
    assert out == "none"


def test_path_traversal_secret_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a valid secret name") as info:
        render_string("{{ secret('../etc/passwd') }}", make_ctx(), "api_key")
    assert info.value.field == "api_key"


def _error_text(err: BaseException) -> str:
    return "".join(traceback.format_exception(type(err), err, err.__traceback__)) + repr(err)


@pytest.mark.parametrize(
    "source",
    [
        "{{ secret('API_KEY') }} {{ inputs.missing }}",
        "{{ secrets.API_KEY }}\n{{ inputs.d[secrets.API_KEY] }}",
        "{{ inputs.d[secret('API_KEY')] }}",
        "{{ secret('API_KEY') | fromjson }}",
        "{{ secret('API_KEY') + 1 }}",
        "{{ inputs.explode[secret('API_KEY')] }}",
        "{{ inputs.d[secret('API_KEY')].x }}",
        "{{ secret('API_KEY') }} {{ secret('NOT_THERE') }}",
        "{{ secret('API_KEY') }}{% if %}",
    ],
)
def test_secret_values_never_appear_in_errors(source: str) -> None:
    class Explodes(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise ValueError(f"no entry for {key}")

        def __iter__(self) -> Iterator[str]:
            return iter(())

        def __len__(self) -> int:
            return 0

    ctx = make_ctx({"d": {}, "explode": Explodes()})
    for native in (False, True):
        with pytest.raises(ChatstepError) as info:
            render_value(source, ctx, "prompt", native=native)
        assert SECRET not in _error_text(info.value)
        assert info.value.field == "prompt"  # type: ignore[attr-defined]


# --- error messages ---------------------------------------------------------------------------


def test_missing_input_message() -> None:
    with pytest.raises(TemplateError) as info:
        render_value(
            {"messages": [{"role": "user", "content": "{{ inputs.prompt }}"}]}, make_ctx(), ""
        )
    assert str(info.value) == (
        "messages[0].content: the template uses inputs.prompt, but no input 'prompt' was given "
        "(pass it with -i prompt=... or inputs={'prompt': ...})"
    )
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    "source",
    [
        "{{ inputs['prompt'] }}",
        "{% if inputs.prompt %}x{% endif %}",
        "{% for m in inputs.prompt %}{% endfor %}",
        "{{ inputs.prompt.text }}",
        "{{ inputs.prompt | upper }}",
    ],
)
def test_missing_input_in_any_shape(source: str) -> None:
    for native in (False, True):
        with pytest.raises(TemplateError, match="no input 'prompt' was given"):
            render_value(source, make_ctx(), "prompt", native=native)


def test_missing_output_lists_the_available_ones() -> None:
    ctx = make_ctx(classify={"label": "x"}, extract={"fields": {}})
    with pytest.raises(TemplateError) as info:
        render_string("{{ outputs.summarize.content }}", ctx, "messages[1].content")
    message = str(info.value)
    assert info.value.field == "messages[1].content"
    assert "outputs.summarize" in message
    assert "'summarize'" in message
    assert "available outputs: classify, extract" in message


def test_missing_output_when_no_step_ran() -> None:
    with pytest.raises(TemplateError, match="no step has run before this one"):
        render_string("{{ outputs.first }}", make_ctx(), "prompt")


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("{{ inputs.user.nmae }}", "inputs.user.nmae"),
        ("{{ inputs['user']['nmae'] }}", "inputs['user']['nmae']"),
        ("{{ outputs.classify.lable }}", "outputs.classify.lable"),
        ("{{ inputs.user.name.first.x }}", "inputs.user.name.first"),
    ],
)
def test_missing_attribute_names_the_expression(source: str, path: str) -> None:
    ctx = make_ctx({"user": {"name": "Ada"}}, classify={"label": "x"})
    with pytest.raises(TemplateError) as info:
        render_string(source, ctx, "prompt")
    assert f"the template uses {path}, but" in str(info.value)


def test_missing_list_element() -> None:
    with pytest.raises(TemplateError, match=r"inputs.xs\[3\], but list object has no element 3"):
        render_string("{{ inputs.xs[3] }}", make_ctx({"xs": [1]}), "p")


def test_unknown_top_level_name_suggests_inputs() -> None:
    with pytest.raises(TemplateError) as info:
        render_string("{{ prompt }}", make_ctx(), "p")
    assert "the template uses 'prompt', which is not defined" in str(info.value)
    assert "did you mean inputs.prompt?" in str(info.value)


def test_undefined_error_reports_the_line_of_a_multiline_template() -> None:
    with pytest.raises(TemplateError) as info:
        render_string("one\ntwo\n{{ inputs.nope }}\n", make_ctx(), "prompt")
    assert info.value.line == 3
    assert "(template line 3)" in str(info.value)


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("{{ inputs.x + }}", 1),
        ("first\nsecond {{ inputs.x }}\nthird {{ inputs.x + }}\n", 3),
        ("line one\n{% if inputs.x %}\nopen\n", 2),
        ("{{ inputs.x | no_such_filter }}", 1),
        ("{% endfor %}", 1),
    ],
)
def test_syntax_error_reports_the_line(source: str, line: int) -> None:
    for native in (False, True):
        with pytest.raises(TemplateError) as info:
            render_value(source, make_ctx({"x": 1}), "prompt", native=native)
        assert info.value.field == "prompt"
        assert info.value.line == line
        assert str(info.value).startswith("prompt: template syntax error: ")
        assert f"(template line {line})" in str(info.value)
        assert "{% raw %}" in info.value.fix


def test_chatstep_errors_from_values_propagate_unchanged() -> None:
    class ToolArguments(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise InvalidJSONError("outputs.triage...arguments: arguments are not valid JSON")

        def __iter__(self) -> Iterator[str]:
            return iter(())

        def __len__(self) -> int:
            return 1

    ctx = make_ctx(triage={"arguments": ToolArguments()})
    for native in (False, True):
        with pytest.raises(InvalidJSONError, match="arguments are not valid JSON"):
            render_value("{{ outputs.triage.arguments.urgency }}", ctx, "p", native=native)


def test_other_errors_from_values_become_template_errors() -> None:
    class Broken:
        @property
        def value(self) -> str:
            raise RuntimeError("backing store is down")

    with pytest.raises(TemplateError) as info:
        render_string("{{ inputs.b.value }}", make_ctx({"b": Broken()}), "messages[0].content")
    assert info.value.field == "messages[0].content"
    assert "RuntimeError: backing store is down" in str(info.value)


# --- the sandbox ------------------------------------------------------------------------------


@unsafe
def _dangerous() -> str:
    return "ran"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ inputs.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ joiner.__init__.__globals__.os }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ inputs.history.append(1) }}",
        "{{ inputs.opts.update({'a': 2}) }}",
        "{{ inputs.opts.pop('a') }}",
        "{{ '{0.__class__}'.format(inputs) }}",
        "{{ '{history.__class__}'.format_map(inputs) }}",
        "{{ inputs.fn() }}",
        "{{ secret.__self__ }}",
        "{{ secrets._store }}",
        "{{ secrets.__getitem__ }}",
        "{{ inputs.history.__len__() }}",
        "{{ 'x' * 1000000000 }}",
        "{{ [1] * 1000000000 }}",
        "{{ 2 ** 99999999 }}",
        "{% set x = ''.__class__ %}{{ x }}",
        "{{ (inputs|attr('__class__')) }}",
    ],
)
def test_sandbox_escapes_are_refused(source: str) -> None:
    inputs = {"history": [1], "opts": {"a": 1}, "fn": _dangerous}
    for native in (False, True):
        ctx = make_ctx(inputs)
        with pytest.raises(TemplateError) as info:
            render_value(source, ctx, "prompt", native=native)
        err = info.value
        assert err.field == "prompt"
        assert err.problem.startswith("refused by the template sandbox: "), str(err)
        assert err.fix == SANDBOX_FIX or "bounded" in err.fix
    assert inputs == {"history": [1], "opts": {"a": 1}, "fn": _dangerous}


def test_safe_operations_still_work() -> None:
    ctx = make_ctx({"xs": [3, 1, 2], "name": "ada"})
    source = (
        "{{ inputs.xs | sort | join(',') }} {{ inputs.name.upper() }} {{ 2 ** 10 }} {{ 'ab' * 3 }}"
    )
    assert render_string(source, ctx, "p") == "1,2,3 ADA 1024 ababab"
    assert render_string("{{ '{0}-{1}'.format(1, 'b') }}", ctx, "p") == "1-b"


# --- input discovery --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("no template", set()),
        ("{{ inputs.x }}", {"x"}),
        ("{{ inputs['x'] }}", {"x"}),
        ('{{ inputs["x"].y.z }}', {"x"}),
        ("{{ inputs.x.y[0]['k'] }}", {"x"}),
        (
            "{{ inputs.a ~ inputs.b }} {{ outputs.s.c }} {{ secrets.K }} {{ secret('J') }}",
            {"a", "b"},
        ),
        ("{% for m in inputs.history %}{{ m.content }}{% endfor %}", {"history"}),
        (
            "{% if inputs.flag %}{{ inputs.yes }}{% else %}{{ inputs.no }}{% endif %}",
            {"flag", "yes", "no"},
        ),
        ("{{ inputs.x | default(inputs.y) }}", {"x", "y"}),
        ("{% set v = inputs.x %}{{ v }}", {"x"}),
        ("{% for k, v in inputs.items() %}{{ k }}{% endfor %}", set()),
        ("{{ inputs.get('maybe', 'd') }}", {"maybe"}),
        ("{{ inputs[name] }}", set()),
        ("{{ other.x }}", set()),
        ("{# {{ inputs.commented }} #}", set()),
        ("{{ inputs.a }}{{ inputs.a }}", {"a"}),
    ],
)
def test_template_variables(source: str, names: set[str]) -> None:
    assert template_variables(source) == names


@pytest.mark.parametrize(
    ("source", "required"),
    [
        ("{{ inputs.x | default('d') }}", set()),
        ("{{ inputs.x.y | d('d') }}", set()),
        ("{% if inputs.x is defined %}{{ inputs.x }}{% endif %}{{ inputs.y }}", {"y"}),
        ("{% if inputs.x is defined %}{% else %}{{ inputs.x }}{% endif %}", {"x"}),
        ("{{ inputs.x if inputs.x is defined else inputs.z }}", {"z"}),
        ("{% if inputs.x is defined and inputs.x.ok %}{% endif %}", set()),
        ("{{ inputs.x | default(inputs.y) }}", {"y"}),
        ("{{ inputs.get('x') }}", set()),
        ("{{ inputs.x }} {{ inputs.x | default('') }}", {"x"}),
    ],
)
def test_required_template_variables(source: str, required: set[str]) -> None:
    assert template_variables(source, required_only=True) == required
    # An optional reference still counts as a variable.
    assert required <= template_variables(source)


def test_required_variables_match_rendering() -> None:
    # Every name reported as optional really is: rendering without it succeeds.
    source = (
        "{{ inputs.a | default('') }}{% if inputs.b is defined %}{{ inputs.b.c }}{% endif %}"
        "{{ inputs.get('d') }}{{ inputs.e if inputs.e is defined else '' }}{{ inputs.req }}"
    )
    assert template_variables(source, required_only=True) == {"req"}
    assert template_variables(source) == {"a", "b", "d", "e", "req"}
    assert render_string(source, make_ctx({"req": "!"}), "p") == "None!"


def test_template_variables_syntax_error() -> None:
    with pytest.raises(TemplateError) as info:
        template_variables("{{ inputs.x + }}", field="prompt")
    assert info.value.field == "prompt"
    assert info.value.line == 1


def test_collect_input_names() -> None:
    value = {
        "model": "{{ inputs.model | default('gpt-4o-mini') }}",
        "messages": [
            {"role": "system", "content": "static"},
            {"role": "user", "content": "{{ inputs.question }} {{ inputs['context'] }}"},
        ],
        "temperature": 0.1,
        "tools": ({"function": {"description": "{{ inputs.tool_help }}"}},),
    }
    assert collect_input_names(value) == {"model", "question", "context", "tool_help"}
    assert collect_input_names(value, required_only=True) == {"question", "context", "tool_help"}
    with pytest.raises(TemplateError) as info:
        collect_input_names({"messages": [{"content": "{% if %}"}]})
    assert info.value.field == "messages[0].content"


def test_templated_fields_are_found_from_the_annotation_whatever_its_shape() -> None:
    from chatstep.core.render import templated_fields
    from chatstep.steps.definitions import ChatCompletion, Embedding

    chat = templated_fields(ChatCompletion)
    # Top-level Templated[...] (pydantic moves its metadata off the annotation) and
    # Templated[...] | None alike; plain strings are not native-rendered.
    assert {"timeout", "max_retries", "temperature", "n", "messages", "seed"} <= chat
    assert not {"model", "prompt", "api_key", "base_url"} & chat
    assert {"timeout", "dimensions", "input"} <= templated_fields(Embedding)


def test_a_templated_timeout_renders_to_its_native_value() -> None:
    from chatstep.core.render import make_context, render_step
    from chatstep.steps.definitions import ChatCompletion

    step = ChatCompletion(
        model="gpt-4o-mini", prompt="hi", timeout="{{ inputs.t }}", max_retries="{{ inputs.r }}"
    )
    rendered = render_step(step, make_context({"t": 2.5, "r": 0}))
    assert (rendered.timeout, rendered.max_retries) == (2.5, 0)
