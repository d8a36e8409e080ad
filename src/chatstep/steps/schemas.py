"""JSON Schemas in a step, checked when the step loads (before anything is sent or paid for).

Every schema in ``response_format.json_schema.schema`` and in a tool's or function's
``parameters`` must be a valid JSON Schema (Draft 2020-12, ``jsonschema``'s ``check_schema``).
With ``strict: true`` it must also follow OpenAI's Structured Outputs rules, which the API
enforces with a 400 after the request is made:

- the root is an object (not ``anyOf``);
- every object lists all its ``properties`` in ``required`` and sets
  ``additionalProperties: false``;
- only supported keywords: ``type``, ``properties``, ``required``, ``additionalProperties``,
  ``items``, ``enum``, ``const``, ``anyOf``, ``$ref``, ``$defs``/``definitions``,
  ``description``, ``title``, ``default``, ``pattern``, ``format``, ``minimum``, ``maximum``,
  ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``, ``minItems``, ``maxItems``
  (not ``allOf``, ``not``, ``if``/``then``/``else``, ``patternProperties``, ``oneOf``...);
- at most :data:`MAX_STRICT_DEPTH` levels of nesting.

Each failure is a :class:`~chatstep.errors.ConfigError` naming the field path into the schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from chatstep.errors import ConfigError

__all__ = ["MAX_STRICT_DEPTH", "STRICT_KEYWORDS", "check_schema", "check_tool_choice"]

STRICT_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
        "description",
        "title",
        "default",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "$schema",
        "$id",
    }
)
"""The JSON Schema keywords OpenAI's strict mode accepts."""

MAX_STRICT_DEPTH = 10
"""OpenAI's nesting limit for strict schemas (objects within objects)."""

_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"


@lru_cache(maxsize=256)
def _metaschema_error(schema_json: str) -> tuple[str, str] | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError, best_match

    try:
        Draft202012Validator.check_schema(json.loads(schema_json))
    except SchemaError:
        validator = Draft202012Validator(Draft202012Validator.META_SCHEMA)
        error = best_match(validator.iter_errors(json.loads(schema_json)))
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        return where, error.message
    return None


def check_schema(schema: Any, field: str, *, strict: bool = False) -> None:
    """Raise :class:`ConfigError` when ``schema`` (at ``field``) is not a valid JSON Schema, or
    (``strict``) breaks OpenAI's strict-mode rules."""
    if not isinstance(schema, Mapping):
        raise ConfigError(field, "must be a JSON Schema object", "write it as a mapping")
    found = _metaschema_error(json.dumps(schema, sort_keys=True, default=str))
    if found is not None:
        where, message = found
        raise ConfigError(
            field + where,
            f"is not a valid JSON Schema: {message}",
            "fix the schema (see https://json-schema.org/understanding-json-schema/)",
        )
    if strict:
        if schema.get("type") != "object" or "anyOf" in schema:
            raise ConfigError(
                field,
                "with strict: true the root must be type: object (not anyOf)",
                "wrap the value in an object with one property",
            )
        for path, node, depth in _nodes(schema, field, 1):
            _check_strict_node(path, node, depth)


def _nodes(node: Mapping[str, Any], path: str, depth: int) -> Iterator[tuple[str, Any, int]]:
    yield path, node, depth
    for key in _SUBSCHEMA_MAPS:
        children = node.get(key)
        if isinstance(children, Mapping):
            deeper = depth + 1 if key == "properties" else depth
            for name, child in children.items():
                if isinstance(child, Mapping):
                    yield from _nodes(child, _join(_join(path, key), str(name)), deeper)
    items = node.get("items")
    if isinstance(items, Mapping):
        yield from _nodes(items, _join(path, "items"), depth)
    for key in ("anyOf",):
        for i, child in enumerate(node.get(key) or []):
            if isinstance(child, Mapping):
                yield from _nodes(child, _join(_join(path, key), i), depth)


def _check_strict_node(path: str, node: Mapping[str, Any], depth: int) -> None:
    fix_strict = "change the schema, or set strict: false"
    unsupported = sorted(set(node) - STRICT_KEYWORDS)
    if unsupported:
        raise ConfigError(
            _join(path, unsupported[0]),
            "is not supported by OpenAI's strict mode (strict: true)",
            f"use only: {', '.join(sorted(STRICT_KEYWORDS - {'$schema', '$id'}))}; or {fix_strict}",
        )
    if depth > MAX_STRICT_DEPTH:
        raise ConfigError(
            path,
            f"nests objects {depth} levels deep; strict mode allows {MAX_STRICT_DEPTH}",
            f"flatten the schema, or {fix_strict}",
        )
    types = node.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    if not is_object:
        return
    if node.get("additionalProperties") is not False:
        raise ConfigError(
            _join(path, "additionalProperties"),
            "must be false for every object in strict mode",
            "add additionalProperties: false",
        )
    properties = node.get("properties") or {}
    required = node.get("required") or []
    missing = [name for name in properties if name not in required]
    if missing:
        raise ConfigError(
            _join(path, "required"),
            f"must list every property in strict mode; missing: {', '.join(missing)}",
            'add them; make an optional one nullable instead (type: ["string", "null"])',
        )


def check_tool_choice(choice: Any, defined: list[str], field: str) -> None:
    """A ``tool_choice`` / ``function_call`` that names a function must name a defined one."""
    name: Any = None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        where = f"{field}.function.name" if "function" in choice else f"{field}.name"
    elif isinstance(choice, str) and choice not in ("auto", "none", "required"):
        name, where = choice, field
    else:
        return
    if name not in defined:
        known = ", ".join(defined) if defined else "none are defined"
        raise ConfigError(
            where,
            f"names the function {name!r}, which the step does not define (defined: {known})",
            "use one of the step's tools/functions, or 'auto'",
        )
