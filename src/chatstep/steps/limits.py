"""Bounds on step files and free-form step values, checked before pydantic sees them.

A step file is untrusted input: it may be invalid UTF-8, nested thousands deep, a YAML alias
bomb (600 bytes expanding to gigabytes), or carry strings that cannot be sent (lone surrogates).
Each is refused with a :class:`~chatstep.errors.ConfigError` naming the field, never a traceback
or a hang.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from chatstep.errors import ConfigError

__all__ = [
    "MAX_STEP_DEPTH",
    "MAX_STEP_FILE_BYTES",
    "MAX_STEP_NODES",
    "check_step_data",
    "load_yaml",
]

MAX_STEP_FILE_BYTES = 4 * 1024 * 1024
"""Largest step file read (bytes)."""
MAX_STEP_DEPTH = 64
"""Deepest nesting of mappings and lists in a step (free-form fields such as extra_body too)."""
MAX_STEP_NODES = 100_000
"""Most values in a step, counted after YAML aliases are expanded (so alias bombs are refused)."""

_DEPTH_FIX = f"steps nest at most {MAX_STEP_DEPTH} levels; flatten the value"
_NODES_FIX = (
    f"a step holds at most {MAX_STEP_NODES:,} values (YAML aliases counted expanded); "
    "move bulk data into inputs"
)


def _key_path(field: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{field}.{key}" if field else key
    return f"{field}[{key!r}]"


def check_step_data(data: Any, field: str = "") -> None:
    """Refuse values too deep, too many, or holding strings that cannot be sent as UTF-8.

    Iterative (no recursion), so a value nested 100,000 deep is refused, not a RecursionError;
    a cyclic structure is refused by the depth bound.
    """
    count = 0
    stack: list[tuple[Any, str, int]] = [(data, field, 0)]
    while stack:
        value, path, depth = stack.pop()
        count += 1
        if count > MAX_STEP_NODES:
            raise ConfigError(field, f"has more than {MAX_STEP_NODES:,} values", _NODES_FIX)
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, (Mapping, list, tuple)):
            if depth >= MAX_STEP_DEPTH:
                shown = path if len(path) <= 60 else path[:60] + "..."
                raise ConfigError(shown, f"is nested more than {MAX_STEP_DEPTH} levels", _DEPTH_FIX)
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if isinstance(key, str):
                        _check_text(key, path)
                    stack.append((item, _key_path(path, key), depth + 1))
            else:
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_text(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            path,
            f"holds a lone surrogate ({value[exc.start]!r} at character {exc.start}), "
            "which cannot be sent as UTF-8",
            "remove it, or write the character as a proper pair",
        ) from None


class _StepLoader(yaml.SafeLoader):
    """A SafeLoader whose documents are measured (aliases expanded) before being built."""


def load_yaml(text: str) -> Any:
    """The value of one YAML document, refusing alias bombs and documents nested too deep.

    Raises ``yaml.YAMLError`` for invalid YAML and :class:`ConfigError` for a document over
    the bounds.
    """
    loader = _StepLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_node(root: yaml.Node) -> None:
    """Count the nodes of a composed document as if its aliases were expanded, and its depth."""
    sizes: dict[int, int] = {}
    # Post-order walk without recursion; an alias is the same node object reached twice.
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        if id(node) in sizes and not done:
            continue
        children = _children(node)
        if not done:
            if depth >= MAX_STEP_DEPTH and children:
                raise ConfigError("", f"is nested more than {MAX_STEP_DEPTH} levels", _DEPTH_FIX)
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)
            continue
        size = 1 + sum(sizes.get(id(child), 1) for child in children)
        if size > MAX_STEP_NODES:
            raise ConfigError("", f"has more than {MAX_STEP_NODES:,} values", _NODES_FIX)
        sizes[id(node)] = size


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
