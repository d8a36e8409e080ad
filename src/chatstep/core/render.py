"""Rendering a step: every string field through the sandbox, then validation again.

A field whose whole value is one template (``temperature: "{{ inputs.t }}"``,
``messages: "{{ inputs.history }}"``) renders to a native value when the field is typed
:data:`chatstep.steps.fields.Templated`; other strings render to strings. The rendered data is then
validated by the step's own model, so rendered values meet the same rules as literal ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from chatstep.core.result import _ResultBase, template_view
from chatstep.secrets import SecretStore, default_secret_store
from chatstep.steps.definitions import StepBase
from chatstep.steps.fields import is_templated, looks_like_template
from chatstep.steps.loading import validate_step
from chatstep.templating.sandbox import TemplateContext, render_value

__all__ = ["make_context", "outputs_view", "render_step", "templated_fields"]

S = TypeVar("S", bound=StepBase)


@cache
def templated_fields(cls: type[StepBase]) -> frozenset[str]:
    """Fields of ``cls`` that may hold a whole-value template rendering to a non-string."""
    return frozenset(
        name
        for name, info in cls.model_fields.items()
        if is_templated(info.annotation, info.metadata)
    )


def outputs_view(outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Earlier steps' results as templates address them."""
    view: dict[str, Any] = {}
    for step_id, value in (outputs or {}).items():
        if isinstance(value, _ResultBase):
            value = value.response
        if isinstance(value, dict) and isinstance(value.get("choices"), list):
            value = template_view(value, step_id)
        view[step_id] = value
    return view


def make_context(
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    secrets: SecretStore | None = None,
    retrieved: list[dict[str, Any]] | None = None,
) -> TemplateContext:
    """A template context from plain inputs, earlier results, a secret store and the chunks a
    step's ``retrieve`` found (``retrieved``: None leaves the name undefined)."""
    return TemplateContext(
        inputs=dict(inputs or {}),
        outputs=outputs_view(outputs),
        secrets=secrets if secrets is not None else default_secret_store(),
        retrieved=retrieved,
    )


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return looks_like_template(value)
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def render_step(step: S, ctx: TemplateContext, *, prefix: str = "") -> S:
    """The step with every template rendered, validated again."""
    data = step.model_dump(exclude_unset=True, by_alias=False)
    if not _has_template(data):
        return step  # nothing to render: skip a second validation on the hot path
    native = templated_fields(type(step))
    rendered: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{prefix}.{name}" if prefix else name
        whole = name in native and isinstance(value, str)
        rendered[name] = render_value(value, ctx, path, native=whole)
    result: S = validate_step(type(step), rendered, prefix=prefix, rendered=True)
    return result
