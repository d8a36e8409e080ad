"""What a mapped row becomes: a JSON-able record of its result, and output columns picked from it.

A *record* holds everything a row produced (kept whole in the run journal, so a different
``--select`` never needs a new request)::

    content, parsed, tool_calls, finish_reason      chat steps
    retrieved                                       chat steps with retrieve
    embedding, embeddings                           embedding steps
    flagged, results                                moderation steps
    usage, cost, cached, latency_ms, attempts, response
    error, error_type, status_code, error_code      failed rows (None otherwise)

Output columns are paths into it (``content``, ``parsed.sentiment``, ``usage.total_tokens``,
``response.choices[0].finish_reason``). A dict value is flattened into ``path.key`` columns, or
kept nested; formats with a fixed header (CSV, Parquet) flatten only keys known in advance (a
JSON Schema's properties, usage counters) and hold other containers as JSON text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from chatstep.core.result import AnyResult, EmbeddingResult, ModerationResult, StepResult
from chatstep.errors import APIError, ChatstepError, ConfigError
from chatstep.steps.definitions import ChatCompletion, Completion, Embedding, Step

__all__ = [
    "OutputShape",
    "default_select",
    "error_record",
    "resolve_path",
    "result_record",
]

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
# Parquet column types of the record's scalar fields (others are inferred).
_COLUMN_TYPES = {
    "content": "string",
    "error": "string",
    "error_type": "string",
    "error_code": "string",
    "finish_reason": "string",
    "cost": "float",
    "latency_ms": "float",
    "attempts": "int",
    "status_code": "int",
}


def _common(result: AnyResult) -> dict[str, Any]:
    return {
        "usage": result.usage or None,
        "cost": result.cost,
        "cost_breakdown": result.cost_breakdown.to_dict() if result.cost_breakdown else None,
        "usage_estimated": result.usage_estimated,
        "cached": result.cached,
        "latency_ms": result.latency_ms,
        "attempts": result.attempts,
        "response": result.response,
    }


def _chat_fields(result: StepResult) -> dict[str, Any]:
    try:
        calls: list[dict[str, Any]] | None = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in result.tool_calls
        ] or None
    except ChatstepError:
        calls = None  # arguments that do not parse: still readable in ``response``
    fields = {
        "content": result.content,
        "parsed": result.parsed,
        "tool_calls": calls,
        "finish_reason": result.finish_reason,
    }
    if result.retrieved is not None:  # a step with retrieve: the chunks its templates saw
        fields["retrieved"] = result.retrieved
    return fields


def result_record(result: AnyResult) -> dict[str, Any]:
    """The record of a finished row."""
    record: dict[str, Any] = {}
    if isinstance(result, StepResult):
        record.update(_chat_fields(result))
    elif isinstance(result, EmbeddingResult):
        vectors = result.vectors
        record["embedding"] = vectors[0] if vectors else None
        record["embeddings"] = vectors
    elif isinstance(result, ModerationResult):
        record["flagged"] = result.flagged
        record["results"] = result.results
    record.update(_common(result))
    record.update(error=None, error_type=None, status_code=None, error_code=None)
    return record


def error_record(error: BaseException) -> dict[str, Any]:
    """The record of a row that failed for good (what was received is kept, if anything)."""
    record: dict[str, Any] = {}
    partial = getattr(error, "result", None)  # an OutputError's answer, a cut stream's part
    if isinstance(partial, StepResult | EmbeddingResult | ModerationResult):
        record.update(result_record(partial))
    message = str(error) or type(error).__name__
    record["error"] = f"{type(error).__name__}: {message}"
    record["error_type"] = type(error).__name__
    record["status_code"] = error.status_code if isinstance(error, APIError) else None
    record["error_code"] = error.code if isinstance(error, APIError) else None
    return record


def resolve_path(record: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` (``a.b[0].c``) in a record, or None when any part is missing."""
    value: Any = record
    for key, index in _PATH_PART.findall(path):
        if key:
            value = value.get(key) if isinstance(value, Mapping) else None
        else:
            i = int(index)
            value = value[i] if isinstance(value, list) and i < len(value) else None
        if value is None:
            return None
    return value


#: The top-level names a row's record has (a ``--select`` path starts with one of them).
SELECTABLE = (
    "attempts",
    "cached",
    "content",
    "cost",
    "cost_breakdown",
    "embedding",
    "embeddings",
    "error",
    "error_code",
    "error_type",
    "finish_reason",
    "flagged",
    "latency_ms",
    "parsed",
    "response",
    "results",
    "retrieved",
    "status_code",
    "tool_calls",
    "usage",
    "usage_estimated",
)


def _check_path(path: str) -> str:
    text = path.strip()
    parts = _PATH_PART.findall(text)
    rebuilt = "".join(f".{k}" if k else f"[{i}]" for k, i in parts)
    if not text or rebuilt.lstrip(".") != text:
        raise ConfigError(
            "--select",
            f"{path!r} is not a path",
            "write field names joined by dots, with [n] for list items: parsed.label, "
            "response.choices[0].message.content",
        )
    # A typo would otherwise give every row an empty column, silently.
    if parts[0][0] not in SELECTABLE:
        raise ConfigError(
            "--select",
            f"{path!r} does not start with an output a row has",
            "start with one of: " + ", ".join(SELECTABLE),
        )
    return text


def default_select(step: Step) -> list[str]:
    """The outputs a step's rows get when none are selected."""
    if isinstance(step, ChatCompletion):
        fmt = step.response_format
        picked = ["parsed"] if fmt is not None and fmt.type != "text" else ["content"]
        if step.tools or step.functions:
            picked.append("tool_calls")
        return [*picked, "cost"]
    if isinstance(step, Embedding):
        return ["embedding", "cost"]
    if isinstance(step, Completion):
        return ["content", "cost"]
    return ["flagged", "cost"]


def _schema_columns(schema: Any, prefix: str, depth: int = 0) -> list[str] | None:
    """``prefix.key`` for each property of an object schema (nested objects recursively)."""
    if not isinstance(schema, Mapping) or depth > 4:
        return None
    props = schema.get("properties")
    if not isinstance(props, Mapping) or not props:
        return None
    out: list[str] = []
    for key, sub in props.items():
        nested = _schema_columns(sub, f"{prefix}.{key}", depth + 1)
        out.extend(nested if nested is not None else [f"{prefix}.{key}"])
    return out


def _known_columns(step: Step, path: str) -> list[str] | None:
    """Sub-columns of ``path`` known before any row arrives (for fixed-header formats)."""
    if path == "usage":
        return [f"usage.{k}" for k in _USAGE_KEYS]
    if path == "parsed" and isinstance(step, ChatCompletion):
        fmt = step.response_format
        if fmt is not None and fmt.json_schema is not None:
            return _schema_columns(fmt.json_schema.schema_, "parsed")
    return None


def _flatten_into(out: dict[str, Any], name: str, value: Any) -> None:
    if isinstance(value, Mapping) and value:
        for key, sub in value.items():
            _flatten_into(out, f"{name}.{key}", sub)
    else:
        out[name] = value


def _as_cell(value: Any) -> Any:
    """Containers as JSON text (for fixed-header formats); lists of scalars stay lists."""
    if isinstance(value, Mapping) or (
        isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value)
    ):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


class OutputShape:
    """Turns (input row, record) into an output row: the input's columns, then the outputs.

    ``fixed_columns`` (CSV, Parquet) gives every row the same columns; otherwise dict values
    flatten to whatever keys they have (``flatten``) or stay nested.
    """

    def __init__(
        self,
        step: Step,
        select: Sequence[str] | None = None,
        *,
        flatten: bool = False,
        fixed_columns: bool = False,
        prefix: str = "",
    ) -> None:
        paths = [_check_path(p) for p in select] if select else default_select(step)
        if "error" not in paths:
            paths.append("error")  # a failed row always says why
        self.paths = list(dict.fromkeys(paths))
        self.flatten = flatten or fixed_columns
        self.fixed = fixed_columns
        self.prefix = prefix
        self._known = {p: _known_columns(step, p) for p in self.paths}
        self._checked = False

    @property
    def column_types(self) -> dict[str, str]:
        """Parquet type hints of the output columns."""
        return {self.prefix + p: t for p, t in _COLUMN_TYPES.items() if p in self.paths}

    def _check_collisions(self, row: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        clash = [name for name in outputs if name in row]
        if clash:
            raise ConfigError(
                "--select",
                f"the output column {clash[0]!r} has the name of an input column",
                "add --prefix (e.g. --prefix out_) to name the output columns apart",
            )

    def outputs(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The output columns of one record."""
        out: dict[str, Any] = {}
        for path in self.paths:
            name = self.prefix + path
            if self.fixed:
                known = self._known[path]
                if known is not None:
                    for column in known:
                        out[self.prefix + column] = _as_cell(resolve_path(record, column))
                else:
                    out[name] = _as_cell(resolve_path(record, path))
            elif self.flatten:
                _flatten_into(out, name, resolve_path(record, path))
            else:
                out[name] = resolve_path(record, path)
        return out

    def row(self, row: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
        """The output row: ``row``'s columns, then the outputs."""
        outputs = self.outputs(record)
        if not self._checked:
            self._checked = True
            self._check_collisions(row, outputs)
        return {**row, **outputs}
