"""Reading datasets as streams of rows: JSON Lines, CSV and Parquet.

Rows are dicts, read one at a time (Parquet in batches), so a dataset never has to fit in
memory. Parquet needs ``pyarrow`` (``pip install 'chatstep[parquet]'``). ``chatstep map``,
``chatstep batch submit`` and flow map tasks all read rows here.

Reading is strict and bounded: a malformed file is a :class:`~chatstep.errors.ConfigError`
naming the file and the line where the bad record starts, never a silently merged or padded row.

- text must be UTF-8 (a byte-order mark is dropped);
- a JSON Lines row is one JSON object of at most :data:`MAX_ROW_BYTES`, nested at most
  :data:`MAX_JSON_DEPTH` deep, with no ``NaN``/``Infinity`` (not JSON) and integers of at most
  4,300 digits (Python's limit);
- a CSV record is parsed strictly (an unclosed quote is an error, not a field that swallows the
  next rows), has exactly as many values as the header has names, and no value longer than
  :data:`MAX_CSV_FIELD_CHARS`.

Writing lives in :mod:`chatstep.mapping.writers`.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from chatstep.errors import BackendUnavailableError, ConfigError
from chatstep.mapping.writers import RowWriter, csv_cell, open_writer

__all__ = [
    "FORMATS",
    "MAX_CSV_FIELD_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_ROW_BYTES",
    "DatasetFile",
    "DatasetFormat",
    "FinishedRuns",
    "RowOrSkipped",
    "RowWriter",
    "count_rows",
    "csv_cell",
    "dataset_format",
    "open_writer",
    "parse_json_object",
    "read_rows",
    "read_rows_skipping",
    "skip_rows",
]

DatasetFormat = Literal["jsonl", "csv", "parquet"]
FORMATS: dict[str, DatasetFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PARQUET_BATCH_ROWS = 1000
#: Longest JSON Lines row read, in bytes (16 MiB).
MAX_ROW_BYTES = 16 * 1024 * 1024
#: Deepest nesting of arrays and objects in a JSON Lines row.
MAX_JSON_DEPTH = 100
#: Longest CSV value read, in characters (16 MiB; Python's csv default is 128 KiB).
MAX_CSV_FIELD_CHARS = 16 * 1024 * 1024


def dataset_format(path: str | Path, given: str | None = None, *, option: str = "path") -> str:
    """The format named by ``given`` or by the file's suffix."""
    if given is not None:
        if given not in ("jsonl", "csv", "parquet"):
            raise ConfigError(option, f"unknown format {given!r}", "use jsonl, csv or parquet")
        return given
    suffix = Path(path).suffix.lower()
    found = FORMATS.get(suffix)
    if found is None:
        raise ConfigError(
            option,
            f"{str(path)!r}: cannot tell the format from the suffix {suffix or '(none)'!r}",
            "use a .jsonl, .csv or .parquet file",
        )
    return found


def _pyarrow_parquet() -> Any:
    try:
        # Imported by name: pyarrow is an optional extra and ships no type information.
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise BackendUnavailableError(
            "Parquet needs pyarrow, which is not installed; "
            "install it with: pip install 'chatstep[parquet]'"
        ) from None
    return pq


def _open_binary(path: Path, option: str) -> IO[bytes]:
    if not path.is_file():
        raise ConfigError(option, f"file {str(path)!r} does not exist")
    try:
        return path.open("rb")
    except OSError as exc:
        raise ConfigError(option, f"{path}: cannot be read ({exc.strerror})") from None


def _lines(
    handle: IO[bytes], path: Path, option: str, *, start: int = 0
) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded strictly; a line is at most MAX_ROW_BYTES.

    ``start``: lines already read from ``handle`` (numbering goes on from there).
    """
    number = start
    while True:
        raw = handle.readline(MAX_ROW_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
            raise ConfigError(
                option,
                f"{path} line {number}: longer than {MAX_ROW_BYTES:,} bytes "
                "(chatstep's MAX_ROW_BYTES)",
                "split the row, or pass the long text as a file",
            )
        try:
            # utf-8-sig drops the byte-order mark spreadsheet programs put at the start.
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                option,
                f"{path} line {number}: not valid UTF-8 (byte {exc.start + 1} of the line)",
                "save the file as UTF-8",
            ) from None
        yield number, text


def _json_depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth - 1


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (``array``, not ``list``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {list: "an array", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (write null, or the value as a string)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999 parses to inf, which is not a JSON number either
        raise ValueError(f"{text[:40]} is too large for a number (write it as a string)")
    return value


# One decoder for every row: json.loads builds a new one per call when given options.
_DECODER = json.JSONDecoder(parse_constant=_not_json_constant, parse_float=_finite_float)


def parse_json_object(text: str, where: str, option: str) -> dict[str, Any]:
    """``text`` as one JSON object, under the rules of a JSON Lines row (module docstring).

    Raises :class:`~chatstep.errors.ConfigError` for ``option``, its message starting with
    ``where``: not JSON, not an object, nested over :data:`MAX_JSON_DEPTH`, ``NaN``/``Infinity``,
    an integer over 4,300 digits, a lone surrogate escape. The steps service reads bodies here.
    """
    return _parse_json_row(text, where, option)


def _parse_json_row(text: str, where: str, option: str) -> dict[str, Any]:
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(option, f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ConfigError(
            option, f"{where}: nested too deeply (at most {MAX_JSON_DEPTH} levels)"
        ) from None
    except ValueError as exc:  # NaN/Infinity, or an integer over Python's 4,300-digit limit
        problem = str(exc)
        if "integer string conversion" in problem:
            problem = "holds an integer of more than 4,300 digits (write it as a string)"
        raise ConfigError(option, f"{where}: {problem}") from None
    if not isinstance(value, dict):
        raise ConfigError(option, f"{where}: a row must be a JSON object, not {_json_type(value)}")
    # Counting brackets (in C) first keeps the walk off ordinary rows.
    shallow = text.count("[") + text.count("{") <= MAX_JSON_DEPTH
    if not shallow and _json_depth(value) > MAX_JSON_DEPTH:
        raise ConfigError(option, f"{where}: nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    # A \uD800-\uDFFF escape may decode to a lone surrogate, which is not text: it could be
    # neither hashed, sent nor written. Looking for the escape first keeps ordinary rows cheap.
    if "\\ud" in text.lower():
        _refuse_lone_surrogates(value, where, option)
    return value


def _refuse_lone_surrogates(value: Any, where: str, option: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        texts = [item] if isinstance(item, str) else []
        if isinstance(item, dict):
            texts = [k for k in item if isinstance(k, str)]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(
                    option,
                    f"{where}: holds a lone surrogate escape (\\uD800-\\uDFFF without its "
                    "pair), which is not text",
                    "write the character itself, or both halves of its surrogate pair",
                ) from None


def _read_jsonl(path: Path, option: str) -> Iterator[dict[str, Any]]:
    with _open_binary(path, option) as handle:
        for number, line in _lines(handle, path, option):
            if line.strip():
                yield _parse_json_row(line, f"{path} line {number}", option)


# What str.strip() removes from an ASCII line: a line of only these is blank (not a row).
_ASCII_SPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"


def _read_jsonl_skipping(path: Path, option: str, skip: FinishedRuns) -> Iterator[RowOrSkipped]:
    """:func:`_read_jsonl`, the finished rows' lines read and counted but neither decoded nor
    parsed: a run of them comes as its length."""
    with _open_binary(path, option) as handle:
        index, number = 0, 0
        while True:
            run = skip.run_from(index)
            if not run:
                row = _next_jsonl_row(handle, path, option, number)
                if row is None:
                    return
                number, value = row
                index += 1
                yield value
                continue
            skipped, number = _skip_jsonl_rows(handle, run, number, path, option)
            left = run - skipped
            if run - left:
                yield run - left
            if left:
                return
            index += run


# Blocks of finished rows are skipped by counting line ends in C; a block holding a blank or
# non-ASCII line goes line by line (blank lines are not rows, so they must not be counted).
_SKIP_BLOCK = 1 << 20
_BLANK_LINE = re.compile(rb"(?m)^[ \t\r\x0b\x0c\x1c-\x1f]*$")


def _skip_jsonl_rows(
    handle: IO[bytes], rows: int, number: int, path: Path, option: str
) -> tuple[int, int]:
    """Read past ``rows`` rows after line ``number``: (rows skipped, line number now)."""
    skipped = 0
    while skipped < rows:
        start = handle.tell()
        block = handle.read(_SKIP_BLOCK)
        if not block:
            break
        end = block.rfind(b"\n")
        if end >= 0 and block.isascii() and not _BLANK_LINE.search(block, 0, end):
            lines = block.count(b"\n", 0, end + 1)
            need = rows - skipped
            if lines > need:
                end = -1
                for _ in range(need):
                    end = block.index(b"\n", end + 1)
                lines = need
            handle.seek(start + end + 1)
            skipped += lines
            number += lines
            continue
        handle.seek(start)  # line by line, up to the end of this block at most
        while skipped < rows and handle.tell() < start + len(block):
            raw = handle.readline(MAX_ROW_BYTES + 1)
            if not raw:
                break
            number += 1
            if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
                raise ConfigError(
                    option,
                    f"{path} line {number}: longer than {MAX_ROW_BYTES:,} bytes "
                    "(chatstep's MAX_ROW_BYTES)",
                    "split the row, or pass the long text as a file",
                )
            if raw.isascii():
                blank = not raw.strip(_ASCII_SPACE)
            else:  # the reading pass decodes it (and says what is wrong with it)
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8", "replace")
                blank = not text.strip()
            if not blank:
                skipped += 1
    return skipped, number


def _next_jsonl_row(
    handle: IO[bytes], path: Path, option: str, number: int
) -> tuple[int, dict[str, Any]] | None:
    """(line number, row) of the next row after line ``number``, or None at the end."""
    for offset, line in _lines(handle, path, option, start=number):
        if line.strip():
            return offset, _parse_json_row(line, f"{path} line {offset}", option)
    return None


def _read_csv(path: Path, option: str) -> Iterator[dict[str, Any]]:
    # The limit is process-wide in Python's csv module; chatstep sets its documented bound.
    csv.field_size_limit(MAX_CSV_FIELD_CHARS)
    with _open_binary(path, option) as handle:
        lines = _lines(handle, path, option)
        where = {"line": 0}

        def texts() -> Iterator[str]:
            for number, text in lines:
                where["line"] = number
                yield text

        reader = csv.reader(texts(), strict=True)
        names: list[str] | None = None
        start = 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                problem = str(exc)
                if "field larger than field limit" in problem:
                    problem = (
                        f"a value is longer than {MAX_CSV_FIELD_CHARS:,} characters "
                        "(chatstep's MAX_CSV_FIELD_CHARS)"
                    )
                elif "unexpected end of data" in problem:
                    problem = "a quoted value is never closed (an unmatched '\"')"
                raise ConfigError(
                    option,
                    f"{path} line {start}: the record starting here is not valid CSV ({problem})",
                    "quote values that hold commas, quotes or line breaks, and double the "
                    'quotes inside them ("")',
                ) from None
            here, start = start, where["line"] + 1
            if not record:
                continue  # a blank line
            if names is None:
                names = record
                blank = [i for i, name in enumerate(names) if not name.strip()]
                dupes = sorted({n for n in names if names.count(n) > 1})
                if blank or dupes:
                    problem = (
                        f"column {blank[0] + 1} has no name" if blank else f"repeated: {dupes}"
                    )
                    raise ConfigError(option, f"{path}: the header row is invalid ({problem})")
                continue
            if len(record) != len(names):
                more = "more" if len(record) > len(names) else "fewer"
                raise ConfigError(
                    option,
                    f"{path} line {here}: {len(record)} values, {more} than the header's "
                    f"{len(names)} columns",
                    "give every row one value per column (an empty value is ,,)",
                )
            yield dict(zip(names, record, strict=True))


def _read_parquet(path: Path, option: str) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(option, f"file {str(path)!r} does not exist")
    pq = _pyarrow_parquet()
    pa: Any = importlib.import_module("pyarrow")
    rows = 0
    try:
        source = pq.ParquetFile(path)
        for batch in source.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            rows += batch.num_rows
            yield from batch.to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(
            option,
            f"{path}: not a readable Parquet file (after {rows} rows: {exc})",
            "write it again, or give a .jsonl or .csv file",
        ) from None


def read_rows(
    path: str | Path, format: str | None = None, *, option: str = "--rows"
) -> Iterator[dict[str, Any]]:
    """The rows of a dataset file, one dict at a time.

    Raises :class:`~chatstep.errors.ConfigError` (naming the file and line) for a missing or
    malformed file, and :class:`~chatstep.errors.BackendUnavailableError` for Parquet without
    pyarrow.
    """
    kind = dataset_format(path, format, option=option)
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
    return readers[kind](Path(path), option)


@dataclass(frozen=True)
class DatasetFile:
    """A dataset file as an iterable of rows: each iteration reads the file again."""

    path: Path
    format: str | None = None
    option: str = "--rows"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return read_rows(self.path, self.format, option=self.option)

    def skipping(self, skip: FinishedRuns) -> Iterator[RowOrSkipped]:
        """The rows, runs of those ``skip`` names as their lengths (:func:`read_rows_skipping`)."""
        return read_rows_skipping(self.path, skip, self.format, option=self.option)


class FinishedRuns(Protocol):
    """Which rows a resumed run skips, asked about rising indexes."""

    def run_from(self, index: int) -> int:
        """How many consecutive rows from ``index`` on are skipped (0: ``index`` is not)."""
        ...


RowOrSkipped = dict[str, Any] | int
"""A row, or how many finished rows were skipped in a row."""


def read_rows_skipping(
    path: str | Path, skip: FinishedRuns, format: str | None = None, *, option: str = "--rows"
) -> Iterator[RowOrSkipped]:
    """:func:`read_rows`, each run of rows ``skip`` names replaced by its length.

    JSON Lines rows in ``skip`` are neither decoded nor parsed (a resumed run skips its
    finished rows at the cost of reading their lines); other formats are read whole.
    """
    kind = dataset_format(path, format, option=option)
    if kind == "jsonl":
        return _read_jsonl_skipping(Path(path), option, skip)
    return skip_rows(read_rows(path, kind, option=option), skip)


def skip_rows(rows: Iterable[dict[str, Any]], skip: FinishedRuns) -> Iterator[RowOrSkipped]:
    """``rows``, 1 in place of each row ``skip`` names."""
    for index, row in enumerate(rows):
        yield 1 if skip.run_from(index) else row


def count_rows(path: str | Path, format: str | None = None) -> int:
    """How many rows a dataset file holds (Parquet from its metadata; others by reading)."""
    kind = dataset_format(path, format)
    if kind == "parquet":
        try:
            return int(_pyarrow_parquet().ParquetFile(path).metadata.num_rows)
        except (ValueError, OSError):
            return sum(1 for _ in read_rows(path, kind))  # raises the ConfigError
    if kind == "jsonl":
        with Path(path).open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    return sum(1 for _ in read_rows(path, kind))
