"""Batch files: parsing a Batch API input file, and writing answers as output lines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatstep.testing.wire import Outcome

__all__ = ["BatchLine", "expired_entry", "line_entry", "parse_lines", "usage_of"]

JSON = dict[str, Any]
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


@dataclass
class BatchLine:
    """One request line of an input file."""

    number: int
    """1-based line number in the input file."""
    custom_id: str
    url: str
    body: Any


def parse_lines(content: bytes, endpoint: str) -> tuple[list[BatchLine], list[JSON]]:
    """The input file's request lines, and the validation errors that fail the batch."""
    lines: list[BatchLine] = []
    errors: list[JSON] = []
    seen: set[str] = set()
    models: set[str] = set()

    def error(code: str, message: str, number: int, param: str | None = None) -> None:
        errors.append({"code": code, "message": message, "param": param, "line": number})

    for number, raw in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            error("invalid_json_line", f"Line {number} is not valid JSON.", number)
            continue
        if not isinstance(entry, dict):
            error("invalid_json_line", f"Line {number} is not a JSON object.", number)
            continue
        missing = [key for key in ("custom_id", "method", "url", "body") if key not in entry]
        if missing:
            error(
                "missing_required_parameter",
                f"Line {number} has no '{missing[0]}'.",
                number,
                missing[0],
            )
            continue
        custom_id = str(entry["custom_id"])
        if custom_id in seen:
            error(
                "duplicate_custom_id",
                f"Line {number} repeats custom_id '{custom_id}'.",
                number,
                "custom_id",
            )
            continue
        seen.add(custom_id)
        if entry["method"] != "POST":
            error("invalid_method", f"Line {number}: the method must be POST.", number, "method")
            continue
        if entry["url"] != endpoint:
            error(
                "mismatched_endpoint",
                f"Line {number}: url '{entry['url']}' is not the batch's endpoint '{endpoint}'.",
                number,
                "url",
            )
            continue
        body = entry["body"]
        if isinstance(body, Mapping) and isinstance(body.get("model"), str):
            models.add(body["model"])
        lines.append(BatchLine(number, custom_id, str(entry["url"]), body))
    if len(models) > 1:
        error(
            "mismatched_model",
            f"All lines must use the same model; found {sorted(models)}.",
            1,
            "body.model",
        )
    if not lines and not errors:
        error("empty_file", "The input file has no request lines.", 1)
    return lines, errors


def line_entry(
    line: BatchLine, outcome: Outcome, request_id: str, entry_id: str
) -> tuple[bool, JSON]:
    status, body = outcome.status, outcome.body
    if outcome.drop:
        status = 500
        body = _error_body("The request was dropped before it was answered.", "server_error")
    elif outcome.raw is not None:
        try:
            body = json.loads(outcome.raw)
        except ValueError:
            status = 500
            body = _error_body("The answer to this request was not valid JSON.", "server_error")
    elif outcome.chunks is not None:
        status = 400
        body = _error_body(
            "Streaming is not supported in a batch; drop 'stream'.", "invalid_request_error"
        )
    entry = {
        "id": entry_id,
        "custom_id": line.custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }
    return 200 <= status < 300, entry


def _error_body(message: str, kind: str) -> JSON:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def expired_entry(line: BatchLine) -> JSON:
    """The error line of a request the batch expired before running."""
    return {
        "id": f"batch_req_expired_{line.number}",
        "custom_id": line.custom_id,
        "response": None,
        "error": {"code": "batch_expired", "message": _EXPIRED_MESSAGE},
    }


def usage_of(outputs: list[JSON]) -> JSON:
    prompt = completion = 0
    for entry in outputs:
        usage = ((entry.get("response") or {}).get("body") or {}).get("usage") or {}
        prompt += int(usage.get("prompt_tokens") or 0)
        completion += int(usage.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
