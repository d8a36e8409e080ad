"""Field types for step definitions: values that may also be ``{{ templates }}``.

A step is validated twice. At definition time a numeric or boolean field may hold a template
string instead of a value; it is kept as written. After rendering, the same model is validated
again with the validation context ``{"rendered": True}``, where a template is no longer allowed,
so a rendered ``"{{ inputs.t }}"`` -> ``"3"`` is checked like a literal ``3``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar, get_args, get_origin

from annotated_types import Interval, Len
from pydantic import AfterValidator, ValidationInfo

__all__ = [
    "NonNegativeInt",
    "Penalty",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "Temperature",
    "TemplateStr",
    "Templated",
    "is_templated",
    "looks_like_template",
]

T = TypeVar("T")

_MARKERS = ("{{", "{%", "{#")


def looks_like_template(value: str) -> bool:
    """True when ``value`` contains Jinja markup (``{{``, ``{%`` or ``{#``)."""
    # The "{" test first: most strings have none, and this runs on every field of every row.
    return "{" in value and any(m in value for m in _MARKERS)


def _require_template(value: str, info: ValidationInfo) -> str:
    if not looks_like_template(value):
        raise ValueError("is neither a valid value nor a {{ template }}")
    if isinstance(info.context, dict) and info.context.get("rendered"):
        raise ValueError("still holds a template after rendering")
    return value


TemplateStr = Annotated[str, AfterValidator(_require_template)]
"""A string that must be a Jinja template (used as the second arm of :data:`Templated`)."""


class _TemplatedMarker:
    """The metadata that tags a :data:`Templated` annotation (found by :func:`is_templated`)."""

    def __repr__(self) -> str:
        return "templated"


_TEMPLATED = _TemplatedMarker()

Templated = Annotated[T | TemplateStr, _TEMPLATED]
"""A value of type T, or a template that renders to one."""


def is_templated(annotation: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> bool:
    """True when a field annotation is, or contains (``Templated[int] | None``), a Templated.

    ``metadata`` is pydantic's ``FieldInfo.metadata``, where it moves a top-level
    ``Annotated``'s extras.
    """
    if any(item is _TEMPLATED for item in metadata):
        return True
    if get_origin(annotation) is Annotated and any(
        item is _TEMPLATED for item in annotation.__metadata__
    ):
        return True
    return any(is_templated(arg) for arg in get_args(annotation))


Temperature = Annotated[float, Interval(ge=0, le=2)]
Probability = Annotated[float, Interval(ge=0, le=1)]
Penalty = Annotated[float, Interval(ge=-2, le=2)]
PositiveInt = Annotated[int, Interval(ge=1)]
NonNegativeInt = Annotated[int, Interval(ge=0)]
PositiveFloat = Annotated[float, Interval(gt=0)]
StopList = Annotated[list[str], Len(min_length=1, max_length=4)]
