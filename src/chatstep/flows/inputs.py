"""Flow inputs: declared Kestra-style (id, type, defaults, required), converted and validated.

Values usually arrive as text (``-i n=3``), so each type converts text: ``INT`` takes ``"3"``,
``BOOLEAN`` takes ``true``/``false``/``yes``/``no``/``1``/``0``, ``JSON`` parses its text. A value
that is already of the right type (from the Python API or ``-i n:=3``) is taken as it is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from chatstep.errors import ConfigError
from chatstep.steps.strict import StrictModel

__all__ = ["INPUT_TYPES", "FlowInput", "resolve_inputs"]

InputType = Literal["STRING", "INT", "FLOAT", "BOOLEAN", "JSON"]
INPUT_TYPES: tuple[str, ...] = ("STRING", "INT", "FLOAT", "BOOLEAN", "JSON")

_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})
_EXAMPLES = {
    "STRING": "any text",
    "INT": "a whole number such as 3",
    "FLOAT": "a number such as 0.5",
    "BOOLEAN": "true or false",
    "JSON": 'a JSON value such as {"a": 1}',
}


class FlowInput(StrictModel):
    """One declared input of a flow."""

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")
    """The name templates read as ``inputs.<id>``."""
    type: InputType = "STRING"
    description: str | None = None
    display_name: str | None = Field(default=None, alias="displayName")
    defaults: Any = None
    """The value used when the run does not give one (converted like a given value)."""
    required: bool = True
    """A required input without defaults must be given (Kestra's default is required)."""
    validator: str | None = None
    """STRING only: a regular expression the whole value must match."""
    min: float | None = None
    """INT and FLOAT only: the smallest value allowed."""
    max: float | None = None
    """INT and FLOAT only: the largest value allowed."""

    @model_validator(mode="before")
    @classmethod
    def _kestra_spellings(cls, data: Any) -> Any:
        # Older Kestra flows name inputs with `name`; types are written upper case there.
        if isinstance(data, dict):
            data = dict(data)
            if "name" in data and "id" not in data:
                data["id"] = data.pop("name")
            if isinstance(data.get("type"), str):
                data["type"] = data["type"].upper()
        return data

    @field_validator("validator")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _options_fit_type(self) -> FlowInput:
        if self.validator is not None and self.type != "STRING":
            raise ValueError(f"validator applies to STRING inputs, not {self.type}")
        if (self.min is not None or self.max is not None) and self.type not in ("INT", "FLOAT"):
            raise ValueError(f"min and max apply to INT and FLOAT inputs, not {self.type}")
        return self

    def convert(self, value: Any, field: str) -> Any:
        """``value`` as this input's type; a ConfigError naming ``field`` when it does not fit."""
        converted = _CONVERTERS[self.type](value)
        if converted is _INVALID:
            shown = repr(value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            raise ConfigError(
                field,
                f"expects {self.type}, got {shown}",
                f"give {_EXAMPLES[self.type]}",
            )
        self._check_bounds(converted, field)
        return converted

    def _check_bounds(self, value: Any, field: str) -> None:
        if self.validator is not None and not re.fullmatch(self.validator, value):
            raise ConfigError(
                field,
                f"{value!r} does not match the input's validator {self.validator!r}",
                "give a value that matches it",
            )
        if self.min is not None and value < self.min:
            raise ConfigError(field, f"{value} is below the minimum {self.min:g}")
        if self.max is not None and value > self.max:
            raise ConfigError(field, f"{value} is above the maximum {self.max:g}")


class _Invalid:
    pass


_INVALID: Any = _Invalid()


def _to_string(value: Any) -> Any:
    return value if isinstance(value, str) else _INVALID


def _to_int(value: Any) -> Any:
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return _INVALID


def _to_float(value: Any) -> Any:
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return _INVALID
    else:
        return _INVALID
    return number if math.isfinite(number) else _INVALID


def _to_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return _INVALID


def _to_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return _INVALID


_CONVERTERS = {
    "STRING": _to_string,
    "INT": _to_int,
    "FLOAT": _to_float,
    "BOOLEAN": _to_bool,
    "JSON": _to_json,
}


def resolve_inputs(declared: Sequence[FlowInput], given: Mapping[str, Any]) -> dict[str, Any]:
    """The run's inputs: given values converted, defaults filled in, required ones checked.

    An optional input with neither a value nor defaults is left out, so templates can use
    ``inputs.x | default(...)``.
    """
    by_id = {i.id: i for i in declared}
    for name in given:
        if name not in by_id:
            known = ", ".join(by_id) or "none"
            raise ConfigError(
                f"inputs.{name}",
                f"is not an input of this flow (declared inputs: {known})",
                "declare it under inputs:, or drop it",
            )
    values: dict[str, Any] = {}
    for spec in declared:
        field = f"inputs.{spec.id}"
        if spec.id in given:
            values[spec.id] = spec.convert(given[spec.id], field)
        elif spec.defaults is not None:
            values[spec.id] = spec.convert(spec.defaults, f"{field} (its defaults)")
        elif spec.required:
            raise ConfigError(
                field,
                f"is required and has no defaults ({spec.type})",
                f"pass it with -i {spec.id}=... or inputs={{{spec.id!r}: ...}}",
            )
    return values
