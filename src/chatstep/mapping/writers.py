"""Writing rows to dataset files: JSON Lines, CSV and Parquet.

A writer writes to a temporary file of its own beside the output
(``<output>.<random>.partial``, created when the writer opens, so an unwritable directory
fails before the first request) and renames it over the output on :meth:`RowWriter.commit`:
an output is never half-written, and no other run ever touches another's temporary file. An
OS failure (read-only directory, full disk, file size limit) is a
:class:`~chatstep.errors.StorageError` naming the path; dropping the temporary file after a
failure is best-effort and never hides the failure.

JSON Lines are strict JSON: a float that is ``NaN`` or infinite is written as ``null``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import importlib
import json
import math
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Protocol

from chatstep.errors import ConfigError, StorageError
from chatstep.storage.files import storage_error

__all__ = ["RowWriter", "csv_cell", "finite_json", "open_writer", "stale_partials"]

PARQUET_BATCH_ROWS = 1000
_PARTIAL_SUFFIX = ".partial"


class RowWriter(Protocol):
    """Writes rows to a file; the file appears only on :meth:`commit`."""

    path: Path

    def write(self, row: Mapping[str, Any]) -> None:
        """Add a row (raises :class:`StorageError` when the disk refuses it)."""
        ...

    def commit(self) -> None:
        """Finish the file and move it into place (raises :class:`StorageError`)."""
        ...

    def abort(self) -> None:
        """Drop the unfinished file; never raises."""
        ...


def stale_partials(path: str | Path) -> list[Path]:
    """Temporary files of earlier runs writing ``path`` (delete them only under its lock)."""
    target = Path(path)
    return sorted(target.parent.glob(f"{_glob_escape(target.name)}.*{_PARTIAL_SUFFIX}"))


def _glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _non_finite_to_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _non_finite_to_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_non_finite_to_null(v) for v in value]
    return value


def finite_json(value: Any) -> str:
    """Strict JSON text of ``value``: ``NaN`` and infinities become ``null``."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_non_finite_to_null(value), ensure_ascii=False, default=str)


def _create_unique(path: Path) -> tuple[Path, int]:
    """Create ``<path>.<pid>-<random>.partial`` (mode 0666 less the umask, like ``open``)."""
    for _ in range(100):
        temp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{_PARTIAL_SUFFIX}")
        try:
            return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


class _Partial:
    """This writer's own temporary file beside ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_dir():
            raise ConfigError("--output", f"{path} is a directory", "give a file name")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.temp, fd = _create_unique(path)
        except OSError as exc:
            raise storage_error(path.parent, exc, "create a file in the directory") from None
        os.close(fd)

    def move_into_place(self) -> None:
        try:
            os.replace(self.temp, self.path)
        except OSError as exc:
            raise storage_error(self.path, exc, f"move {self.temp.name} over it") from None

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.temp.unlink(missing_ok=True)


class _TextWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._partial = _Partial(path)
        try:
            self._handle: IO[str] = self._partial.temp.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            self._partial.drop()
            raise storage_error(self._partial.temp, exc, "open for writing") from None

    def _put(self, text: str) -> None:
        try:
            self._handle.write(text)
        except OSError as exc:
            raise storage_error(self._partial.temp, exc, "write") from None

    def commit(self) -> None:
        try:
            self._handle.close()
        except OSError as exc:
            self.abort()
            raise storage_error(self._partial.temp, exc, "write") from None
        try:
            self._partial.move_into_place()
        except StorageError:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._handle.close()
        self._partial.drop()


class _JsonlWriter(_TextWriter):
    def write(self, row: Mapping[str, Any]) -> None:
        self._put(finite_json(row) + "\n")


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
    return finite_json(value)


class _CsvWriter(_TextWriter):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._writer = csv.writer(self._handle)
        self._columns: list[str] | None = None
        self._known: set[str] = set()
        self._rows = 0

    def _row(self, cells: list[str]) -> None:
        try:
            self._writer.writerow(cells)
        except OSError as exc:
            raise storage_error(self._partial.temp, exc, "write") from None

    def write(self, row: Mapping[str, Any]) -> None:
        self._rows += 1
        if self._columns is None:
            self._columns = list(row)
            self._known = set(self._columns)
            self._row(self._columns)
        extra = [k for k in row if k not in self._known]
        if extra:
            raise ConfigError(
                "--output",
                f"{self.path}: row {self._rows} has column {extra[0]!r}, which the CSV header "
                f"({', '.join(self._columns)}) does not have",
                "write JSON Lines (.jsonl) for rows whose columns vary",
            )
        self._row([csv_cell(row.get(name)) for name in self._columns])


class _ParquetWriter:
    def __init__(self, path: Path, types: Mapping[str, str] | None) -> None:
        from chatstep.mapping.datasets import _pyarrow_parquet

        self._pq = _pyarrow_parquet()
        self._pa: Any = importlib.import_module("pyarrow")
        self.path = path
        self._partial = _Partial(path)
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
        try:
            if self._schema is None:
                self._schema = self._first_schema(rows)
                self._writer = self._pq.ParquetWriter(self._partial.temp, self._schema)
            self._writer.write_table(self._table(rows))
        except OSError as exc:  # pyarrow's IO errors are OSErrors
            raise storage_error(self._partial.temp, exc, "write") from None

    def commit(self) -> None:
        try:
            self._flush()
            if self._writer is None:
                # No rows at all: an empty file with no columns is still a valid Parquet file.
                self._schema = self._pa.schema([])
                self._writer = self._pq.ParquetWriter(self._partial.temp, self._schema)
            self._writer.close()
            self._partial.move_into_place()
        except OSError as exc:
            self.abort()
            raise storage_error(self._partial.temp, exc, "write") from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._partial.drop()


def open_writer(
    path: str | Path,
    format: str | None = None,
    *,
    types: Mapping[str, str] | None = None,
) -> RowWriter:
    """A writer for ``path``; its temporary file exists from now on.

    A CSV header is the first row's keys; ``types`` hints Parquet column types (``string``,
    ``float``, ``int``) by name. Raises :class:`StorageError` when the directory is not
    writable, :class:`ConfigError` for an unknown format or a directory.
    """
    from chatstep.mapping.datasets import dataset_format

    target = Path(path)
    kind = dataset_format(target, format, option="--output")
    if kind == "jsonl":
        return _JsonlWriter(target)
    if kind == "csv":
        return _CsvWriter(target)
    return _ParquetWriter(target, types)
