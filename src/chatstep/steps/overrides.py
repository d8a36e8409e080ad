"""Overriding a step's fields by dotted path (``temperature``, ``response_format.type``).

What ``--set field=value`` on the command line does: the step's fields as set are copied, each
change is put at its path (a field's alias, ``maxTokens``, names the same field as
``max_tokens``), and the result is validated again as the same step class, so a bad value is a
:class:`~chatstep.errors.ConfigError` naming the path. A value may be a string: the step model
converts it as it converts the same text in a YAML file (``"0.2"`` for a float field).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel

from chatstep.errors import ConfigError
from chatstep.steps.definitions import Step
from chatstep.steps.loading import validate_step

__all__ = ["MAX_PATH_DEPTH", "override_step"]

#: Deepest dotted path accepted (a step nests a few levels at most).
MAX_PATH_DEPTH = 16


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (``ResponseFormat | None`` -> ResponseFormat)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _field_name(model: type[BaseModel] | None, key: str) -> tuple[str, type[BaseModel] | None]:
    """The field name ``key`` means in ``model`` (by name or alias) and the model under it."""
    if model is None:
        return key, None
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            models = _models_in(info.annotation)
            return name, models[0] if len(models) == 1 else None
    return key, None


def _split(path: str, label: str) -> list[str]:
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise ConfigError(label, f"{path!r} is not a field path", "write field or field.subfield")
    if len(parts) > MAX_PATH_DEPTH:
        raise ConfigError(label, f"is nested deeper than {MAX_PATH_DEPTH} levels")
    return parts


def override_step(step: Step, changes: Mapping[str, Any], *, label: str = "--set") -> Step:
    """A copy of ``step`` with each ``{"dotted.path": value}`` change applied, validated again.

    ``label`` prefixes the field in errors (``--set temperature: ...``). Raises
    :class:`~chatstep.errors.ConfigError` for an unknown field, a bad value, or a path through a
    value that is not a mapping.
    """
    if not changes:
        return step
    data: dict[str, Any] = step.model_dump(mode="python", exclude_unset=True)
    for path, value in changes.items():
        parts = _split(path, label)
        model: type[BaseModel] | None = type(step)
        target = data
        for depth, key in enumerate(parts):
            name, model = _field_name(model, key)
            if depth == len(parts) - 1:
                target[name] = value
                break
            child = target.get(name)
            if child is None:
                child = target[name] = {}
            elif isinstance(child, BaseModel):
                child = target[name] = child.model_dump(mode="python", exclude_unset=True)
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(
                    f"{label} {path}",
                    f"{where} holds a {type(child).__name__}, not fields",
                    f"set {where} itself, or {where}:=JSON",
                )
            target = child
    try:
        result: Step = validate_step(type(step), data)
    except ConfigError as exc:
        raise ConfigError(f"{label} {exc.field}".strip(), exc.problem, exc.fix) from None
    return result
