"""Reading and writing datasets as streams of rows: JSON Lines, CSV and Parquet.

Rows are dicts, read and written one at a time (Parquet in batches), so a dataset never has to
fit in memory. Parquet needs ``pyarrow`` (``pip install 'chatstep[parquet]'``).

Writers write to ``<output>.partial`` and rename it over the output when :meth:`RowWriter.commit`
is called, so an output file is never half-written: after a crash it is either the previous
complete file or absent.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from chatstep.errors import BackendUnavailableError, ConfigError

__all__ = [
    "FORMATS",
    "DatasetFormat",
    "RowWriter",
    "count_rows",
    "dataset_format",
    "open_writer",
    "read_rows",
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


def _open_text(path: Path, option: str) -> IO[str]:
    if not path.is_file():
        raise ConfigError(option, f"file {str(path)!r} does not exist")
    # utf-8-sig drops the byte-order mark spreadsheet programs put at the start of a CSV.
    return path.open("r", encoding="utf-8-sig", newline="")


def _read_jsonl(path: Path, option: str) -> Iterator[dict[str, Any]]:
    with _open_text(path, option) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    option, f"{path} line {number}: not valid JSON ({exc.msg})"
                ) from None
            if not isinstance(value, dict):
                raise ConfigError(
                    option,
                    f"{path} line {number}: a row must be a JSON object, "
                    f"not {type(value).__name__}",
                )
            yield value


def _read_csv(path: Path, option: str) -> Iterator[dict[str, Any]]:
    with _open_text(path, option) as handle:
        reader = csv.DictReader(handle)
        names = reader.fieldnames or []
        blank = [i for i, name in enumerate(names) if not name.strip()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if blank or dupes:
            problem = f"column {blank[0] + 1} has no name" if blank else f"repeated: {dupes}"
            raise ConfigError(option, f"{path}: the header row is invalid ({problem})")
        for row in reader:
            if None in row:
                raise ConfigError(
                    option,
                    f"{path} line {reader.line_num}: more values than header columns",
                )
            yield dict(row)


def _read_parquet(path: Path, option: str) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(option, f"file {str(path)!r} does not exist")
    pq = _pyarrow_parquet()
    source = pq.ParquetFile(path)
    for batch in source.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        yield from batch.to_pylist()


def read_rows(
    path: str | Path, format: str | None = None, *, option: str = "--rows"
) -> Iterator[dict[str, Any]]:
    """The rows of a dataset file, one dict at a time."""
    kind = dataset_format(path, format, option=option)
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
    return readers[kind](Path(path), option)


def count_rows(path: str | Path, format: str | None = None) -> int:
    """How many rows a dataset file holds (Parquet from its metadata; others by reading)."""
    kind = dataset_format(path, format)
    if kind == "parquet":
        return int(_pyarrow_parquet().ParquetFile(path).metadata.num_rows)
    if kind == "jsonl":
        with Path(path).open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    return sum(1 for _ in read_rows(path, kind))


class RowWriter(Protocol):
    """Writes rows to a file; the file appears only on :meth:`commit`."""

    path: Path

    def write(self, row: Mapping[str, Any]) -> None: ...

    def commit(self) -> None:
        """Finish the file and move it into place."""
        ...

    def abort(self) -> None:
        """Drop the unfinished file."""
        ...


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class _TextWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._partial = _partial_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = self._partial.open("w", encoding="utf-8", newline="")

    def commit(self) -> None:
        self._handle.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        self._handle.close()
        self._partial.unlink(missing_ok=True)


class _JsonlWriter(_TextWriter):
    def write(self, row: Mapping[str, Any]) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def csv_cell(value: Any) -> str:
    """A value as CSV text: None empty, booleans ``true``/``false``, containers as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False, default=str)


class _CsvWriter(_TextWriter):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._writer = csv.writer(self._handle)
        self._columns: list[str] | None = None
        self._known: set[str] = set()
        self._rows = 0

    def write(self, row: Mapping[str, Any]) -> None:
        self._rows += 1
        if self._columns is None:
            self._columns = list(row)
            self._known = set(self._columns)
            self._writer.writerow(self._columns)
        extra = [k for k in row if k not in self._known]
        if extra:
            raise ConfigError(
                "--output",
                f"{self.path}: row {self._rows} has column {extra[0]!r}, which the CSV header "
                f"({', '.join(self._columns)}) does not have",
                "write JSON Lines (.jsonl) for rows whose columns vary",
            )
        self._writer.writerow([csv_cell(row.get(name)) for name in self._columns])


class _ParquetWriter:
    def __init__(self, path: Path, types: Mapping[str, str] | None) -> None:
        self._pq = _pyarrow_parquet()
        self._pa: Any = importlib.import_module("pyarrow")
        self.path = path
        self._partial = _partial_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._types = dict(types or {})
        self._batch: list[Mapping[str, Any]] = []
        self._writer: Any = None
        self._schema: Any = None

    def write(self, row: Mapping[str, Any]) -> None:
        self._batch.append(row)
        if len(self._batch) >= PARQUET_BATCH_ROWS:
            self._flush()

    def _first_schema(self, rows: list[Mapping[str, Any]]) -> Any:
        pa = self._pa
        inferred = pa.Table.from_pylist(rows).schema
        hinted = {"string": pa.string(), "float": pa.float64(), "int": pa.int64()}
        fields = []
        for f in inferred:
            kind = self._types.get(f.name)
            if kind in hinted:
                fields.append(pa.field(f.name, hinted[kind]))
            elif pa.types.is_null(f.type):
                # A column empty in the first batch: text is the type most values can take.
                fields.append(pa.field(f.name, pa.string()))
            else:
                fields.append(f)
        return pa.schema(fields)

    def _table(self, rows: list[Mapping[str, Any]]) -> Any:
        pa = self._pa
        names = set(self._schema.names)
        for number, row in enumerate(rows):
            extra = [k for k in row if k not in names]
            if extra:
                raise ConfigError(
                    "--output",
                    f"{self.path}: a row has column {extra[0]!r}, which earlier rows did not "
                    f"have (row {number + 1} of its batch)",
                    "write JSON Lines (.jsonl) for rows whose columns vary",
                )
        try:
            return pa.Table.from_pylist(list(rows), schema=self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            # Text columns take anything, written as text; other type clashes are real errors.
            fixed = [
                {
                    k: (
                        csv_cell(v)
                        if v is not None and pa.types.is_string(self._schema.field(k).type)
                        else v
                    )
                    for k, v in row.items()
                }
                for row in rows
            ]
            try:
                return pa.Table.from_pylist(fixed, schema=self._schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise ConfigError(
                    "--output",
                    f"{self.path}: values do not fit the column types of earlier rows ({exc})",
                    "write JSON Lines (.jsonl), or make the column's values one type",
                ) from None

    def _flush(self) -> None:
        if not self._batch:
            return
        rows, self._batch = self._batch, []
        if self._schema is None:
            self._schema = self._first_schema(rows)
            self._writer = self._pq.ParquetWriter(self._partial, self._schema)
        self._writer.write_table(self._table(rows))

    def commit(self) -> None:
        self._flush()
        if self._writer is None:
            # No rows at all: an empty file with no columns is still a valid Parquet file.
            self._schema = self._pa.schema([])
            self._writer = self._pq.ParquetWriter(self._partial, self._schema)
        self._writer.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._partial.unlink(missing_ok=True)


def open_writer(
    path: str | Path,
    format: str | None = None,
    *,
    types: Mapping[str, str] | None = None,
) -> RowWriter:
    """A writer for ``path``. A CSV header is the first row's keys; ``types`` hints Parquet
    column types (``string``, ``float``, ``int``) by name."""
    target = Path(path)
    kind = dataset_format(target, format, option="--output")
    if kind == "jsonl":
        return _JsonlWriter(target)
    if kind == "csv":
        return _CsvWriter(target)
    return _ParquetWriter(target, types)
