"""Templates are bounded in memory and time: every input of issue 11 is a TemplateError."""

from __future__ import annotations

import pytest

from chatstep import TemplateError
from chatstep.templating.sandbox import TemplateContext, render_string

HOSTILE = [
    "{{ 'a'|center(2000000000) }}",
    "{{ 'a'.ljust(2000000000) }}",
    "{{ 'a'.rjust(2000000000) }}",
    "{{ '1'.zfill(2000000000) }}",
    "{{ 'a\tb'.expandtabs(2000000000) }}",
    "{{ 'a\nb'|indent(2000000000) }}",
    "{{ '%2000000000d'|format(1) }}",
    "{{ '%2000000000d' % 1 }}",
    "{{ '%*d' % (2000000000, 1) }}",
    "{{ '{:>2000000000}'.format(1) }}",
    "{{ '{:>{w}}'.format(1, w=2000000000) }}",
    "{% for i in range(1000) %}{{ 'a'*9999999 }}{% endfor %}",
    "{% for i in range(1000) %}{{ 'a'*999999 }}{% endfor %}",
    "{{ ((range(100000)|list)*100)|join(',') }}",
    "{% set s = 'abcdefghij'*1000 %}{{ s.replace('a', s).replace('a', s) }}",
    "{% set s = 'abcdefghij'*1000 %}{{ s|replace('a', s)|replace('a', s) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ lipsum(100000, False, 99999, 100000) }}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% else %}x{% endif %}{% endmacro %}"
    "{{ f(40) }}",
    "{% macro f(n) %}{{ f(n+1) }}{% endmacro %}{{ f(0) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "{{ [1]*2000000000 }}",
    "{{ (['x'*1000000]*1000)|join }}",
    "{{ ','.join(['x'*1000000]*1000) }}",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_templates_are_refused_naming_the_field(source: str) -> None:
    with pytest.raises(TemplateError) as info:
        render_string(source, TemplateContext(), "messages[0].content")
    assert info.value.field == "messages[0].content"


def test_ordinary_templates_still_render() -> None:
    source = (
        "{{ range(5)|length }} {{ 'ok'|center(6) }} {{ '%5d'|format(3) }} {{ '{:>4}'.format(1) }}"
        " {{ [1,2]|join(',') }} {{ 'a b'|replace(' ', '-') }} {{ 'ab' ~ 'c' }}"
    )
    assert render_string(source, TemplateContext(), "prompt") == ("5   ok       3    1 1,2 a-b abc")


def test_one_request_is_bounded_across_fields() -> None:
    ctx = TemplateContext(inputs={"s": "x" * 3_000_000})
    for name in "abcde":
        render_string("{{ inputs.s }}", ctx, name)
    with pytest.raises(TemplateError) as info:
        render_string("{{ inputs.s }}", ctx, "f")
    assert "rendered more than" in str(info.value)
