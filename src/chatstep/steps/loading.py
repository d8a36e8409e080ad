"""Load step definitions from YAML, JSON or dicts, turning validation failures into ConfigError."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from chatstep.errors import ConfigError
from chatstep.steps.definitions import ChatCompletion, Completion, Embedding, Moderation, Step
from chatstep.steps.limits import MAX_STEP_FILE_BYTES, check_step_data, load_yaml

__all__ = [
    "StepSource",
    "config_error",
    "load_step",
    "read_step_file",
    "step_class_for",
    "step_from_dict",
    "validate_step",
]

StepSource = Step | str | Path | Mapping[str, Any]
"""A step object, a ``.yaml``/``.yml``/``.json`` path, YAML text, or a mapping."""

_STEP_CLASSES: tuple[
    type[ChatCompletion] | type[Moderation] | type[Embedding] | type[Completion], ...
] = (
    ChatCompletion,
    Moderation,
    Embedding,
    Completion,
)

# Pydantic names union members and tagged-union tags inside error locations; they are not
# field names, so they are dropped from the path shown to users.
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "text", "file"}


def _is_member_tag(part: str) -> bool:
    return (
        part in _UNION_TAGS
        or "[" in part
        or part.startswith(("function-", "constrained-", "json-or-python", "literal"))
        or part[:1].isupper()
    )


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    previous: str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if _is_member_tag(part) or part == previous:
            continue
        out += f".{part}" if out else part
        previous = part
    return out


_FIXES = {
    "extra_forbidden": "remove it, or check its spelling against the configuration reference",
    "missing": "add it",
}


def config_error(exc: ValidationError, prefix: str = "", rendered: bool = False) -> ConfigError:
    """The first meaningful error of a pydantic ValidationError, as a ConfigError."""
    errors = exc.errors(include_url=False)
    # The deepest location is the most specific: in a union, the arm that got furthest.
    deepest = max(len(e["loc"]) for e in errors)
    candidates = [e for e in errors if len(e["loc"]) == deepest]
    # A constraint violation ("at most 4 items") says more than a type mismatch of another arm.
    candidates.sort(key=lambda e: (str(e["type"]).endswith("_type"), "template" in e["msg"]))
    first = candidates[0]
    path = _path(tuple(first["loc"]))
    group = [e for e in errors if _path(tuple(e["loc"])) == path]
    # In a templated union the value arm's message is the useful one; the template arm's is not.
    err = first
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "is not a known field"
    elif err["type"] == "missing":
        msg = "is required"
    elif (
        "input" in err
        and not isinstance(err["input"], (dict, list))
        and not path.endswith("api_key")
    ):
        shown = repr(err["input"])
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = f"{msg} (got {shown})"
    if len(group) > 1 and any("template" in e["msg"] for e in group) and not rendered:
        msg += "; a {{ template }} is also accepted"
    if rendered:
        msg += " after rendering its templates"
    full = f"{prefix}.{path}" if prefix and path else prefix or path
    return ConfigError(full, msg, _FIXES.get(err["type"], ""))


def step_class_for(
    type_name: str | None,
) -> type[ChatCompletion] | type[Moderation] | type[Embedding] | type[Completion]:
    """The step class a ``type`` value names (``chat`` when absent)."""
    if type_name is None:
        return ChatCompletion
    for cls in _STEP_CLASSES:
        if type_name in cls.type_names:
            return cls
    known = ", ".join(n for c in _STEP_CLASSES for n in c.type_names)
    raise ConfigError("type", f"unknown step type {type_name!r}", f"use one of: {known}")


def validate_step(
    cls: type[BaseModel], data: Mapping[str, Any], *, prefix: str = "", rendered: bool = False
) -> Any:
    """Validate ``data`` as ``cls``; errors become ConfigError with the field path."""
    try:
        return cls.model_validate(dict(data), context={"rendered": rendered})
    except ValidationError as exc:
        raise config_error(exc, prefix, rendered) from None
    except ConfigError as exc:
        # Raised by a model check that knows the field path inside the step (schemas).
        if not prefix:
            raise
        raise ConfigError(f"{prefix}.{exc.field}", exc.problem, exc.fix) from None


def step_from_dict(data: Mapping[str, Any], *, prefix: str = "") -> Step:
    """Build a step from a mapping whose optional ``type`` selects chat, moderation or embedding."""
    if not isinstance(data, Mapping):
        raise ConfigError(prefix, f"a step must be a mapping, not {type(data).__name__}")
    check_step_data(data, prefix)
    type_name = data.get("type")
    if type_name is not None and not isinstance(type_name, str):
        raise ConfigError(f"{prefix}.type" if prefix else "type", "must be a string")
    cls = step_class_for(type_name)
    step: Step = validate_step(cls, data, prefix=prefix)
    return step


def load_step(source: StepSource) -> Step:
    """Load a step from a mapping, a ``.yaml``/``.yml``/``.json`` file, or YAML text; a step
    object is returned as it is.

    Raises :class:`ConfigError` for anything else, and for a file that is missing, larger than
    ``MAX_STEP_FILE_BYTES``, not UTF-8, not valid YAML/JSON, or over the bounds of
    :mod:`chatstep.steps.limits` (depth, values counted with YAML aliases expanded).
    """
    if isinstance(source, ChatCompletion | Moderation | Embedding | Completion):
        return source
    if isinstance(source, Mapping):
        return step_from_dict(source)
    if not isinstance(source, (str, Path)):
        raise ConfigError(
            "",
            f"a step is a path, YAML text, a mapping or a step object, not a "
            f"{type(source).__name__}",
        )
    text: str
    path = Path(source) if isinstance(source, Path) or "\n" not in str(source) else None
    if path is not None and path.suffix.lower() in (".yaml", ".yml", ".json"):
        text = read_step_file(path)
    else:
        path = None
        text = str(source)
    where = f" in {path}" if path else ""
    try:
        data = (
            json.loads(text)
            if path is not None and path.suffix.lower() == ".json"
            else load_yaml(text)
        )
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError("", f"the step definition{where} is not valid YAML/JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(
            "", f"the step definition{where} is nested too deep", "flatten the nesting"
        ) from None
    except ConfigError as exc:  # over the bounds of chatstep.steps.limits
        raise ConfigError(exc.field, f"the step definition{where} {exc.problem}", exc.fix) from None
    except ValueError as exc:  # e.g. an integer past Python's 4,300-digit conversion limit
        raise ConfigError("", f"the step definition{where} holds an invalid value: {exc}") from None
    return step_from_dict(data)


def read_step_file(path: Path) -> str:
    """The text of a step file, decoded as strict UTF-8 (a BOM is allowed)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_STEP_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("", f"step file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError("", f"step file {str(path)!r} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_STEP_FILE_BYTES:
        raise ConfigError(
            "", f"step file {str(path)!r} is larger than {MAX_STEP_FILE_BYTES:,} bytes"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            "",
            f"step file {str(path)!r} is not UTF-8 (byte {raw[exc.start]:#04x} at line {line})",
            "save the file as UTF-8",
        ) from None
