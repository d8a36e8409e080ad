"""Deterministic JSON instances generated from a JSON Schema (for structured-output answers).

Covers what Structured Outputs and function parameters use: objects (every listed property,
so required ones too), arrays, strings, numbers, integers, booleans, null, ``enum`` (first value),
``const``, ``anyOf``/``oneOf`` (first non-null branch), ``allOf`` (merged), ``type`` lists and
``$ref`` within the schema (``#/$defs/...``, ``#/definitions/...``, ``#``). ``format`` and
``pattern`` are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["instance_for"]

_MAX_DEPTH = 8
_GIVE_UP_DEPTH = 64
_SAMPLE_STRING = "example"


def instance_for(schema: Any) -> Any:
    """A deterministic instance of ``schema`` (the same schema always gives the same value)."""
    return _Generator(schema).generate(schema, depth=0, ordinal=0)


class _Generator:
    def __init__(self, root: Any) -> None:
        self.root = root

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise ValueError(
                f"$ref {ref!r}: only references inside the schema ('#/...') are supported; "
                "inline the referenced schema"
            )
        node: Any = self.root
        for raw in ref[1:].split("/"):
            if not raw:
                continue
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list):
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                raise ValueError(f"$ref {ref!r}: {part!r} is not in the schema")
        return node

    def generate(self, schema: Any, *, depth: int, ordinal: int) -> Any:
        if depth > _GIVE_UP_DEPTH:
            raise ValueError("schema recurses without end; make the recursive property optional")
        if schema is True or schema is None or schema == {}:
            return _SAMPLE_STRING
        if schema is False or not isinstance(schema, Mapping):
            return None
        if "$ref" in schema:
            target = self.resolve(str(schema["$ref"]))
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            merged = {**target, **siblings} if isinstance(target, Mapping) else target
            return self.generate(merged, depth=depth + 1, ordinal=ordinal)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            values = schema["enum"]
            return values[ordinal % len(values)] if ordinal else values[0]
        if "allOf" in schema:
            return self._all_of(schema, depth=depth, ordinal=ordinal)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self.generate(_pick_branch(options, self), depth=depth + 1, ordinal=ordinal)
        return self._typed(schema, _schema_type(schema), depth=depth, ordinal=ordinal)

    def _all_of(self, schema: Mapping[str, Any], *, depth: int, ordinal: int) -> Any:
        merged: dict[str, Any] = {}
        scalar: Any = None
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        for part in [*schema["allOf"], rest]:
            value = self.generate(part, depth=depth + 1, ordinal=ordinal) if part else None
            if isinstance(value, dict):
                merged.update(value)
            elif value is not None and value != _SAMPLE_STRING:
                scalar = value
        return merged if merged or scalar is None else scalar

    def _typed(self, schema: Mapping[str, Any], kind: str, *, depth: int, ordinal: int) -> Any:
        if kind == "object":
            return self._object(schema, depth=depth, ordinal=ordinal)
        if kind == "array":
            return self._array(schema, depth=depth)
        if kind == "integer":
            return _number(schema, ordinal, integer=True)
        if kind == "number":
            return _number(schema, ordinal, integer=False)
        if kind == "boolean":
            return ordinal % 2 == 0
        if kind == "null":
            return None
        return _string(schema, ordinal)

    def _object(self, schema: Mapping[str, Any], *, depth: int, ordinal: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = [name for name in schema.get("required") or [] if isinstance(name, str)]
        names = list(properties) if depth < _MAX_DEPTH else []
        names += [name for name in required if name not in names]
        out: dict[str, Any] = {}
        for name in names:
            out[name] = self.generate(properties.get(name, {}), depth=depth + 1, ordinal=ordinal)
        return out

    def _array(self, schema: Mapping[str, Any], *, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        minimum = int(schema.get("minItems", 0))
        maximum = schema.get("maxItems")
        count = max(minimum, len(prefix), 1 if depth < _MAX_DEPTH else 0)
        if isinstance(maximum, int):
            count = min(count, maximum)
        if items is False:
            count = min(count, len(prefix))
        out: list[Any] = []
        for position in range(count):
            item_schema = prefix[position] if position < len(prefix) else items
            # Distinct ordinals keep items distinct when uniqueItems is set.
            out.append(self.generate(item_schema, depth=depth + 1, ordinal=position))
        return out


def _schema_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        return str(non_null[0]) if non_null else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if "minimum" in schema or "maximum" in schema:
        return "number"
    return "string"


def _pick_branch(options: list[Any], generator: _Generator) -> Any:
    for option in options:
        target = option
        if isinstance(option, Mapping) and "$ref" in option:
            target = generator.resolve(str(option["$ref"]))
        if not (isinstance(target, Mapping) and target.get("type") == "null"):
            return option
    return options[0]


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str, step: float) -> float | None:
    value = schema.get(exclusive)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value + step if inclusive == "minimum" else value - step
    value = schema.get(inclusive)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _number(schema: Mapping[str, Any], ordinal: int, *, integer: bool) -> int | float:
    step = 1.0 if integer else 0.5
    low = _bound(schema, "minimum", "exclusiveMinimum", step)
    high = _bound(schema, "maximum", "exclusiveMaximum", step)
    if integer:
        low = None if low is None else float(math.ceil(low))
        high = None if high is None else float(math.floor(high))
    # Walk away from whichever bound exists, so items of a unique array stay distinct.
    if low is not None:
        value = low + ordinal * step
    elif high is not None:
        value = min(0.0, high) - ordinal * step
    else:
        value = float(ordinal)
    if high is not None and value > high:
        value = high
    multiple = schema.get("multipleOf")
    if isinstance(multiple, (int, float)) and not isinstance(multiple, bool) and multiple > 0:
        value = multiple * math.ceil(value / multiple)
        if high is not None and value > high:
            value = multiple * math.floor(high / multiple)
    return int(value) if integer else float(value)


def _string(schema: Mapping[str, Any], ordinal: int) -> str:
    text = _SAMPLE_STRING if not ordinal else f"{_SAMPLE_STRING}{ordinal}"
    minimum = schema.get("minLength")
    maximum = schema.get("maxLength")
    if isinstance(minimum, int) and len(text) < minimum:
        text += "x" * (minimum - len(text))
    if isinstance(maximum, int) and len(text) > maximum:
        text = text[:maximum]
    return text
