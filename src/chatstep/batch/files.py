"""Batch files: input rows in, Batch request lines out (split at the API's limits), results joined.

A Batch input line is ``{"custom_id", "method": "POST", "url": "/v1/...", "body"}``; an output or
error line is ``{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null,
"error": {"code", "message"} | null}``. Output lines come back in any order, so results are
joined to the input rows by ``custom_id``: one joined row per input row, in input order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from chatstep.core.request import Request
from chatstep.core.response_check import check_response
from chatstep.core.structured_output import parse_choice_json
from chatstep.errors import (
    APIError,
    ConfigError,
    InvalidJSONError,
    OutputError,
    SchemaMismatchError,
    TruncatedOutputError,
)

__all__ = [
    "BATCH_ENDPOINTS",
    "BatchLimits",
    "JoinSummary",
    "PartFile",
    "PartWriter",
    "given_request_line",
    "join_results",
    "read_rows",
    "request_line",
]

#: Endpoints a chatstep step can run in a batch.
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/moderations", "/v1/completions")

_MB = 1024 * 1024


@dataclass(frozen=True)
class BatchLimits:
    """Where an input is split into several batches (OpenAI's limits; lower them in tests)."""

    max_requests: int = 50_000
    max_bytes: int = 200 * _MB
    max_embedding_inputs: int = 50_000
    """Embedding batches also cap the inputs summed over all requests."""

    def __post_init__(self) -> None:
        for name in ("max_requests", "max_bytes", "max_embedding_inputs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"limits.{name}", "must be at least 1")


def read_rows(source: str | Path | Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows from a .jsonl, .csv or .parquet file (read as ``chatstep map`` reads them) or an
    iterable of mappings; a malformed file is a ConfigError naming the file and line.

    A file without a suffix (Flyte's downloaded FlyteFiles, temporary files) is read as JSON
    Lines, the Batch API's own format."""
    if isinstance(source, str | Path):
        from chatstep.mapping.datasets import read_rows as read_dataset

        kind = "jsonl" if not Path(source).suffix else None
        yield from read_dataset(source, kind, option="input")
        return
    for index, row in enumerate(source):
        if not isinstance(row, Mapping):
            raise ConfigError(
                f"rows[{index}]",
                f"is a {type(row).__name__}, not a mapping",
                "give each row as a dict of the step's inputs",
            )
        yield dict(row)


def _dumps(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def request_line(custom_id: str, request: Request) -> bytes:
    """The Batch input line of a rendered request."""
    url = "/v1" + request.path
    return _dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": request.body})


def given_request_line(row: Mapping[str, Any], where: str) -> tuple[str, str, bytes]:
    """Check a ready-made Batch input line; returns (custom_id, url, the line)."""
    custom_id = row.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise ConfigError(
            f"{where}.custom_id",
            "is missing or not a string",
            "give every request line a unique custom_id, or pass a step to render rows",
        )
    url = row.get("url")
    if url not in BATCH_ENDPOINTS:
        raise ConfigError(
            f"{where}.url", f"is {url!r}", f"use one of: {', '.join(BATCH_ENDPOINTS)}"
        )
    if str(row.get("method", "POST")).upper() != "POST":
        raise ConfigError(f"{where}.method", f"is {row.get('method')!r}", "use POST")
    body = row.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise ConfigError(f"{where}.body", "must be an object with a model", "add body.model")
    line = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
    return custom_id, str(url), _dumps(line)


def embedding_inputs(body: Mapping[str, Any]) -> int:
    """How many inputs an embeddings request carries."""
    value = body.get("input")
    return len(value) if isinstance(value, list) else 1


@dataclass
class PartFile:
    """One batch's input file, being written."""

    path: Path
    first_row: int
    row_count: int = 0
    size: int = 0
    embedding_inputs: int = 0


class PartWriter:
    """Writes request lines into part files, starting a new part before a limit is crossed."""

    def __init__(self, directory: Path, limits: BatchLimits, prefix: str = "part") -> None:
        self.directory = directory
        self.limits = limits
        self.prefix = prefix
        self.parts: list[PartFile] = []
        self._file: IO[bytes] | None = None
        self._rows = 0

    def _start(self) -> PartFile:
        if self._file is not None:
            self._file.close()
        part = PartFile(self.directory / f"{self.prefix}-{len(self.parts):04d}.jsonl", self._rows)
        self.parts.append(part)
        self._file = part.path.open("wb")
        return part

    def add(self, line: bytes, inputs: int = 0) -> None:
        """Add one request line (``inputs``: its embedding inputs, for embedding batches)."""
        limits = self.limits
        if len(line) > limits.max_bytes:
            raise ConfigError(
                f"rows[{self._rows}]",
                f"renders to a request of {len(line)} bytes, over the batch file limit of "
                f"{limits.max_bytes} bytes",
                "shorten the row's inputs",
            )
        part = self.parts[-1] if self.parts else self._start()
        if part.row_count and (
            part.row_count + 1 > limits.max_requests
            or part.size + len(line) > limits.max_bytes
            or part.embedding_inputs + inputs > limits.max_embedding_inputs
        ):
            part = self._start()
        assert self._file is not None
        self._file.write(line)
        part.row_count += 1
        part.size += len(line)
        part.embedding_inputs += inputs
        self._rows += 1

    def close(self) -> list[PartFile]:
        """Finish writing; the parts, in row order."""
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.parts


# --- joining --------------------------------------------------------------------------------


@dataclass
class JoinSummary:
    """Counts and cost of a join."""

    rows: int = 0
    succeeded: int = 0
    failed: int = 0
    cost: float | None = None


def _index(files: Iterable[Path]) -> tuple[list[Path], dict[str, tuple[int, int]]]:
    """Each custom id's (file number, byte offset), scanning the files once."""
    paths = list(files)
    where: dict[str, tuple[int, int]] = {}
    for number, path in enumerate(paths):
        with path.open("rb") as handle:
            offset = 0
            for raw in handle:
                if raw.strip():
                    try:
                        custom_id = json.loads(raw).get("custom_id")
                    except (json.JSONDecodeError, AttributeError):
                        custom_id = None
                    # The first answer for an id wins (an id is answered once by the API).
                    if isinstance(custom_id, str) and custom_id not in where:
                        where[custom_id] = (number, offset)
                offset += len(raw)
    return paths, where


def _error_of(
    line: Mapping[str, Any], *, from_error_file: bool, endpoint: str
) -> dict[str, Any] | None:
    """The normalized error of an output/error line, or None when it succeeded.

    A line of the error file is a failure whatever it says; an output line succeeds only with a
    2xx status and a body that is an answer for ``endpoint`` (``/v1/chat/completions``...).
    """
    response = line.get("response") if isinstance(line.get("response"), Mapping) else None
    error = line.get("error") if isinstance(line.get("error"), Mapping) else None
    status = response.get("status_code") if response else None
    body = response.get("body") if response else None
    ok_status = isinstance(status, int) and 200 <= status < 300
    if error is None and ok_status and not from_error_file:
        problem = _answer_problem(body, endpoint)
        if problem is None:
            return None
        return problem
    out: dict[str, Any] = {"status_code": status, "code": None, "message": None, "type": None}
    detail = body.get("error") if isinstance(body, Mapping) else None
    for source in (detail, error):
        if isinstance(source, Mapping):
            for key in ("code", "message", "type"):
                if out[key] is None and source.get(key) is not None:
                    out[key] = source.get(key)
    if out["code"] is None and isinstance(status, int) and not ok_status and status > 0:
        out["code"] = f"http_{status}"
    if out["code"] is None:
        out["code"] = "batch_error" if from_error_file else "invalid_response"
    if out["message"] is None:
        out["message"] = (
            f"the batch error file lists this request (status {status})"
            if from_error_file
            else f"the request failed with status {status}"
        )
    return out


def _answer_problem(body: Any, endpoint: str) -> dict[str, Any] | None:
    """The error of a 2xx body that is not an answer (see core.response_check), or None."""
    name = endpoint.removeprefix("/v1").strip("/").replace("/", ".")
    if name not in ("chat.completions", "embeddings", "moderations", "completions"):
        return None
    try:
        check_response(name, body, f"POST {endpoint}")
    except APIError as exc:
        return {
            "status_code": exc.status_code,
            "code": exc.code or "invalid_response",
            "message": str(exc),
            "type": type(exc).__name__,
        }
    return None


def join_results(
    rows: Iterable[Mapping[str, Any]],
    custom_id: Callable[[int, Mapping[str, Any]], str],
    result_files: Iterable[Path],
    dest: Path,
    *,
    missing: Callable[[int], dict[str, Any]],
    cost: Callable[[Mapping[str, Any]], float | None],
    chat: bool,
    response_format: dict[str, Any] | None = None,
    error_files: Collection[Path] = (),
    endpoint: str = "",
) -> JoinSummary:
    """Write one joined row per input row to ``dest``, in input order.

    ``result_files`` are output and error files; any line of a file also in ``error_files`` is a
    failure. An output line succeeds only with a 2xx status and a body that passes the shape
    check of ``endpoint`` (``/v1/chat/completions``...). ``missing(index)`` is the error of a row
    no file answers; ``cost(body)`` prices one response. Each joined row holds ``index``,
    ``custom_id``, ``input``, ``ok``, ``response`` (the API's body), ``error``, ``usage``,
    ``cost`` and, for chat and legacy completions, ``content``, and ``parsed`` when
    ``response_format`` asks for JSON: the answer parsed and checked against the schema, as
    ``run`` and ``map`` do. An answer that fails that check makes the row fail (``error.code``
    ``invalid_json``, ``schema_mismatch`` or ``truncated_output``), its response kept.
    """
    paths, where = _index(result_files)
    errors_at = set(error_files)
    handles = [p.open("rb") for p in paths]
    summary = JoinSummary()
    total_cost = 0.0
    priced = False
    try:
        with dest.open("w", encoding="utf-8") as out:
            for index, row in enumerate(rows):
                cid = custom_id(index, row)
                found = where.get(cid)
                body: Any = None
                error: dict[str, Any] | None
                if found is None:
                    error = missing(index)
                else:
                    handle = handles[found[0]]
                    handle.seek(found[1])
                    line = json.loads(handle.readline())
                    error = _error_of(
                        line, from_error_file=paths[found[0]] in errors_at, endpoint=endpoint
                    )
                    response = line.get("response")
                    if error is None and isinstance(response, Mapping):
                        body = response.get("body")
                joined: dict[str, Any] = {
                    "index": index,
                    "custom_id": cid,
                    "input": dict(row),
                    "ok": error is None,
                    "response": body,
                    "error": error,
                }
                usage = body.get("usage") if isinstance(body, Mapping) else None
                joined["usage"] = usage if isinstance(usage, Mapping) else None
                row_cost = cost(body) if isinstance(body, Mapping) else None
                joined["cost"] = row_cost
                if row_cost is not None:
                    priced = True
                    total_cost += row_cost
                if chat:
                    joined["content"] = _content(body)
                if chat and response_format is not None:
                    joined["parsed"] = None
                    if error is None and isinstance(body, Mapping):
                        joined["parsed"], error = _parsed(body, response_format)
                        joined["ok"], joined["error"] = error is None, error
                summary.rows += 1
                if error is None:
                    summary.succeeded += 1
                else:
                    summary.failed += 1
                out.write(json.dumps(joined, ensure_ascii=False) + "\n")
    finally:
        for handle in handles:
            handle.close()
    summary.cost = total_cost if priced else None
    return summary


_OUTPUT_ERROR_CODES: dict[type[OutputError], str] = {
    InvalidJSONError: "invalid_json",
    SchemaMismatchError: "schema_mismatch",
    TruncatedOutputError: "truncated_output",
}


def _parsed(
    body: Mapping[str, Any], response_format: dict[str, Any]
) -> tuple[Any, dict[str, Any] | None]:
    """The first choice's validated JSON, or None and the error that stops it."""
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    try:
        return parse_choice_json(dict(choice), response_format), None
    except OutputError as exc:
        code = _OUTPUT_ERROR_CODES.get(type(exc), "invalid_output")
        return None, {"code": code, "message": str(exc)}


def _content(body: Any) -> str | None:
    if not isinstance(body, Mapping):
        return None
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if message is None:
        content = choices[0].get("text")  # a legacy /v1/completions answer
    return content if isinstance(content, str) else None
