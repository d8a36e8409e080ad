"""Checking JSON output: JSON mode and Structured Outputs, validated against the step's schema.

Content that is exactly one Markdown code fence (```` ```json ... ``` ```` or a bare ```` ``` ````),
as Ollama and local models often send, parses as the JSON inside it; prose around a fence is still
an :class:`~chatstep.errors.InvalidJSONError`. ``.response`` keeps the content as it came.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from chatstep.core.result import StepResult
from chatstep.errors import InvalidJSONError, SchemaMismatchError, TruncatedOutputError

__all__ = ["parse_choice_json", "parse_json_output", "unfence", "wants_json"]

# One fence around the whole content: ```lang? NEWLINE body NEWLINE? ```
_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_+-]*[ \t]*\r?\n(.*?)\r?\n?```\s*\Z", re.DOTALL)


def unfence(content: str) -> str:
    """The text inside ``content`` when it is exactly one Markdown code fence, else ``content``."""
    match = _FENCE.match(content)
    if match is None or "```" in match.group(1):
        return content
    return match.group(1)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def wants_json(response_format: Mapping[str, Any] | None) -> bool:
    """True when a request's ``response_format`` asks for JSON output."""
    return response_format is not None and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


def parse_choice_json(choice: dict[str, Any], response_format: dict[str, Any]) -> Any:
    """The validated JSON of a first choice (a batch row's answer); raises an OutputError."""
    return _parse_choice(None, 0, choice, response_format)


def _parse_choice(
    result: StepResult | None, index: int, choice: dict[str, Any], fmt: dict[str, Any]
) -> Any:
    message = choice.get("message") or {}
    content = message.get("content")
    where = f"choices[{index}].message.content"
    if message.get("refusal"):
        raise SchemaMismatchError(
            f"{where}: the model refused: {message['refusal']}", result=result
        )
    if choice.get("finish_reason") == "length":
        raise TruncatedOutputError(
            f"{where}: the JSON output was cut off at the token limit (finish_reason 'length')",
            result=result,
        )
    if not isinstance(content, str):
        if message.get("tool_calls") or message.get("function_call"):
            return None  # the model called a tool instead of answering; nothing to parse
        raise InvalidJSONError(
            f"{where}: JSON output was asked for but there is no content", result=result
        )
    try:
        value = json.loads(unfence(content))
    except json.JSONDecodeError as exc:
        raise InvalidJSONError(
            f"{where}: not valid JSON ({exc.msg} at position {exc.pos}): {content[:200]!r}",
            result=result,
        ) from None
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        validator = _validator(json.dumps(schema, sort_keys=True))
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            path = "".join(f"[{p!r}]" for p in first.absolute_path) or "(root)"
            raise SchemaMismatchError(
                f"{where}: JSON does not match the schema at {path}: {first.message}",
                result=result,
            )
    return value


def parse_json_output(result: StepResult, response_format: dict[str, Any] | None) -> list[Any]:
    """Parsed JSON of every choice when the request asked for JSON output, else []."""
    if response_format is None or not wants_json(response_format):
        return []
    choices = result.response.get("choices") or []
    return [_parse_choice(result, i, c, response_format) for i, c in enumerate(choices)]
